//! `ml-softmax`: the command line. `ml-softmax --help` lists the subcommands.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use ml_softmax::stream::{CrossEntropyStream, Denominator};
use ml_softmax::{
    BackendChoice, Context, ContextOptions, CrossEntropyOptions, Precision, Reduction, SoftmaxKind,
    Strategy, Targets, reference,
};

mod cli_bench;
mod cli_linear;
mod cli_outputs;
mod cli_shader;
// The .npy reader and writer: the command line's only (README's dependency list says why it is
// not a crate); the tests include the same file. Some items serve only the tests.
#[allow(dead_code)]
mod npy;
use cli_bench as bench;
use cli_outputs::Outputs;
use npy::NpyData;

#[derive(Parser)]
#[command(
    name = "ml-softmax",
    version,
    about = "Softmax, cross-entropy loss and gradient on any GPU through wgpu"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The worked example, then a large random batch on the GPU checked against the CPU.
    Demo {
        #[command(flatten)]
        gpu: GpuArgs,
        /// Rows of the random batch.
        #[arg(long, default_value_t = 4096)]
        rows: usize,
        /// Columns (classes) of the random batch.
        #[arg(long, default_value_t = 32000)]
        cols: usize,
    },
    /// Lists the adapters wgpu sees, with their key limits and features.
    Adapters {
        /// Only this backend.
        #[arg(long, default_value = "auto")]
        backend: String,
    },
    /// Cross-entropy loss and gradient of .npy logits and labels (PyTorch's semantics).
    Xent(XentArgs),
    /// Softmax (or log-softmax) of each row of a .npy array.
    Softmax {
        #[command(flatten)]
        gpu: GpuArgs,
        /// Logits [rows, cols]: float32, float16, or float64 (computed in float32).
        #[arg(long)]
        logits: PathBuf,
        /// Output .npy [rows, cols]: float16 for float16 logits, else float32.
        #[arg(long)]
        out: PathBuf,
        /// Write log-softmax instead.
        #[arg(long)]
        log: bool,
        /// No progress spinner on stderr.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Fused linear + cross-entropy: loss and gradients of hidden states and a classifier,
    /// without the [rows, vocab] logits.
    LinearXent(cli_linear::LinearArgs),
    /// Times linear-xent against a plain matrix product on one adapter, in TFLOP/s.
    BenchLinear(cli_linear::BenchLinearArgs),
    /// Times every strategy and a copy kernel over a matrix of shapes.
    Bench(bench::BenchArgs),
    /// Prints the generated WGSL of one row_softmax variant (one flag per axis; --list).
    Shader(cli_shader::ShaderArgs),
}

/// Adapter selection shared by the subcommands that run on the GPU.
#[derive(Args, Clone)]
pub struct GpuArgs {
    /// vulkan, metal, dx12, gl or auto (auto honours WGPU_BACKEND).
    #[arg(long, default_value = "auto")]
    backend: String,
    /// A substring of the adapter name (default: WGPU_ADAPTER_NAME, else the best adapter).
    #[arg(long)]
    adapter: Option<String>,
}

impl GpuArgs {
    /// Builds the context these flags ask for.
    pub fn context(&self) -> Result<Context, String> {
        self.context_with(None)
    }

    /// [`GpuArgs::context`] with `ContextOptions::software_io` set.
    pub fn context_with(&self, software_io: Option<bool>) -> Result<Context, String> {
        let backend: BackendChoice = self
            .backend
            .parse()
            .map_err(|e| format!("--backend: {e}"))?;
        let autotune = match std::env::var("ML_SOFTMAX_AUTOTUNE") {
            Ok(text) => text
                .parse()
                .map_err(|e| format!("ML_SOFTMAX_AUTOTUNE: {e}"))?,
            Err(_) => Default::default(),
        };
        // Strategy::SplitCache's cache budget in bytes (ContextOptions::split_cache_bytes).
        let split_cache_bytes = match std::env::var("ML_SOFTMAX_SPLIT_CACHE_BYTES") {
            Ok(text) => Some(text.parse::<u64>().map_err(|e| {
                format!("ML_SOFTMAX_SPLIT_CACHE_BYTES: {e} (expected bytes, e.g. 16777216)")
            })?),
            Err(_) => None,
        };
        let ctx = Context::with_options(&ContextOptions {
            backend,
            adapter_name: self.adapter.clone(),
            software_io,
            autotune,
            split_cache_bytes,
            ..Default::default()
        })
        .map_err(|e| e.to_string())?;
        Ok(ctx)
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum ReductionArg {
    Mean,
    Sum,
    None,
}

/// The loss options of `xent` and `linear-xent`: one place to add or change an option's flag.
#[derive(Args)]
struct LossArgs {
    /// How row losses are combined.
    #[arg(long, value_enum, default_value = "mean")]
    reduction: ReductionArg,
    /// Rows with this label are ignored.
    #[arg(long, default_value_t = -100, allow_hyphen_values = true)]
    ignore_index: i64,
    /// Label smoothing in [0, 1].
    #[arg(long, default_value_t = 0.0)]
    label_smoothing: f32,
    /// Class weights [classes] (float32, float64 or float16).
    #[arg(long)]
    weight: Option<PathBuf>,
    /// z-loss scale: adds S * lse^2 per row.
    #[arg(long, default_value_t = 0.0)]
    z_loss: f32,
    /// Logit soft-capping C (0 = off): uses C * tanh(z / C).
    #[arg(long, default_value_t = 0.0)]
    softcap: f32,
}

impl LossArgs {
    /// The library's options; the weight file must hold `classes` values.
    fn options(&self, classes: usize) -> Result<CrossEntropyOptions, String> {
        let weight = match &self.weight {
            Some(p) => Some(read_vector(p, classes, "weight")?),
            None => None,
        };
        Ok(CrossEntropyOptions {
            reduction: match self.reduction {
                ReductionArg::Mean => Reduction::Mean,
                ReductionArg::Sum => Reduction::Sum,
                ReductionArg::None => Reduction::None,
            },
            ignore_index: self.ignore_index,
            label_smoothing: self.label_smoothing,
            weight,
            z_loss: self.z_loss,
            softcap: self.softcap,
        })
    }
}

#[derive(Args)]
#[command(allow_negative_numbers = true)]
struct XentArgs {
    #[command(flatten)]
    gpu: GpuArgs,
    /// Logits [rows, cols]: float32, float16 (gradient written as float16), or float64
    /// (numpy's default: computed in float32, gradient written as float32).
    #[arg(long)]
    logits: PathBuf,
    /// int64 or int32 class indices [rows] (or give --targets).
    #[arg(long, required_unless_present = "targets", conflicts_with = "targets")]
    labels: Option<PathBuf>,
    /// Probability targets [rows, cols] (float32, float64 or float16), in place of --labels.
    #[arg(long)]
    targets: Option<PathBuf>,
    /// Output (optional): the loss, float32 (0-d for mean/sum, [rows] for none).
    #[arg(long)]
    loss_out: Option<PathBuf>,
    /// Output (optional): the gradient [rows, cols] in the logits' dtype (float32 for float64
    /// logits; for none: of the summed row losses).
    #[arg(long)]
    grad_out: Option<PathBuf>,
    /// Output (optional): per-row log-sum-exp [rows].
    #[arg(long)]
    lse_out: Option<PathBuf>,
    /// Output (optional): per-row loss [rows], beside a reduced loss.
    #[arg(long)]
    row_loss_out: Option<PathBuf>,
    /// Output (optional): softmax probabilities [rows, cols] (of the soft-capped logits).
    #[arg(long)]
    probs_out: Option<PathBuf>,
    /// Output (optional): log-softmax [rows, cols] (of the soft-capped logits).
    #[arg(long)]
    log_probs_out: Option<PathBuf>,
    #[command(flatten)]
    loss: LossArgs,
    /// Reduction strategy: auto, subgroup, wgN (N lanes per row, 1..1024), cachedN or splitN (N = 32..1024).
    #[arg(long, default_value = "auto")]
    strategy: String,
    /// Rows read, computed and written at a time (default: 32 MiB of float32 logits); the
    /// memory a run needs grows with this, not with the input.
    #[arg(long)]
    chunk_rows: Option<usize>,
    /// Print the summary as one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// No progress spinner on stderr.
    #[arg(long, short)]
    quiet: bool,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    // SIGINT / SIGTERM / SIGHUP: exit 130 at any point, removing temporary files.
    cli_outputs::install_signal_handler();
    let result = match cli.command {
        Command::Demo { gpu, rows, cols } => demo(&gpu, rows, cols),
        Command::Adapters { backend } => adapters(&backend),
        Command::Xent(args) => xent(&args),
        Command::Softmax {
            gpu,
            logits,
            out,
            log,
            quiet,
        } => softmax(&gpu, &logits, &out, log, quiet),
        Command::LinearXent(args) => cli_linear::run(&args),
        Command::BenchLinear(args) => cli_linear::bench(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Shader(args) => cli_shader::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// A command-line mistake in one line that says what to do; help and version as clap prints
/// them.
fn usage_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    // clap lists the accepted values of an enumerated flag on a line of its own.
    let values = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("[possible values:"))
        .map(|l| format!(" {l}"))
        .unwrap_or_default();
    // Point at the subcommand's help where one was named.
    let subcommand = std::env::args()
        .nth(1)
        .filter(|a| Cli::command().find_subcommand(a).is_some())
        .map(|a| format!(" {a}"))
        .unwrap_or_default();
    eprintln!("error: {first}{values}; see 'ml-softmax{subcommand} --help'");
    ExitCode::from(2)
}

fn demo(gpu: &GpuArgs, rows: usize, cols: usize) -> Result<(), String> {
    let ctx = gpu.context()?;
    println!("adapter: {}", ctx.describe());
    let err = |e: ml_softmax::Error| e.to_string();

    println!("\n1. The worked example: z = [1, 2, 3], true class index 1");
    let z = [1.0f32, 2.0, 3.0];
    let p = ctx.softmax(&z, 1, 3).map_err(err)?;
    let out = ctx
        .cross_entropy(&z, &[1], 1, 3, &CrossEntropyOptions::default())
        .map_err(err)?;
    println!(
        "   p     = [{:.3}, {:.3}, {:.3}]   (expected [0.090, 0.245, 0.665])",
        p[0], p[1], p[2]
    );
    println!(
        "   L     = {:.4}                  (expected 1.4076)",
        out.loss
    );
    let g = &out.grad;
    println!(
        "   dL/dz = [{:.3}, {:.3}, {:.3}]  (expected [0.090, -0.755, 0.665])",
        g[0], g[1], g[2]
    );

    println!("\n2. A random batch of {rows} x {cols} logits, mean cross-entropy");
    rows.checked_mul(cols)
        .ok_or_else(|| format!("{rows} x {cols} is too large"))?;
    let seed = 0x2545_F491_4F6C_DD1Du64 ^ (rows as u64) << 20 ^ cols as u64;
    let (logits, labels) = ml_softmax::reference::sample_batch(rows, cols, seed);
    let options = CrossEntropyOptions::default();
    let t = Instant::now();
    ctx.cross_entropy(&logits, &labels, rows, cols, &options)
        .map_err(err)?;
    let first = t.elapsed();
    let t = Instant::now();
    let gpu_out = ctx
        .cross_entropy(&logits, &labels, rows, cols, &options)
        .map_err(err)?;
    let warm = t.elapsed();
    let t = Instant::now();
    let cpu = reference::cross_entropy(&logits, &labels, rows, cols, &options).map_err(err)?;
    let cpu_time = t.elapsed();
    let max_grad_err = gpu_out
        .grad
        .iter()
        .zip(&cpu.grad)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    let loss_err = (gpu_out.loss - cpu.loss).abs() / cpu.loss.abs().max(1e-30);
    println!(
        "   GPU loss {:.6}, CPU f64 reference loss {:.6}",
        gpu_out.loss, cpu.loss
    );
    println!("   relative loss error {loss_err:.2e}, max |grad error| {max_grad_err:.2e}");
    println!(
        "   GPU time: {:.1} ms (first call, with shader compilation: {:.1} ms), \
         including upload and readback",
        warm.as_secs_f64() * 1e3,
        first.as_secs_f64() * 1e3
    );
    println!(
        "   CPU f64 reference time: {:.1} ms",
        cpu_time.as_secs_f64() * 1e3
    );
    let grad_tol = 1e-6 / rows as f32;
    if loss_err > 1e-4 || max_grad_err > grad_tol {
        return Err(format!(
            "the GPU result does not match the reference (loss {loss_err:.2e}, grad \
             {max_grad_err:.2e} > {grad_tol:.2e})"
        ));
    }
    println!("   matches the reference: yes");
    Ok(())
}

fn adapters(backend: &str) -> Result<(), String> {
    let backend: BackendChoice = backend.parse().map_err(|e| format!("--backend: {e}"))?;
    backend.check_env().map_err(|e| e.to_string())?;
    let list = ml_softmax::list_adapters(backend);
    // The adapter a command with these settings would use: the first that opens a device.
    let default = Context::with_options(&ContextOptions {
        backend,
        ..Default::default()
    });
    if list.is_empty() {
        return Err(
            "no adapter found; on Linux without a GPU: apt-get install -y mesa-vulkan-drivers \
             libvulkan1"
                .into(),
        );
    }
    for (i, adapter) in list.iter().enumerate() {
        let info = adapter.get_info();
        let limits = adapter.limits();
        let features = adapter.features();
        let mark = match &default {
            Ok(ctx) if same_adapter(ctx.adapter_info(), &info) => "   <- default",
            _ => "",
        };
        println!("[{i}] {}{mark}", info.name);
        println!(
            "    backend {:?}, type {:?}, driver {} {}",
            info.backend, info.device_type, info.driver, info.driver_info
        );
        println!(
            "    max_storage_buffer_binding_size {}, max_buffer_size {}, \
             max_compute_invocations_per_workgroup {}, max_compute_workgroups_per_dimension {}, \
             max_compute_workgroup_storage_size {}",
            limits.max_storage_buffer_binding_size,
            limits.max_buffer_size,
            limits.max_compute_invocations_per_workgroup,
            limits.max_compute_workgroups_per_dimension,
            limits.max_compute_workgroup_storage_size
        );
        let has = |f| if features.contains(f) { "yes" } else { "no" };
        println!(
            "    SUBGROUP {} (sizes {}..{}), SHADER_F16 {}, TIMESTAMP_QUERY {}",
            has(ml_softmax::wgpu::Features::SUBGROUP),
            info.subgroup_min_size,
            info.subgroup_max_size,
            has(ml_softmax::wgpu::Features::SHADER_F16),
            has(ml_softmax::wgpu::Features::TIMESTAMP_QUERY)
        );
    }
    match default {
        Ok(ctx) => println!(
            "default (what --backend {backend} picks; WGPU_ADAPTER_NAME honoured): {}",
            ctx.adapter_info().name
        ),
        Err(e) => println!("default: none ({e})"),
    }
    Ok(())
}

fn same_adapter(a: &ml_softmax::wgpu::AdapterInfo, b: &ml_softmax::wgpu::AdapterInfo) -> bool {
    (
        &a.name,
        a.backend,
        a.device_type,
        a.device,
        a.vendor,
        &a.driver,
    ) == (
        &b.name,
        b.backend,
        b.device_type,
        b.device,
        b.vendor,
        &b.driver,
    )
}

/// Reads a .npy file; every error names the file (I/O errors already do).
fn read_npy(path: &Path) -> Result<npy::NpyArray, String> {
    npy::read_file(open_input(path)?, path).map_err(|e| input_error(path, e))
}

/// Opens an input file. Opening a FIFO waits for a writer: if that takes more than a moment,
/// it is said on stderr.
fn open_input(path: &Path) -> Result<std::fs::File, String> {
    let opened = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watch = std::sync::Arc::clone(&opened);
    let waiting = if is_fifo(path) {
        format!("waiting for a writer on the FIFO {}", path.display())
    } else {
        format!("waiting to open {}", path.display())
    };
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        if !watch.load(std::sync::atomic::Ordering::SeqCst) {
            eprintln!("{waiting} (Ctrl-C to stop)");
        }
    });
    let file = std::fs::File::open(path);
    opened.store(true, std::sync::atomic::Ordering::SeqCst);
    file.map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// A .npy error as the CLI says it: naming the file (I/O errors already do).
fn input_error(path: &Path, e: npy::NpyError) -> String {
    match e {
        npy::NpyError::Io { .. } => e.to_string(),
        _ => format!("{}: {e}", path.display()),
    }
}

/// Opens a .npy file to be read a chunk of rows at a time ([`npy::RowReader`]).
fn open_rows(path: &Path) -> Result<npy::RowReader, String> {
    npy::RowReader::open(open_input(path)?, path).map_err(|e| input_error(path, e))
}

#[cfg(unix)]
fn is_fifo(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_fifo())
}

#[cfg(not(unix))]
fn is_fifo(_path: &Path) -> bool {
    false
}

/// The two dimensions of a `[rows, cols]` array.
fn matrix_shape(path: &Path, what: &str, shape: &[usize]) -> Result<(usize, usize), String> {
    match shape {
        [rows, cols] => Ok((*rows, *cols)),
        _ => Err(format!(
            "{}: {what} must be 2-D [rows, cols], got shape {shape:?}",
            path.display()
        )),
    }
}

/// Float data as f32: float64 is rounded, float16 widened (exactly).
fn floats(path: &Path, what: &str, data: NpyData) -> Result<Vec<f32>, String> {
    match data {
        NpyData::F32(v) => Ok(v),
        NpyData::F64(v) => Ok(v.into_iter().map(|x| x as f32).collect()),
        NpyData::F16(v) => Ok(v
            .into_iter()
            .map(|bits| half::f16::from_bits(bits).to_f32())
            .collect()),
        other => Err(format!(
            "{}: {what} must be float32, float64 or float16, got {}",
            path.display(),
            other.dtype()
        )),
    }
}

/// A float `[rows, cols]` array from a .npy file, opened to be read by chunks of rows.
fn open_matrix(path: &Path, what: &str) -> Result<(npy::RowReader, usize, usize), String> {
    let reader = open_rows(path)?;
    let (rows, cols) = matrix_shape(path, what, reader.shape())?;
    check_float(path, what, reader.dtype())?;
    Ok((reader, rows, cols))
}

/// The error of [`floats`] for a dtype that is not a float, before any data is read.
fn check_float(path: &Path, what: &str, dtype: &str) -> Result<(), String> {
    if matches!(dtype, "float32" | "float64" | "float16") {
        Ok(())
    } else {
        Err(format!(
            "{}: {what} must be float32, float64 or float16, got {dtype}",
            path.display()
        ))
    }
}

/// Logits as the GPU takes them: float32 (also float64 input, rounded), or float16 bits
/// (kept as they are: the GPU reads them and writes a float16 gradient).
enum Logits {
    F32(Vec<f32>),
    F16(Vec<u16>),
}

/// Logits, their shape and the dtype the file held.
fn read_logits(path: &Path) -> Result<(Logits, usize, usize, &'static str), String> {
    let array = read_npy(path)?;
    let (rows, cols) = matrix_shape(path, "logits", &array.shape)?;
    check_nonempty(path, rows, cols)?;
    let dtype = array.data.dtype();
    let logits = match array.data {
        NpyData::F16(v) => Logits::F16(v),
        other => Logits::F32(floats(path, "logits", other)?),
    };
    Ok((logits, rows, cols, dtype))
}

/// Logits opened to be read by chunks of rows, their shape and dtype (checked here).
fn open_logits(path: &Path) -> Result<(npy::RowReader, usize, usize, &'static str), String> {
    let reader = open_rows(path)?;
    let (rows, cols) = matrix_shape(path, "logits", reader.shape())?;
    check_nonempty(path, rows, cols)?;
    let dtype = reader.dtype();
    check_float(path, "logits", dtype)?;
    Ok((reader, rows, cols, dtype))
}

/// Logits need at least one row and one class.
fn check_nonempty(path: &Path, rows: usize, cols: usize) -> Result<(), String> {
    if rows == 0 || cols == 0 {
        return Err(format!(
            "{}: logits have shape [{rows}, {cols}]: there must be at least one row and one \
             class (column)",
            path.display()
        ));
    }
    Ok(())
}

/// An option error as the user typed it: the library names its option, here the flag.
fn flag_error(e: ml_softmax::Error) -> String {
    match e {
        ml_softmax::Error::InvalidOption {
            name,
            value,
            reason,
        } => format!("--{} {value}: {reason}", name.replace('_', "-")),
        e => e.to_string(),
    }
}

/// A .npy file that must be 1-D of `len` elements (`what` and `why` for the error).
fn read_1d(path: &Path, len: usize, what: &str, why: &str) -> Result<NpyData, String> {
    let array = read_npy(path)?;
    if array.shape != [len] {
        return Err(format!(
            "{}: {what} must be 1-D [{len}]{why}, got shape {:?}",
            path.display(),
            array.shape
        ));
    }
    Ok(array.data)
}

fn read_labels(path: &Path, rows: usize) -> Result<Vec<i64>, String> {
    match read_1d(path, rows, "labels", " to match the logits")? {
        NpyData::I64(v) => Ok(v),
        NpyData::I32(v) => Ok(v.into_iter().map(i64::from).collect()),
        other => Err(format!(
            "{}: labels must be int64 or int32, got {}",
            path.display(),
            other.dtype()
        )),
    }
}

fn read_vector(path: &Path, len: usize, what: &str) -> Result<Vec<f32>, String> {
    floats(path, what, read_1d(path, len, what, "")?)
}

/// A spinner on stderr naming the step a long run is in. It shows only when stderr is a
/// terminal, `--quiet` is off and the run has taken more than about a second
/// (`ML_SOFTMAX_PROGRESS_AFTER_MS` changes that delay; the tests set it to 0).
struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    fn new(quiet: bool) -> Self {
        if quiet || !std::io::stderr().is_terminal() {
            return Self { bar: None };
        }
        let delay = std::env::var("ML_SOFTMAX_PROGRESS_AFTER_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000);
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
        let style = ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(100));
        let shown = bar.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(delay));
            if !shown.is_finished() {
                shown.set_draw_target(ProgressDrawTarget::stderr());
            }
        });
        Self { bar: Some(bar) }
    }

    fn step(&self, message: &'static str) {
        if let Some(bar) = &self.bar {
            bar.set_message(message);
        }
    }

    /// The GPU step of a run streamed by chunks: how far it is.
    fn rows(&self, done: usize, total: usize) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!("computing on the GPU: {done} of {total} rows done"));
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Logits per chunk of a streamed `xent` run, in bytes of float32, when `--chunk-rows` is
/// not given: large enough that the GPU calls dominate, small enough that a run stays far
/// below BENCHMARKS.md's memory bound.
const DEFAULT_CHUNK_BYTES: usize = 32 << 20;

fn xent(args: &XentArgs) -> Result<(), String> {
    let started = Instant::now();
    let progress = Progress::new(args.quiet);
    progress.step("reading the inputs");
    // 1. Headers and the small inputs (labels, weights): the logits and probability targets
    // are only opened here, and read chunk by chunk in step 3.
    let (mut logits, rows, cols, logits_dtype) = open_logits(&args.logits)?;
    let options = args.loss.options(cols)?;
    let strategy: Strategy = args
        .strategy
        .parse()
        .map_err(|e| format!("--strategy: {e}"))?;
    let chunk_rows = match args.chunk_rows {
        Some(0) => return Err("--chunk-rows 0: must be at least 1".into()),
        Some(n) => n,
        None => (DEFAULT_CHUNK_BYTES / (cols * 4)).max(1),
    };
    // Check everything the library checks before touching the GPU, so bad input fails fast.
    options.validate(cols).map_err(flag_error)?;
    let (labels, mut probs) = match (&args.labels, &args.targets) {
        (Some(path), _) => {
            let labels = read_labels(path, rows)?;
            options
                .check_labels(&labels, cols)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            (labels, None)
        }
        (None, Some(path)) => {
            let (t, t_rows, t_cols) = open_matrix(path, "targets")?;
            if (t_rows, t_cols) != (rows, cols) {
                return Err(format!(
                    "{}: targets must have the logits' shape [{rows}, {cols}], got [{t_rows}, \
                     {t_cols}]",
                    path.display()
                ));
            }
            (Vec::new(), Some((t, path)))
        }
        (None, None) => return Err("give --labels or --targets".into()),
    };
    let mut outputs = Outputs::plan(&[
        ("--loss-out", args.loss_out.as_deref()),
        ("--grad-out", args.grad_out.as_deref()),
        ("--lse-out", args.lse_out.as_deref()),
        ("--row-loss-out", args.row_loss_out.as_deref()),
        ("--probs-out", args.probs_out.as_deref()),
        ("--log-probs-out", args.log_probs_out.as_deref()),
    ])?;
    let half = logits_dtype == "float16";
    if half && options.softcap > 0.0 && (args.probs_out.is_some() || args.log_probs_out.is_some()) {
        return Err("--probs-out / --log-probs-out with --softcap need float32 logits".into());
    }

    // 2. The GPU, and a stream over the rows whose mean denominator comes first: from all
    // labels, or the rows for probability targets. The [rows, cols] outputs are written as
    // the chunks come.
    progress.step("opening the GPU");
    let ctx = args.gpu.context()?;
    // One kernel for every chunk: `auto` chosen once, for the whole batch's shape.
    let strategy = ctx.resolve_strategy(strategy, rows, cols);
    let denominator = match probs {
        Some(_) => Denominator::Rows(rows),
        None => Denominator::Labels(&labels),
    };
    let mut stream = CrossEntropyStream::new(&ctx, cols, &options, denominator, strategy)
        .map_err(|e| e.to_string())?;
    let like = if half {
        NpyData::F16(Vec::new())
    } else {
        NpyData::F32(Vec::new())
    };
    for flag in ["--grad-out", "--probs-out", "--log-probs-out"] {
        outputs.start(flag, &[rows, cols], &like)?;
    }
    let mut row_loss = Vec::with_capacity(rows);
    let mut lse = Vec::with_capacity(rows);
    let mut gpu_seconds = 0.0;

    // 3. Chunk by chunk: read, compute, write.
    let mut first = 0;
    while first < rows {
        progress.rows(first, rows);
        let count = chunk_rows.min(rows - first);
        let chunk = logits
            .next_rows(count)
            .map_err(|e| input_error(&args.logits, e))?;
        let t = match &mut probs {
            Some((reader, path)) => {
                let data = reader.next_rows(count).map_err(|e| input_error(path, e))?;
                Some(floats(path, "targets", data)?)
            }
            None => None,
        };
        let targets = match &t {
            Some(t) => Targets::Probabilities(t),
            None => Targets::Classes(&labels[first..][..count]),
        };
        let gpu_started = Instant::now();
        let (z, grad, chunk_row_loss, chunk_lse) = match chunk {
            NpyData::F16(z) => {
                let out = stream
                    .push_half(&z, Precision::F16, targets)
                    .map_err(|e| e.to_string())?;
                (
                    Logits::F16(z),
                    NpyData::F16(out.grad),
                    out.row_loss,
                    out.lse,
                )
            }
            other => {
                let z = floats(&args.logits, "logits", other)?;
                let out = stream.push(&z, targets).map_err(|e| e.to_string())?;
                (
                    Logits::F32(z),
                    NpyData::F32(out.grad),
                    out.row_loss,
                    out.lse,
                )
            }
        };
        // Probabilities are a second output array: a softmax pass over the (capped) logits.
        let mut softmaxes = Vec::new();
        for (flag, wanted, kind) in [
            ("--probs-out", &args.probs_out, SoftmaxKind::Softmax),
            (
                "--log-probs-out",
                &args.log_probs_out,
                SoftmaxKind::LogSoftmax,
            ),
        ] {
            if wanted.is_some() {
                let data = match &z {
                    Logits::F32(z) => softmax_of(
                        &ctx,
                        &Logits::F32(soft_capped(z, options.softcap)),
                        (count, cols),
                        kind,
                        strategy,
                    )?,
                    z => softmax_of(&ctx, z, (count, cols), kind, strategy)?,
                };
                softmaxes.push((flag, data));
            }
        }
        gpu_seconds += gpu_started.elapsed().as_secs_f64();
        outputs.append("--grad-out", &grad)?;
        for (flag, data) in &softmaxes {
            outputs.append(flag, data)?;
        }
        row_loss.extend_from_slice(&chunk_row_loss);
        lse.extend_from_slice(&chunk_lse);
        first += count;
    }
    let loss = stream.finish().map_err(|e| e.to_string())?;
    match options.reduction {
        Reduction::None => outputs.set("--loss-out", &[rows], NpyData::F32(row_loss.clone())),
        _ => outputs.set("--loss-out", &[], NpyData::F32(vec![loss])),
    }
    outputs.set("--lse-out", &[rows], NpyData::F32(lse));
    outputs.set("--row-loss-out", &[rows], NpyData::F32(row_loss));

    progress.step("writing the outputs");
    let written: Vec<(&str, String)> = outputs
        .written()
        .into_iter()
        .map(|(flag, path)| (flag, path.display().to_string()))
        .collect();
    outputs.write()?;
    drop(progress);

    let ignored_rows = labels
        .iter()
        .filter(|&&y| y == options.ignore_index)
        .count();
    let summary = Summary {
        loss,
        reduction: match options.reduction {
            Reduction::Mean => "mean",
            Reduction::Sum => "sum",
            Reduction::None => "none",
        },
        rows,
        cols,
        ignored_rows,
        logits_dtype,
        adapter: ctx.describe(),
        gpu_seconds,
        seconds: started.elapsed().as_secs_f64(),
        written,
    };
    if args.json {
        println!("{}", summary.json());
    } else {
        summary.print();
    }
    Ok(())
}

/// What `xent` prints when it is done.
struct Summary {
    loss: f32,
    reduction: &'static str,
    rows: usize,
    cols: usize,
    ignored_rows: usize,
    /// The logits' dtype in the file; float64 was computed in float32.
    logits_dtype: &'static str,
    adapter: String,
    /// The library calls (upload, kernels, readback).
    gpu_seconds: f64,
    /// The whole command, reading and writing included.
    seconds: f64,
    written: Vec<(&'static str, String)>,
}

impl Summary {
    /// float64 logits are computed in float32 and give a float32 gradient.
    fn computed_in(&self) -> &'static str {
        if self.logits_dtype == "float16" {
            "float16"
        } else {
            "float32"
        }
    }

    fn json(&self) -> serde_json::Value {
        let outputs: serde_json::Map<String, serde_json::Value> = self
            .written
            .iter()
            .map(|(flag, path)| {
                (
                    flag.trim_start_matches('-').to_string(),
                    path.clone().into(),
                )
            })
            .collect();
        serde_json::json!({
            "loss": self.loss,
            "reduction": self.reduction,
            "rows": self.rows,
            "cols": self.cols,
            "ignored_rows": self.ignored_rows,
            "logits_dtype": self.logits_dtype,
            "grad_dtype": self.computed_in(),
            "adapter": self.adapter,
            "gpu_seconds": self.gpu_seconds,
            "seconds": self.seconds,
            "outputs": outputs,
        })
    }

    fn print(&self) {
        let what = match self.reduction {
            "none" => "sum of the row losses (reduction none)".to_string(),
            r => format!("reduction {r}"),
        };
        let count =
            |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        println!(
            "loss {} ({what}; {}, {} ignored, {})",
            self.loss,
            count(self.rows, "row", "rows"),
            self.ignored_rows,
            count(self.cols, "class", "classes")
        );
        let dtype = if self.logits_dtype == "float64" {
            "float64 logits computed in float32, gradient written as float32".to_string()
        } else {
            format!("{} logits", self.logits_dtype)
        };
        println!("{dtype}; adapter {}", self.adapter);
        println!(
            "time {:.3} s in all, {:.3} s in the GPU calls",
            self.seconds, self.gpu_seconds
        );
        if self.written.is_empty() {
            println!("wrote nothing (give --loss-out, --grad-out, ... to keep results)");
        } else {
            let list: Vec<String> = self
                .written
                .iter()
                .map(|(flag, path)| format!("{flag} {path}"))
                .collect();
            println!("wrote {}", list.join(", "));
        }
    }
}

/// The logits as the loss sees them: `c * tanh(z / c)` with soft-capping.
fn soft_capped(logits: &[f32], softcap: f32) -> Vec<f32> {
    if softcap > 0.0 {
        logits
            .iter()
            .map(|z| softcap * (z / softcap).tanh())
            .collect()
    } else {
        logits.to_vec()
    }
}

/// Softmax or log-softmax of f32 or f16 logits, in their format.
fn softmax_of(
    ctx: &Context,
    z: &Logits,
    (rows, cols): (usize, usize),
    kind: SoftmaxKind,
    strategy: Strategy,
) -> Result<NpyData, String> {
    let data = match z {
        Logits::F32(z) => ctx
            .softmax_with(z, rows, cols, kind, strategy)
            .map(NpyData::F32),
        Logits::F16(z) => {
            (ctx.softmax_half(z, Precision::F16, rows, cols, kind, strategy)).map(NpyData::F16)
        }
    };
    data.map_err(|e| e.to_string())
}

fn softmax(gpu: &GpuArgs, logits: &Path, out: &Path, log: bool, quiet: bool) -> Result<(), String> {
    let progress = Progress::new(quiet);
    progress.step("reading the input");
    let (z, rows, cols, _) = read_logits(logits)?;
    let mut outputs = Outputs::plan(&[("--out", Some(out))])?;
    progress.step("computing on the GPU");
    let ctx = gpu.context()?;
    let kind = if log {
        SoftmaxKind::LogSoftmax
    } else {
        SoftmaxKind::Softmax
    };
    let data = softmax_of(&ctx, &z, (rows, cols), kind, Strategy::Auto)?;
    progress.step("writing the output");
    outputs.set("--out", &[rows, cols], data);
    outputs.write()
}
