//! How the command line writes its output files, so that no run destroys or half-writes one.
//!
//! One command's outputs go through three steps:
//!
//! 1. **Plan** ([`Outputs::plan`], before any GPU work). Each path is resolved (a symlink is
//!    followed to the file it points to, so the link itself stays a link) and checked: its
//!    folder exists and is a folder, it is not a folder itself, it is not a read-only file,
//!    and no two outputs name the same file (the same device, e.g. `/dev/null` twice, is
//!    fine). A regular file, or a path where nothing is yet, is *replaced*; an existing
//!    device or FIFO is *written through*, never replaced by a file. Each replaced output gets
//!    its temporary file now, so a folder that cannot be written fails before the GPU works.
//!    Temporary files that killed runs left in those folders are removed here.
//! 2. **Stage** ([`Outputs::write`]). Each replaced output is written to its temporary file in
//!    its own folder: on Linux an unnamed one (`O_TMPFILE`), which a kill cannot leave behind;
//!    elsewhere (or where the file system has no unnamed files) `.ml-softmax-<pid>-<n>.part`,
//!    removed on error, on SIGINT / SIGTERM / SIGHUP, and by the next run in that folder.
//!    A large array can instead be staged in pieces as it is computed ([`Outputs::start`],
//!    [`Outputs::append`]: `xent`'s streamed `[rows, cols]` outputs); one that is written
//!    through is then spooled in an unnamed file of the temporary folder until the commit.
//! 3. **Commit**. The outputs written through get their data (a FIFO without a reader is
//!    waited for, and the wait is said on stderr); then each staged file is given its name and
//!    renamed over its destination, with the termination signals held off until the last
//!    rename. An existing file keeps its permission bits.
//!
//! What cannot hold, also in README: a SIGKILL or a power cut between two renames leaves the
//! first outputs new and the others old; a rename that fails after others succeeded (the file
//! system changed under the run) likewise, and the error says which. Data written through a
//! device or FIFO cannot be taken back when a later step fails. There is no fsync.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once};

use crate::npy::{self, NpyData};

/// Names of temporary files: `.ml-softmax-<pid>-<n>.part`, short enough for any file name
/// limit whatever the output is called.
const TEMP_PREFIX: &str = ".ml-softmax-";
const TEMP_SUFFIX: &str = ".part";

/// Named temporary files of this process that exist right now. The signal handler removes
/// them; the commit holds the lock so that a signal cannot split a set of renames.
static NAMED_TEMPS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// One output of a command: where it goes and how it is written.
struct Output {
    /// The flag that named it, for messages: `--grad-out`.
    flag: &'static str,
    /// The path as given.
    given: PathBuf,
    /// The file written: `given` with symlinks followed.
    path: PathBuf,
    how: How,
    /// What it gets, once computed.
    data: Option<Content>,
}

/// What an output file holds.
enum Content {
    /// An array, written as a `.npy` file.
    Npy(Vec<usize>, NpyData),
    /// Bytes as they are (the bench's JSON and SVG).
    Bytes(Vec<u8>),
    /// A `.npy` array written in pieces as they are computed ([`Outputs::start`],
    /// [`Outputs::append`]), so that it never has to be whole in memory.
    Streamed(Streamed),
}

/// A `.npy` array written in pieces: into the output's temporary file, or for an output
/// written through (a device, a FIFO) into an unnamed spool file in the temporary folder,
/// copied through at the commit (so a run that fails sends nothing there either).
struct Streamed {
    /// Elements the header declares, and elements appended so far.
    expected: usize,
    appended: usize,
    /// The spool of an output written through; `None`: the pieces are in the output's own
    /// temporary file.
    spool: Option<Temp>,
}

impl Content {
    fn write_to(&self, writer: &mut impl Write) -> io::Result<()> {
        match self {
            Content::Npy(shape, data) => npy::write_to(writer, shape, data),
            Content::Bytes(bytes) => writer.write_all(bytes),
            Content::Streamed(streamed) => {
                let spool = streamed.spool.as_ref().ok_or_else(|| {
                    io::Error::other("a streamed output has no spool to copy from")
                })?;
                let mut file = &spool.file;
                io::Seek::seek(&mut file, io::SeekFrom::Start(0))?;
                io::copy(&mut file, writer).map(|_| ())
            }
        }
    }
}

enum How {
    /// Written to `temp`, then renamed over `path`.
    Replace { temp: Temp },
    /// An existing device or FIFO: opened and written in place.
    WriteThrough { fifo: bool },
}

/// The outputs of one command; see the module docs.
pub struct Outputs {
    outputs: Vec<Output>,
}

impl Outputs {
    /// Resolves and checks every `(flag, path)` given (`None`: flag not given) and creates the
    /// temporary files. Errors name the flag and the path.
    pub fn plan(requested: &[(&'static str, Option<&Path>)]) -> Result<Self, String> {
        install_signal_handler();
        let mut outputs = Vec::new();
        let mut seen: Vec<(FileKey, &'static str, bool)> = Vec::new();
        for &(flag, given) in requested {
            let Some(given) = given else { continue };
            let fail = |why: String| format!("{flag} {}: {why}", given.display());
            // A device or FIFO is opened by the path given, with the OS following every link:
            // `/dev/stdout` is a link to a link (`/proc/self/fd/1`) whose target may be a
            // pipe, which has no path. Only a file to be replaced needs its links resolved.
            let path = if is_special(given) {
                given.to_path_buf()
            } else {
                resolve_links(given).map_err(fail)?
            };
            let target = classify(&path).map_err(fail)?;
            let through = matches!(target.kind, Kind::Special { .. });
            if let Some((_, other, _)) = seen
                .iter()
                .find(|(key, _, other_through)| *key == target.key && !(through && *other_through))
            {
                return Err(fail(format!(
                    "the same file as {other}: give each output its own file"
                )));
            }
            seen.push((target.key, flag, through));
            let how = match target.kind {
                Kind::Special { fifo } => How::WriteThrough { fifo },
                Kind::Regular { mode } | Kind::New { mode } => {
                    remove_stale_temps(&target.folder);
                    let temp = Temp::create(&target.folder, mode).map_err(|e| {
                        fail(format!(
                            "cannot create a temporary file in {}: {e}",
                            target.folder.display()
                        ))
                    })?;
                    How::Replace { temp }
                }
            };
            outputs.push(Output {
                flag,
                given: given.to_path_buf(),
                path,
                how,
                data: None,
            });
        }
        Ok(Self { outputs })
    }

    /// Sets the array that the output named by `flag` gets (ignored if it was not given).
    pub fn set(&mut self, flag: &str, shape: &[usize], data: NpyData) {
        self.set_content(flag, Content::Npy(shape.to_vec(), data));
    }

    /// Sets the bytes that the output named by `flag` gets (ignored if it was not given).
    pub fn set_bytes(&mut self, flag: &str, bytes: Vec<u8>) {
        self.set_content(flag, Content::Bytes(bytes));
    }

    /// Starts the output named by `flag` (ignored if it was not given) as a `.npy` array of
    /// `shape` with the dtype of `like`, whose elements then come in order through
    /// [`Outputs::append`]; [`Outputs::write`] refuses to commit it unless all came.
    pub fn start(&mut self, flag: &str, shape: &[usize], like: &NpyData) -> Result<(), String> {
        let Some(output) = self.outputs.iter_mut().find(|o| o.flag == flag) else {
            return Ok(());
        };
        let name = format!("{flag} {}", output.given.display());
        let header = npy::header_for(shape, like).map_err(|e| format!("{name}: {e}"))?;
        let spool = match &mut output.how {
            How::Replace { temp } => {
                temp.file
                    .write_all(&header)
                    .map_err(|e| format!("{name}: cannot write: {e}"))?;
                None
            }
            How::WriteThrough { .. } => {
                let folder = std::env::temp_dir();
                let mut spool = Temp::create(&folder, 0o600).map_err(|e| {
                    format!(
                        "{name}: cannot create a spool file in {}: {e}",
                        folder.display()
                    )
                })?;
                spool
                    .file
                    .write_all(&header)
                    .map_err(|e| format!("{name}: cannot write the spool file: {e}"))?;
                Some(spool)
            }
        };
        output.data = Some(Content::Streamed(Streamed {
            expected: shape.iter().product(),
            appended: 0,
            spool,
        }));
        Ok(())
    }

    /// Appends the next elements of the output named by `flag`, started with
    /// [`Outputs::start`] (ignored if it was not given).
    pub fn append(&mut self, flag: &str, data: &NpyData) -> Result<(), String> {
        let Some(output) = self.outputs.iter_mut().find(|o| o.flag == flag) else {
            return Ok(());
        };
        let name = format!("{flag} {}", output.given.display());
        let Some(Content::Streamed(streamed)) = &mut output.data else {
            return Err(format!("{name}: appended to before it was started"));
        };
        if streamed.appended + data.len() > streamed.expected {
            return Err(format!(
                "{name}: {} elements appended, but the array holds {}",
                streamed.appended + data.len(),
                streamed.expected
            ));
        }
        let file = match (&mut streamed.spool, &mut output.how) {
            (Some(spool), _) => &mut spool.file,
            (None, How::Replace { temp }) => &mut temp.file,
            (None, How::WriteThrough { .. }) => {
                return Err(format!("{name}: a streamed output has no file to write to"));
            }
        };
        npy::write_elements(&mut BufWriter::new(file), data)
            .map_err(|e| format!("{name}: cannot write: {e}"))?;
        streamed.appended += data.len();
        Ok(())
    }

    fn set_content(&mut self, flag: &str, content: Content) {
        if let Some(output) = self.outputs.iter_mut().find(|o| o.flag == flag) {
            output.data = Some(content);
        }
    }

    /// The paths written, as given, for the summary: `(flag, path)`.
    pub fn written(&self) -> Vec<(&'static str, &Path)> {
        self.outputs
            .iter()
            .filter(|o| o.data.is_some())
            .map(|o| (o.flag, o.given.as_path()))
            .collect()
    }

    /// Stages, writes through and commits every output that has its data (see the module
    /// docs). On error no replaced output has changed, except as the module docs say.
    pub fn write(self) -> Result<(), String> {
        let mut staged = Vec::new();
        let mut through = Vec::new();
        for output in self.outputs {
            let Output {
                flag,
                given,
                path,
                how,
                data,
            } = output;
            let Some(content) = data else {
                continue;
            };
            let name = format!("{flag} {}", given.display());
            if let Content::Streamed(streamed) = &content {
                if streamed.appended != streamed.expected {
                    return Err(format!(
                        "{name}: only {} of its {} elements were computed",
                        streamed.appended, streamed.expected
                    ));
                }
            }
            match how {
                How::Replace { mut temp } => {
                    // A streamed output is in its temporary file already.
                    if !matches!(content, Content::Streamed(_)) {
                        temp.fill(&content)
                            .map_err(|e| format!("{name}: cannot write: {e}"))?;
                    }
                    staged.push((temp, path, flag, name));
                }
                How::WriteThrough { fifo } => through.push((path, fifo, content, name)),
            }
        }
        // Devices and FIFOs first: their data cannot be taken back, the renames can wait.
        for (path, fifo, content, name) in through {
            write_through(&path, fifo, &content)
                .map_err(|e| format!("{name}: cannot write: {e}"))?;
        }
        // Hold off the signal handler until every rename is done.
        let mut temps = NAMED_TEMPS.lock().unwrap_or_else(|e| e.into_inner());
        let mut named = Vec::new();
        for (temp, path, flag, name) in staged {
            match temp.name_it(&mut temps) {
                Ok(temp_name) => named.push((temp_name, path, flag, name)),
                Err(e) => {
                    for (temp_name, ..) in &named {
                        let _ = fs::remove_file(temp_name);
                    }
                    return Err(format!("{name}: cannot name the temporary file: {e}"));
                }
            }
        }
        let mut done: Vec<&'static str> = Vec::new();
        let mut result = Ok(());
        for (temp_name, path, flag, name) in &named {
            if result.is_ok() {
                match fs::rename(temp_name, path) {
                    Ok(()) => {
                        done.push(flag);
                        continue;
                    }
                    Err(e) => {
                        let kept = if done.is_empty() {
                            "no output was changed".to_string()
                        } else {
                            format!("already replaced: {}", done.join(", "))
                        };
                        result = Err(format!(
                            "{name}: cannot move the new file into place: {e} ({kept})"
                        ));
                    }
                }
            }
            let _ = fs::remove_file(temp_name);
        }
        temps.retain(|t| !named.iter().any(|(temp_name, ..)| temp_name == t));
        result
    }
}

/// Writes one output through an existing device or FIFO.
fn write_through(path: &Path, fifo: bool, content: &Content) -> io::Result<()> {
    let mut writer = BufWriter::new(open_through(path, fifo)?);
    content.write_to(&mut writer)?;
    writer.flush()
}

/// Follows symlinks from `given` to the path that is (or will be) a file. A relative link
/// target is taken from the link's folder, as the OS does.
fn resolve_links(given: &Path) -> Result<PathBuf, String> {
    if given.as_os_str().as_encoded_bytes().ends_with(b"/") {
        return Err("the path ends with '/': give a file name".into());
    }
    let mut path = given.to_path_buf();
    for _ in 0..40 {
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target =
                    fs::read_link(&path).map_err(|e| format!("cannot read the link: {e}"))?;
                path = path.parent().unwrap_or(Path::new("")).join(target);
            }
            _ => return Ok(path),
        }
    }
    Err("too many levels of symbolic links".into())
}

/// Whether `path` (links followed by the OS) is an existing device, FIFO or socket.
fn is_special(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir())
}

/// What a resolved output path is.
struct Target {
    kind: Kind,
    /// The folder a replaced file is staged in.
    folder: PathBuf,
    /// What makes two outputs the same file.
    key: FileKey,
}

enum Kind {
    /// An existing regular file, with its permission bits.
    Regular { mode: u32 },
    /// Nothing there yet.
    New { mode: u32 },
    /// A character or block device, FIFO or socket.
    Special { fifo: bool },
}

/// An existing file's device and inode, or a new file's folder and name.
#[derive(PartialEq, Eq)]
enum FileKey {
    Existing(u64, u64),
    New(u64, u64, OsString),
}

fn classify(path: &Path) -> Result<Target, String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    let name = path
        .file_name()
        .ok_or_else(|| "names a folder, not a file".to_string())?;
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let folder_meta = fs::metadata(&folder).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => format!("the folder {} does not exist", folder.display()),
        io::ErrorKind::NotADirectory => {
            format!("a part of {} is a file, not a folder", folder.display())
        }
        _ => format!("cannot use the folder {}: {e}", folder.display()),
    })?;
    if !folder_meta.is_dir() {
        return Err(format!("{} is a file, not a folder", folder.display()));
    }
    match fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Err("is a folder: give a file name".into()),
        Ok(meta) => {
            let key = FileKey::Existing(meta.dev(), meta.ino());
            if meta.is_file() {
                if !writable(path) {
                    return Err("the file is read-only: it was not replaced".into());
                }
                let mode = meta.permissions().mode() & 0o7777;
                return Ok(Target {
                    kind: Kind::Regular { mode },
                    folder,
                    key,
                });
            }
            if !writable(path) {
                return Err("permission denied".into());
            }
            let fifo = meta.file_type().is_fifo();
            Ok(Target {
                kind: Kind::Special { fifo },
                folder,
                key,
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Target {
            kind: Kind::New { mode: 0o666 },
            key: FileKey::New(folder_meta.dev(), folder_meta.ino(), name.to_os_string()),
            folder,
        }),
        Err(e) => Err(format!("cannot use it: {e}")),
    }
}

/// Whether this process may write `path` (the OS's own check; root may write anything).
fn writable(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c_path` is a valid NUL-terminated string that outlives the call.
    unsafe { libc::access(c_path.as_ptr(), libc::W_OK) == 0 }
}

/// Opens a device or FIFO for writing. A FIFO without a reader would block in `open`: that
/// wait is said on stderr first.
fn open_through(path: &Path, fifo: bool) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    if fifo {
        // Opened without blocking first: with a reader there, that descriptor is the one
        // kept (closing it would end the reader's input).
        let probe = fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path);
        match probe {
            Ok(file) => return blocking(file),
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                eprintln!(
                    "waiting for a reader on the FIFO {} (Ctrl-C to stop)",
                    path.display()
                );
            }
            Err(e) => return Err(e),
        }
    }
    fs::OpenOptions::new().write(true).open(path)
}

/// Clears `O_NONBLOCK`, so that writes wait for a slow reader instead of failing.
fn blocking(file: File) -> io::Result<File> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor `file` owns, with flags read from it.
    let status = unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 {
            -1
        } else {
            libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK)
        }
    };
    if status < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(file)
    }
}

/// A temporary file in an output's folder.
struct Temp {
    file: File,
    folder: PathBuf,
    /// `Some` for a named temporary file, `None` for an unnamed (`O_TMPFILE`) one.
    name: Option<PathBuf>,
}

impl Temp {
    /// An unnamed file in `folder` where the OS offers one, else a new named one.
    fn create(folder: &Path, mode: u32) -> io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        // The tests set ML_SOFTMAX_NAMED_TEMPS to exercise the named files' clean-up here too.
        #[cfg(target_os = "linux")]
        if std::env::var_os("ML_SOFTMAX_NAMED_TEMPS").is_none() {
            // Readable too: a streamed output's spool is copied back out of it.
            let unnamed = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_TMPFILE)
                .mode(0o600)
                .open(folder);
            match unnamed {
                Ok(file) => {
                    set_mode(&file, mode)?;
                    return Ok(Self {
                        file,
                        folder: folder.to_path_buf(),
                        name: None,
                    });
                }
                // File systems (and kernels) without unnamed files say so in these ways.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL | libc::ENOENT)
                    ) => {}
                Err(e) => return Err(e),
            }
        }
        let mut temps = NAMED_TEMPS.lock().unwrap_or_else(|e| e.into_inner());
        let name = temp_name(folder);
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&name)?;
        temps.push(name.clone());
        drop(temps);
        set_mode(&file, mode)?;
        Ok(Self {
            file,
            folder: folder.to_path_buf(),
            name: Some(name),
        })
    }

    fn fill(&mut self, content: &Content) -> io::Result<()> {
        let mut writer = BufWriter::new(&mut self.file);
        content.write_to(&mut writer)?;
        writer.flush()
    }

    /// Gives the file a name in its folder (an unnamed file is linked in) and returns it,
    /// registered in `temps` ([`NAMED_TEMPS`], whose lock the caller holds).
    fn name_it(mut self, temps: &mut Vec<PathBuf>) -> io::Result<PathBuf> {
        if let Some(name) = self.name.take() {
            return Ok(name);
        }
        let name = temp_name(&self.folder);
        link_unnamed(&self.file, &name)?;
        temps.push(name.clone());
        Ok(name)
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        if let Some(name) = &self.name {
            let _ = fs::remove_file(name);
        }
    }
}

fn set_mode(file: &File, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    // New files get 0o666 less the umask, as `open` would have given them.
    let mode = if mode == 0o666 { mode & !umask() } else { mode };
    file.set_permissions(fs::Permissions::from_mode(mode))
}

#[allow(clippy::useless_conversion)] // mode_t is u32 on Linux, u16 on macOS
fn umask() -> u32 {
    // SAFETY: umask only swaps the process's file mode mask; it is set back at once.
    unsafe {
        let mask = libc::umask(0o022);
        libc::umask(mask);
        u32::from(mask)
    }
}

/// Links an unnamed (`O_TMPFILE`) file into its folder under `name`.
#[cfg(target_os = "linux")]
fn link_unnamed(file: &File, name: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    let proc_path = std::ffi::CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
    let c_name = std::ffi::CString::new(name.as_os_str().as_bytes())?;
    // SAFETY: both strings are valid and NUL-terminated for the duration of the call.
    let status = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            proc_path.as_ptr(),
            libc::AT_FDCWD,
            c_name.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if status == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn link_unnamed(_file: &File, _name: &Path) -> io::Result<()> {
    Err(io::Error::other("unnamed files exist only on Linux"))
}

/// `.ml-softmax-<pid>-<n>.part` in `folder`.
fn temp_name(folder: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    folder.join(format!(
        "{TEMP_PREFIX}{}-{}{TEMP_SUFFIX}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Removes this tool's temporary files in `folder` whose process is gone (killed runs).
fn remove_stale_temps(folder: &Path) {
    let Ok(entries) = fs::read_dir(folder) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(TEMP_PREFIX))
            .and_then(|n| n.strip_suffix(TEMP_SUFFIX))
            .and_then(|n| n.split_once('-'))
            .and_then(|(pid, n)| n.parse::<u64>().ok().and(pid.parse::<i32>().ok()))
        else {
            continue;
        };
        if pid > 0 && !process_exists(pid) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

fn process_exists(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists; nothing is sent.
    let status = unsafe { libc::kill(pid, 0) };
    status == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// On SIGINT, SIGTERM or SIGHUP: remove this process's named temporary files (after a
/// commit in progress, which holds the lock) and exit with status 130. `main` installs it
/// first thing; [`Outputs::plan`] makes sure of it.
pub fn install_signal_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            let temps = NAMED_TEMPS.lock().unwrap_or_else(|e| e.into_inner());
            for name in temps.iter() {
                let _ = fs::remove_file(name);
            }
            eprintln!("interrupted");
            // _exit, not process::exit: exit() runs the C library's atexit handlers, and the
            // GPU driver's (Mesa's) tear down state that its worker threads and our main
            // thread may still be using mid-dispatch: a run interrupted on lavapipe then died
            // of SIGSEGV instead of exiting with 130. Nothing of ours needs those handlers:
            // the temporary files are removed above and stderr is unbuffered.
            // SAFETY: _exit only ends the process.
            unsafe { libc::_exit(130) }
        });
    });
}
