//! Reading and writing `NumPy` `.npy` files, with nothing but `std`.
//!
//! A `.npy` file is laid out as:
//!
//! 1. the magic string `\x93NUMPY` (6 bytes);
//! 2. the format version, major and minor (2 bytes): 1.0, 2.0 or 3.0;
//! 3. the header length, a little-endian `u16` in 1.0 or `u32` in 2.0 and 3.0;
//! 4. the header: a Python dict literal such as
//!    `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }`, ASCII in 1.0 and 2.0,
//!    UTF-8 in 3.0, padded with spaces and ending in `'\n'` so the data starts at a multiple
//!    of 64 bytes;
//! 5. the elements, in C (row-major) order, with no gap and nothing after them.
//!
//! This module handles the little-endian dtypes `<f8` (float64), `<f4` (float32), `<f2`
//! (float16, kept as raw `u16` bits), `<i8` (int64) and `<i4` (int32). It reads all three format versions and writes
//! 1.0, or 2.0 when the header would not fit in 65535 bytes, byte for byte as `np.save` does.
//! Parsing never panics: every problem with the input is an [`NpyError`].

use std::convert::Infallible;
use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The first six bytes of every `.npy` file.
const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// `np.save` pads the header so the data starts at a multiple of this many bytes.
const ALIGN: usize = 64;
/// `np.save` leaves room for the first dimension to grow to this many digits.
const GROWTH_AXIS_MAX_DIGITS: usize = 21;
/// Deepest nesting of tuples, lists and dicts the header parser accepts.
const MAX_DEPTH: usize = 16;
/// Elements encoded per chunk when writing.
const CHUNK_ELEMENTS: usize = 16 * 1024;

/// Element data of an array read from a .npy file.
#[derive(Debug, Clone, PartialEq)]
pub enum NpyData {
    /// `<f8`: 64-bit floats (numpy's default float type).
    F64(Vec<f64>),
    /// `<f4`: 32-bit floats.
    F32(Vec<f32>),
    /// `<f2`: 16-bit IEEE half floats, kept as their raw bits.
    F16(Vec<u16>),
    /// `<i8`: 64-bit signed integers.
    I64(Vec<i64>),
    /// `<i4`: 32-bit signed integers.
    I32(Vec<i32>),
}

/// An array read from, or to be written to, a `.npy` file.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    /// The dimensions, outermost first; empty for a 0-d array, which holds one element.
    pub shape: Vec<usize>,
    /// The elements in C (row-major) order.
    pub data: NpyData,
}

impl NpyData {
    /// The `NumPy` name of the element type: `"float32"`, `"float16"`, `"int64"` or `"int32"`.
    #[must_use]
    pub fn dtype(&self) -> &'static str {
        self.kind().name()
    }

    /// The number of elements.
    #[must_use]
    pub fn len(&self) -> usize {
        match self {
            Self::F64(v) => v.len(),
            Self::F32(v) => v.len(),
            Self::F16(v) => v.len(),
            Self::I64(v) => v.len(),
            Self::I32(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn kind(&self) -> Dtype {
        match self {
            Self::F64(_) => Dtype::F64,
            Self::F32(_) => Dtype::F32,
            Self::F16(_) => Dtype::F16,
            Self::I64(_) => Dtype::I64,
            Self::I32(_) => Dtype::I32,
        }
    }
}

/// Everything that can go wrong reading or writing a `.npy` file.
#[derive(Debug)]
#[non_exhaustive]
pub enum NpyError {
    /// A file-system operation failed.
    Io {
        /// What was being done, e.g. `"cannot read"`.
        action: &'static str,
        /// The file the caller named.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The input does not start with the `.npy` magic string.
    BadMagic,
    /// The format version is not 1.0, 2.0 or 3.0.
    UnsupportedVersion {
        /// Major version byte.
        major: u8,
        /// Minor version byte.
        minor: u8,
    },
    /// The input ends before the end of the header.
    TruncatedHeader {
        /// Bytes needed up to the end of the header (or of the part read so far).
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// The header is not ASCII (format 1.0 and 2.0) or not UTF-8 (format 3.0).
    HeaderEncoding {
        /// The major format version.
        major: u8,
    },
    /// The header is not a parsable Python dict literal.
    HeaderSyntax {
        /// What is wrong.
        reason: String,
        /// Byte offset of the problem within the header text.
        offset: usize,
    },
    /// The header dict lacks one of `descr`, `fortran_order` and `shape`.
    MissingKey {
        /// The missing key.
        key: &'static str,
    },
    /// The header dict has a key other than `descr`, `fortran_order` and `shape`.
    UnexpectedKey {
        /// The key, as written.
        key: String,
    },
    /// A header value has the wrong type or an invalid value.
    BadHeaderValue {
        /// The key whose value is wrong.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The dtype is not one of float64, float32, float16, int64 and int32.
    UnsupportedDtype {
        /// The dtype as written in the header, e.g. `<f8`.
        descr: String,
    },
    /// The dtype is big-endian.
    BigEndian {
        /// The dtype as written in the header, e.g. `>f4`.
        descr: String,
    },
    /// The array is stored in Fortran (column-major) order.
    FortranOrder,
    /// The shape's size in bytes does not fit in `usize`.
    ShapeOverflow {
        /// The shape.
        shape: Vec<usize>,
        /// The element type.
        dtype: &'static str,
    },
    /// The data is shorter than the shape needs.
    TruncatedData {
        /// The shape from the header.
        shape: Vec<usize>,
        /// The element type.
        dtype: &'static str,
        /// Bytes of data the shape needs.
        needed: usize,
        /// Bytes of data present.
        available: usize,
    },
    /// There are bytes after the data the shape needs.
    TrailingData {
        /// The shape from the header.
        shape: Vec<usize>,
        /// The element type.
        dtype: &'static str,
        /// Bytes of data the shape needs.
        needed: usize,
        /// Bytes of data present.
        available: usize,
    },
    /// When writing: the number of elements does not match the shape.
    LengthMismatch {
        /// The shape given.
        shape: Vec<usize>,
        /// Elements the shape needs.
        expected: usize,
        /// Elements given.
        actual: usize,
    },
    /// When writing: the header would not fit in the 4 GiB a format 2.0 header allows.
    HeaderTooLarge {
        /// The header length in bytes.
        len: usize,
    },
}

impl fmt::Display for NpyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io {
                action,
                path,
                source,
            } => write!(f, "{action} {}: {source}", path.display()),
            Self::BadMagic => {
                f.write_str("not a .npy file: it does not start with the magic string \\x93NUMPY")
            }
            Self::UnsupportedVersion { major, minor } => write!(
                f,
                "unsupported .npy format version {major}.{minor}: only 1.0, 2.0 and 3.0 are supported"
            ),
            Self::TruncatedHeader { needed, available } => write!(
                f,
                "truncated .npy header: needs {needed} bytes, the input has {available}"
            ),
            Self::HeaderEncoding { major: 3 } => {
                f.write_str("the .npy header is not valid UTF-8 (format 3.0)")
            }
            Self::HeaderEncoding { major } => {
                write!(f, "the .npy header is not valid ASCII (format {major}.0)")
            }
            Self::HeaderSyntax { reason, offset } => write!(
                f,
                "the .npy header is not a valid Python dict literal: {reason} at byte {offset}"
            ),
            Self::MissingKey { key } => write!(f, "the .npy header has no '{key}' key"),
            Self::UnexpectedKey { key } => write!(
                f,
                "the .npy header has an unexpected key '{key}': only 'descr', 'fortran_order' and 'shape' are allowed"
            ),
            Self::BadHeaderValue { key, reason } => {
                write!(f, "invalid '{key}' in the .npy header: {reason}")
            }
            Self::UnsupportedDtype { descr } => {
                let name = dtype_name(descr).unwrap_or("unknown type");
                write!(
                    f,
                    "dtype '{descr}' ({name}) is not supported: {}",
                    dtype_hint(descr)
                )
            }
            Self::BigEndian { descr } => {
                let name = dtype_name(descr).unwrap_or("unknown type");
                let little = format!("<{}", descr.get(1..).unwrap_or_default());
                write!(
                    f,
                    "dtype '{descr}' ({name}) is big-endian: only little-endian data is supported, \
                     convert with arr.astype('{little}')"
                )
            }
            Self::FortranOrder => f.write_str(
                "Fortran-order arrays are not supported: save with np.ascontiguousarray",
            ),
            Self::ShapeOverflow { shape, dtype } => write!(
                f,
                "shape {shape:?} {dtype} is too large: its size in bytes does not fit in usize"
            ),
            Self::TruncatedData {
                shape,
                dtype,
                needed,
                available,
            } => write!(
                f,
                "truncated: shape {shape:?} {dtype} needs {needed} bytes of data, file has {available}"
            ),
            Self::TrailingData {
                shape,
                dtype,
                needed,
                available,
            } => write!(
                f,
                "trailing data: shape {shape:?} {dtype} needs {needed} bytes of data, file has {available} \
                 ({} extra)",
                available.saturating_sub(*needed)
            ),
            Self::LengthMismatch {
                shape,
                expected,
                actual,
            } => write!(
                f,
                "shape {shape:?} needs {expected} elements, but the data has {actual}"
            ),
            Self::HeaderTooLarge { len } => write!(
                f,
                "the .npy header would be {len} bytes, more than the 4 GiB format 2.0 allows"
            ),
        }
    }
}

impl std::error::Error for NpyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Element types
// ---------------------------------------------------------------------------------------------

/// The supported element types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dtype {
    F64,
    F32,
    F16,
    I64,
    I32,
}

impl Dtype {
    fn name(self) -> &'static str {
        match self {
            Self::F64 => "float64",
            Self::F32 => "float32",
            Self::F16 => "float16",
            Self::I64 => "int64",
            Self::I32 => "int32",
        }
    }

    fn descr(self) -> &'static str {
        match self {
            Self::F64 => "<f8",
            Self::F32 => "<f4",
            Self::F16 => "<f2",
            Self::I64 => "<i8",
            Self::I32 => "<i4",
        }
    }

    fn size(self) -> usize {
        match self {
            Self::F32 | Self::I32 => 4,
            Self::F16 => 2,
            Self::F64 | Self::I64 => 8,
        }
    }

    /// Maps a dtype code without its byte-order character (`f4`, `i8`, ...).
    fn from_code(code: &str) -> Option<Self> {
        match code {
            "f8" => Some(Self::F64),
            "f4" => Some(Self::F32),
            "f2" => Some(Self::F16),
            "i8" => Some(Self::I64),
            "i4" => Some(Self::I32),
            _ => None,
        }
    }

    /// Interprets a header `descr` string such as `<f4`.
    fn from_descr(descr: &str) -> Result<Self, NpyError> {
        let (order, code) = split_byte_order(descr);
        let dtype = Self::from_code(code).ok_or_else(|| NpyError::UnsupportedDtype {
            descr: descr.to_owned(),
        })?;
        let little = match order {
            Some('<') => true,
            Some('>') => false,
            // '=' is native order, '|' "not applicable" (numpy reads it as native), and no
            // prefix is native as well.
            _ => cfg!(target_endian = "little"),
        };
        if little {
            Ok(dtype)
        } else {
            Err(NpyError::BigEndian {
                descr: descr.to_owned(),
            })
        }
    }
}

/// Splits `'<f4'` into `Some('<')` and `"f4"`; a descr without a byte-order mark gives `None`.
fn split_byte_order(descr: &str) -> (Option<char>, &str) {
    match descr.strip_prefix(['<', '>', '=', '|']) {
        Some(code) => (descr.chars().next(), code),
        None => (None, descr),
    }
}

/// The `NumPy` name of a dtype code, for error messages.
fn dtype_name(descr: &str) -> Option<&'static str> {
    let (_, code) = split_byte_order(descr);
    Some(match code {
        "f2" | "e" => "float16",
        "f4" | "f" => "float32",
        "f8" | "d" => "float64",
        "f12" | "f16" | "g" => "longdouble",
        "i1" | "b" => "int8",
        "i2" | "h" => "int16",
        "i4" | "i" => "int32",
        "i8" | "q" | "l" => "int64",
        "u1" | "B" => "uint8",
        "u2" | "H" => "uint16",
        "u4" | "I" => "uint32",
        "u8" | "Q" | "L" => "uint64",
        "b1" | "?" => "bool",
        "c8" | "F" => "complex64",
        "c16" | "D" => "complex128",
        "c24" | "c32" | "G" => "clongdouble",
        "O" => "object",
        _ if code.starts_with('U') => "unicode string",
        _ if code.starts_with('S') => "byte string",
        _ if code.starts_with('V') => "void",
        _ if code.starts_with("M8") => "datetime64",
        _ if code.starts_with("m8") => "timedelta64",
        _ => return None,
    })
}

/// Which supported dtype to convert an unsupported one to.
fn dtype_hint(descr: &str) -> &'static str {
    let (_, code) = split_byte_order(descr);
    match code.chars().next() {
        Some('f' | 'e' | 'd' | 'g') => "use float64, float32 or float16",
        Some('i' | 'u' | 'b' | 'h' | 'l' | 'q' | 'B' | 'H' | 'I' | 'L' | 'Q' | '?') => {
            "use int64 or int32"
        }
        _ => "supported dtypes are float64, float32, float16, int64 and int32",
    }
}

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

/// Parses the bytes of a `.npy` file. Never panics, and allocates nothing larger than the
/// input before checking that the data is as long as the header says.
///
/// # Errors
///
/// Any problem with the input: not a `.npy` file, an unsupported version, dtype or layout,
/// a malformed header, or data shorter or longer than the shape needs. See [`NpyError`].
pub fn parse(bytes: &[u8]) -> Result<NpyArray, NpyError> {
    let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    read_from(bytes, Some(len), Path::new("<memory>"))
}

/// Reads and parses a `.npy` file. Reads no more than the header declares (plus one byte to
/// see that the file ends there), and for a regular file compares the declared size with the
/// file's before allocating anything for the data: a header that declares more than the file
/// holds is an error at once. A stream (a FIFO, a character device such as `/dev/zero`) is
/// read as its bytes arrive, never past the declared size.
///
/// # Errors
///
/// [`NpyError::Io`] naming `path` if the file cannot be read (including a data buffer that
/// cannot be allocated), else the errors of [`parse`].
pub fn read(path: &Path) -> Result<NpyArray, NpyError> {
    let io_error = |source| read_error(path, source);
    read_file(fs::File::open(path).map_err(io_error)?, path)
}

/// [`read`] of a file already open (`path` names it in errors). For a FIFO, opening is what
/// waits for a writer: a caller can say so while it waits, then read here.
///
/// # Errors
///
/// As [`read`].
pub fn read_file(file: fs::File, path: &Path) -> Result<NpyArray, NpyError> {
    let (reader, known_len) = buffered(file, path)?;
    read_from(reader, known_len, path)
}

/// `file` buffered, and its length where it is known (a regular file; not a FIFO); a folder
/// is an [`NpyError::Io`] naming `path`.
fn buffered(
    file: fs::File,
    path: &Path,
) -> Result<(io::BufReader<fs::File>, Option<u64>), NpyError> {
    let io_error = |source| read_error(path, source);
    let meta = file.metadata().map_err(io_error)?;
    if meta.is_dir() {
        return Err(io_error(io::Error::new(
            io::ErrorKind::IsADirectory,
            "it is a folder",
        )));
    }
    let known_len = meta.is_file().then_some(meta.len());
    Ok((io::BufReader::new(file), known_len))
}

/// Reads one array from `reader`. `known_len`: the whole input's length where it is known
/// (a regular file, a slice), checked against the header before the data is read.
fn read_from(
    mut reader: impl io::Read,
    known_len: Option<u64>,
    path: &Path,
) -> Result<NpyArray, NpyError> {
    let (header, data) = read_data(&mut reader, known_len, path)?;
    Ok(NpyArray {
        data: decode(header.dtype, &data),
        shape: header.shape,
    })
}

/// The header and the raw data bytes of one array from `reader` (see [`read_from`]).
fn read_data(
    reader: &mut impl io::Read,
    known_len: Option<u64>,
    path: &Path,
) -> Result<(Header, Vec<u8>), NpyError> {
    let io_error = |source| read_error(path, source);
    // 1. The header, and the data's length checked against a known length.
    let (header, mut data) = read_header(reader, known_len, path)?;
    let needed = data_size(&header.shape, header.dtype)?;

    // 2. The data: nothing is allocated for it before that check; a stream is read as it
    // arrives, at most one byte past what the header declares.
    if known_len.is_some() {
        data.try_reserve_exact(needed.saturating_sub(data.len()))
            .map_err(|_| io_error(out_of_memory(needed)))?;
    }
    fill_to(reader, &mut data, needed.saturating_add(1)).map_err(|e| {
        io_error(match e.kind() {
            io::ErrorKind::OutOfMemory => out_of_memory(needed),
            _ => e,
        })
    })?;
    check_data_len(&header, data.len())?;
    Ok((header, data))
}

/// Reads the fixed prefix (magic, version, header length) and the header it announces, and
/// for an input of known length checks the data's length against the header's. Returns the
/// header and any data bytes read past it.
fn read_header(
    reader: &mut impl io::Read,
    known_len: Option<u64>,
    path: &Path,
) -> Result<(Header, Vec<u8>), NpyError> {
    let io_error = |source| read_error(path, source);
    let mut preamble = Vec::new();
    fill_to(reader, &mut preamble, PREFIX_MAX).map_err(io_error)?;
    let header_end = preamble_len(&preamble, known_len)?;
    fill_to(reader, &mut preamble, header_end).map_err(io_error)?;
    let data = preamble.split_off(header_end.min(preamble.len()));
    let header = parse_header(header_text_of(&preamble)?)?;
    data_size(&header.shape, header.dtype)?;
    if let Some(total) = known_len {
        let available =
            usize::try_from(total.saturating_sub(header_end as u64)).unwrap_or(usize::MAX);
        check_data_len(&header, available)?;
    }
    Ok((header, data))
}

/// A `.npy` file read a few rows (entries of the first dimension) at a time, into one
/// reused buffer, so that a file larger than memory can be processed: what the CLI's `xent`
/// streams its inputs with. The header and the data's length are checked when it is opened,
/// with the errors of [`read`]. Only a regular file is streamed: the length of any other
/// input (a FIFO, a device) cannot be known before it is read, so it is read whole when
/// opened, exactly as [`read`] reads it (refused when it does not fit in memory, never read
/// past its declared size).
pub struct RowReader {
    /// The file, for a regular file; `None` when the whole data was read when opening.
    reader: Option<io::BufReader<fs::File>>,
    path: PathBuf,
    header: Header,
    /// Bytes of one row.
    row_bytes: usize,
    /// Data bytes read so far.
    done: usize,
    /// Data bytes the header declares.
    needed: usize,
    /// Data bytes read with the header (all of them for an input read whole), handed out
    /// first, and how many of them have been.
    leftover: Vec<u8>,
    taken: usize,
    buffer: Vec<u8>,
}

impl RowReader {
    /// Opens the array of `file` (`path` names it in errors) and reads its header.
    ///
    /// # Errors
    ///
    /// As [`read`], except those about the data of a stream, which come from
    /// [`RowReader::next_rows`].
    pub fn open(file: fs::File, path: &Path) -> Result<Self, NpyError> {
        let (mut reader, known_len) = buffered(file, path)?;
        let (header, leftover, reader) = if known_len.is_some() {
            let (header, leftover) = read_header(&mut reader, known_len, path)?;
            (header, leftover, Some(reader))
        } else {
            let (header, data) = read_data(&mut reader, known_len, path)?;
            (header, data, None)
        };
        let needed = data_size(&header.shape, header.dtype)?; // checked by read_header
        let row_elems = element_count(header.shape.get(1..).unwrap_or_default()).unwrap_or(0);
        Ok(Self {
            reader,
            path: path.to_owned(),
            row_bytes: row_elems * header.dtype.size(),
            header,
            done: 0,
            needed,
            leftover,
            taken: 0,
            buffer: Vec::new(),
        })
    }

    /// The array's shape.
    pub fn shape(&self) -> &[usize] {
        &self.header.shape
    }

    /// numpy's name of the array's dtype: `float32`, `int64`, ...
    pub fn dtype(&self) -> &'static str {
        self.header.dtype.name()
    }

    /// The next `rows` rows (fewer at the end of the array; none after it). After the last
    /// row, the input is checked to end there.
    ///
    /// # Errors
    ///
    /// [`NpyError::TruncatedData`] or [`NpyError::TrailingData`] when the input is shorter or
    /// longer than the header declares, [`NpyError::Io`] when it cannot be read.
    pub fn next_rows(&mut self, rows: usize) -> Result<NpyData, NpyError> {
        let want = rows
            .saturating_mul(self.row_bytes)
            .min(self.needed - self.done);
        self.buffer.clear();
        let from_header = want.min(self.leftover.len() - self.taken);
        self.buffer
            .extend_from_slice(&self.leftover[self.taken..][..from_header]);
        self.taken += from_header;
        let path = &self.path;
        let io_error = |source| read_error(path, source);
        let Some(reader) = &mut self.reader else {
            // Read whole and checked when opened.
            self.done += self.buffer.len();
            return Ok(decode(self.header.dtype, &self.buffer));
        };
        fill_to(reader, &mut self.buffer, want).map_err(io_error)?;
        self.done += self.buffer.len();
        if self.buffer.len() < want {
            return Err(NpyError::TruncatedData {
                shape: self.header.shape.clone(),
                dtype: self.header.dtype.name(),
                needed: self.needed,
                available: self.done,
            });
        }
        if self.done == self.needed {
            // One byte more than declared is trailing data.
            let mut probe = self.leftover.split_off(self.taken);
            fill_to(reader, &mut probe, 1).map_err(io_error)?;
            check_data_len(&self.header, self.done + probe.len().min(1))?;
        }
        Ok(decode(self.header.dtype, &self.buffer))
    }
}

/// [`NpyError::Io`] for a failed read of `path`.
fn read_error(path: &Path, source: io::Error) -> NpyError {
    NpyError::Io {
        action: "cannot read",
        path: path.to_owned(),
        source,
    }
}

/// Magic, version and the longest header-length field.
const PREFIX_MAX: usize = MAGIC.len() + 2 + 4;

/// Reads from `reader` until `buffer` holds `len` bytes or the input ends; an allocation
/// that fails is an `OutOfMemory` error, not an abort (`read_to_end` grows the buffer with
/// `try_reserve`).
fn fill_to(reader: &mut impl io::Read, buffer: &mut Vec<u8>, len: usize) -> io::Result<()> {
    let more = u64::try_from(len.saturating_sub(buffer.len())).unwrap_or(u64::MAX);
    reader.by_ref().take(more).read_to_end(buffer).map(|_| ())
}

fn out_of_memory(bytes: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::OutOfMemory,
        format!("its data ({bytes} bytes) does not fit in memory"),
    )
}

/// The parts of the header this module uses.
#[derive(Debug)]
struct Header {
    dtype: Dtype,
    shape: Vec<usize>,
}

/// Checks magic, version and header length in the first bytes of the input (at least
/// [`PREFIX_MAX`] of them where the input has that many) and returns where the header ends.
/// `known_len`: the input's whole length, when known, to report a truncated header before
/// reading it.
fn preamble_len(bytes: &[u8], known_len: Option<u64>) -> Result<usize, NpyError> {
    let available = known_len.map_or(bytes.len(), |n| usize::try_from(n).unwrap_or(usize::MAX));
    let truncated = |needed| NpyError::TruncatedHeader { needed, available };
    if bytes.len() < MAGIC.len() {
        // A prefix of the magic string is a truncated file; anything else is not a .npy file.
        return Err(if MAGIC.starts_with(bytes) {
            truncated(MAGIC.len() + 4)
        } else {
            NpyError::BadMagic
        });
    }
    if !bytes.starts_with(MAGIC) {
        return Err(NpyError::BadMagic);
    }
    let (Some(&major), Some(&minor)) = (bytes.get(6), bytes.get(7)) else {
        return Err(truncated(MAGIC.len() + 4));
    };
    let len_size = match (major, minor) {
        (1, 0) => 2,
        (2 | 3, 0) => 4,
        _ => return Err(NpyError::UnsupportedVersion { major, minor }),
    };
    let prefix_len = MAGIC.len() + 2 + len_size;
    let len_bytes = bytes.get(8..prefix_len).ok_or(truncated(prefix_len))?;
    let header_len = len_bytes
        .iter()
        .rev()
        .fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    let header_end = usize::try_from(header_len)
        .ok()
        .and_then(|len| prefix_len.checked_add(len))
        .ok_or(truncated(usize::MAX))?;
    if known_len.is_some() && available < header_end {
        return Err(truncated(header_end));
    }
    Ok(header_end)
}

/// The header text of a preamble read up to where [`preamble_len`] says it ends (or up to
/// the end of the input, which is then a truncated header).
fn header_text_of(bytes: &[u8]) -> Result<&str, NpyError> {
    let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    let header_end = preamble_len(bytes, Some(len))?;
    let (major, prefix_len) = match bytes.get(6) {
        Some(1) => (1, PREFIX_MAX - 2),
        Some(&major) => (major, PREFIX_MAX),
        None => return Err(NpyError::BadMagic), // unreachable: preamble_len checked
    };
    let header_bytes = bytes.get(prefix_len..header_end).unwrap_or_default();
    // Format 3.0 headers are UTF-8; older ones are ASCII (numpy reads them as Latin-1, but
    // only writes non-ASCII there for structured dtypes, which are not supported anyway).
    let valid_encoding = major == 3 || header_bytes.is_ascii();
    std::str::from_utf8(header_bytes)
        .ok()
        .filter(|_| valid_encoding)
        .ok_or(NpyError::HeaderEncoding { major })
}

/// Parses the header dict and checks its three keys.
fn parse_header(text: &str) -> Result<Header, NpyError> {
    let entries = HeaderParser::new(text).parse_dict_literal()?;
    let mut descr = None;
    let mut fortran_order = None;
    let mut shape = None;
    for (key, value) in entries {
        let (name, slot) = match key.as_str() {
            "descr" => ("descr", &mut descr),
            "fortran_order" => ("fortran_order", &mut fortran_order),
            "shape" => ("shape", &mut shape),
            _ => return Err(NpyError::UnexpectedKey { key }),
        };
        if slot.replace(value).is_some() {
            return Err(NpyError::BadHeaderValue {
                key: name,
                reason: "the key appears more than once".to_owned(),
            });
        }
    }
    let descr = descr.ok_or(NpyError::MissingKey { key: "descr" })?;
    let fortran_order = fortran_order.ok_or(NpyError::MissingKey {
        key: "fortran_order",
    })?;
    let shape = shape.ok_or(NpyError::MissingKey { key: "shape" })?;

    let dtype = header_dtype(descr)?;
    if header_fortran_order(fortran_order)? {
        return Err(NpyError::FortranOrder);
    }
    let shape = header_shape(shape)?;
    Ok(Header { dtype, shape })
}

fn header_dtype(value: Value) -> Result<Dtype, NpyError> {
    match value {
        Value::Str(descr) => Dtype::from_descr(&descr),
        Value::List(_) => Err(NpyError::BadHeaderValue {
            key: "descr",
            reason: "structured dtypes (a list of fields) are not supported: \
                     save a plain float32, float16, int64 or int32 array"
                .to_owned(),
        }),
        other => Err(NpyError::BadHeaderValue {
            key: "descr",
            reason: format!(
                "expected a dtype string such as '<f4', found {}",
                other.describe()
            ),
        }),
    }
}

fn header_fortran_order(value: Value) -> Result<bool, NpyError> {
    match value {
        Value::Bool(b) => Ok(b),
        other => Err(NpyError::BadHeaderValue {
            key: "fortran_order",
            reason: format!("expected True or False, found {}", other.describe()),
        }),
    }
}

fn header_shape(value: Value) -> Result<Vec<usize>, NpyError> {
    let bad = |reason: String| NpyError::BadHeaderValue {
        key: "shape",
        reason,
    };
    let Value::Tuple(items) = value else {
        return Err(bad(format!(
            "expected a tuple of non-negative integers, found {}",
            value.describe()
        )));
    };
    items
        .into_iter()
        .map(|item| match item {
            Value::Int {
                negative: false,
                digits,
            }
            | Value::Int {
                negative: true,
                digits: digits @ "0",
            } => digits
                .parse::<usize>()
                .map_err(|_| bad(format!("dimension {digits} is too large"))),
            Value::Int {
                negative: true,
                digits,
            } => Err(bad(format!("dimension -{digits} is negative"))),
            other => Err(bad(format!(
                "expected a tuple of non-negative integers, found {} in it",
                other.describe()
            ))),
        })
        .collect()
}

/// The number of elements of `shape` (zero if any dimension is zero), or `None` on overflow.
fn element_count(shape: &[usize]) -> Option<usize> {
    if shape.contains(&0) {
        Some(0)
    } else {
        shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
    }
}

/// The number of data bytes `shape` of `dtype` needs.
fn data_size(shape: &[usize], dtype: Dtype) -> Result<usize, NpyError> {
    element_count(shape)
        .and_then(|n| n.checked_mul(dtype.size()))
        .ok_or_else(|| NpyError::ShapeOverflow {
            shape: shape.to_vec(),
            dtype: dtype.name(),
        })
}

fn check_data_len(header: &Header, available: usize) -> Result<(), NpyError> {
    let needed = data_size(&header.shape, header.dtype)?;
    let shape = header.shape.clone();
    let dtype = header.dtype.name();
    match available.cmp(&needed) {
        std::cmp::Ordering::Equal => Ok(()),
        std::cmp::Ordering::Less => Err(NpyError::TruncatedData {
            shape,
            dtype,
            needed,
            available,
        }),
        std::cmp::Ordering::Greater => Err(NpyError::TrailingData {
            shape,
            dtype,
            needed,
            available,
        }),
    }
}

/// Decodes little-endian elements; `bytes.len()` is a multiple of the element size.
fn decode(dtype: Dtype, bytes: &[u8]) -> NpyData {
    match dtype {
        Dtype::F64 => NpyData::F64(decode_le(bytes, f64::from_le_bytes)),
        Dtype::F32 => NpyData::F32(decode_le(bytes, f32::from_le_bytes)),
        Dtype::F16 => NpyData::F16(decode_le(bytes, u16::from_le_bytes)),
        Dtype::I64 => NpyData::I64(decode_le(bytes, i64::from_le_bytes)),
        Dtype::I32 => NpyData::I32(decode_le(bytes, i32::from_le_bytes)),
    }
}

fn decode_le<T, const N: usize>(bytes: &[u8], from_le: fn([u8; N]) -> T) -> Vec<T> {
    bytes
        .chunks_exact(N)
        .map(|chunk| {
            let mut array = [0u8; N];
            array.copy_from_slice(chunk);
            from_le(array)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The header dict parser: the subset of Python literals that .npy headers use
// ---------------------------------------------------------------------------------------------

/// A Python literal from the header.
#[derive(Debug)]
enum Value<'a> {
    Str(String),
    Bool(bool),
    None,
    /// An integer, kept as text so any size parses; `digits` has no sign.
    Int {
        negative: bool,
        digits: &'a str,
    },
    Tuple(Vec<Value<'a>>),
    List(Vec<Value<'a>>),
    Dict(Vec<(Value<'a>, Value<'a>)>),
}

impl Value<'_> {
    /// A short description for error messages.
    fn describe(&self) -> String {
        match self {
            Self::Str(s) => format!("the string '{s}'"),
            Self::Bool(true) => "True".to_owned(),
            Self::Bool(false) => "False".to_owned(),
            Self::None => "None".to_owned(),
            Self::Int { negative, digits } => {
                format!("the integer {}{digits}", if *negative { "-" } else { "" })
            }
            Self::Tuple(items) => format!("a tuple of {} items", items.len()),
            Self::List(items) => format!("a list of {} items", items.len()),
            Self::Dict(_) => "a dict".to_owned(),
        }
    }
}

/// A recursive-descent parser over the header text.
struct HeaderParser<'a> {
    text: &'a str,
    pos: usize,
    depth: usize,
}

impl<'a> HeaderParser<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            text,
            pos: 0,
            depth: 0,
        }
    }

    fn error(&self, reason: impl Into<String>) -> NpyError {
        NpyError::HeaderSyntax {
            reason: reason.into(),
            offset: self.pos,
        }
    }

    /// A syntax error for a missing token, saying so if the header simply ended.
    fn expected(&self, what: &str) -> NpyError {
        if self.pos >= self.text.len() {
            self.error(format!("unexpected end of header, expected {what}"))
        } else {
            self.error(format!("expected {what}"))
        }
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    /// Consumes `byte` if it is next (after whitespace).
    fn eat(&mut self, byte: u8) -> bool {
        self.skip_whitespace();
        if self.peek() == Some(byte) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// The whole header: one dict, then only whitespace (numpy pads with spaces and '\n').
    fn parse_dict_literal(mut self) -> Result<Vec<(String, Value<'a>)>, NpyError> {
        self.skip_whitespace();
        if self.peek() != Some(b'{') {
            return Err(self.error("expected '{' at the start of the header"));
        }
        let Value::Dict(entries) = self.value()? else {
            return Err(self.error("expected a dict"));
        };
        self.skip_whitespace();
        if self.pos < self.text.len() {
            return Err(self.error("unexpected text after the closing '}'"));
        }
        entries
            .into_iter()
            .map(|(key, value)| match key {
                Value::Str(key) => Ok((key, value)),
                other => Err(self.error(format!(
                    "dict keys must be strings, found {}",
                    other.describe()
                ))),
            })
            .collect()
    }

    fn value(&mut self) -> Result<Value<'a>, NpyError> {
        self.skip_whitespace();
        match self.peek() {
            None => Err(self.expected("a value")),
            Some(quote @ (b'\'' | b'"')) => self.string(quote),
            Some(b'(') => self.nested(Self::tuple),
            Some(b'[') => self.nested(Self::list),
            Some(b'{') => self.nested(Self::dict),
            Some(b'-' | b'+' | b'0'..=b'9') => self.integer(),
            Some(b) if b.is_ascii_alphabetic() => self.word(),
            Some(_) => {
                let c = self
                    .text
                    .get(self.pos..)
                    .and_then(|rest| rest.chars().next());
                Err(self.error(format!("unexpected character {:?}", c.unwrap_or_default())))
            }
        }
    }

    /// Parses a container, limiting the nesting depth so hostile input cannot overflow the stack.
    fn nested(
        &mut self,
        parse: fn(&mut Self) -> Result<Value<'a>, NpyError>,
    ) -> Result<Value<'a>, NpyError> {
        if self.depth >= MAX_DEPTH {
            return Err(self.error(format!("nested deeper than {MAX_DEPTH} levels")));
        }
        self.depth += 1;
        self.pos += 1; // the opening bracket
        let value = parse(self);
        self.depth -= 1;
        value
    }

    /// After `(`: `()`, `(x,)`, `(x, y)`, `(x, y,)`; `(x)` is just `x`, as in Python.
    fn tuple(&mut self) -> Result<Value<'a>, NpyError> {
        if self.eat(b')') {
            return Ok(Value::Tuple(Vec::new()));
        }
        let first = self.value()?;
        if self.eat(b')') {
            return Ok(first);
        }
        if !self.eat(b',') {
            return Err(self.expected("',' or ')' in a tuple"));
        }
        let mut items = vec![first];
        self.items_until(b')', &mut items)?;
        Ok(Value::Tuple(items))
    }

    /// After `[`.
    fn list(&mut self) -> Result<Value<'a>, NpyError> {
        let mut items = Vec::new();
        self.items_until(b']', &mut items)?;
        Ok(Value::List(items))
    }

    /// Comma-separated values up to `close`, a trailing comma allowed.
    fn items_until(&mut self, close: u8, items: &mut Vec<Value<'a>>) -> Result<(), NpyError> {
        loop {
            if self.eat(close) {
                return Ok(());
            }
            items.push(self.value()?);
            if self.eat(close) {
                return Ok(());
            }
            if !self.eat(b',') {
                return Err(self.expected(&format!("',' or '{}'", char::from(close))));
            }
        }
    }

    /// After `{`: `key: value` pairs, a trailing comma allowed.
    fn dict(&mut self) -> Result<Value<'a>, NpyError> {
        let mut entries = Vec::new();
        loop {
            if self.eat(b'}') {
                return Ok(Value::Dict(entries));
            }
            let key = self.value()?;
            if !self.eat(b':') {
                return Err(self.expected("':' after a dict key"));
            }
            let value = self.value()?;
            entries.push((key, value));
            if self.eat(b'}') {
                return Ok(Value::Dict(entries));
            }
            if !self.eat(b',') {
                return Err(self.expected("',' or '}' in the dict"));
            }
        }
    }

    /// A single- or double-quoted string; `\\`, `\'` and `\"` are unescaped, other
    /// backslashes are kept as written.
    fn string(&mut self, quote: u8) -> Result<Value<'a>, NpyError> {
        let start = self.pos;
        self.pos += 1;
        let mut bytes = Vec::new();
        loop {
            match self.peek() {
                None => {
                    self.pos = start;
                    return Err(self.error("unterminated string"));
                }
                Some(b) if b == quote => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(c @ (b'\\' | b'\'' | b'"')) => {
                            bytes.push(c);
                            self.pos += 1;
                        }
                        _ => bytes.push(b'\\'),
                    }
                }
                Some(b) => {
                    bytes.push(b);
                    self.pos += 1;
                }
            }
        }
        // Only ASCII bytes were removed from valid UTF-8, so this cannot fail; stay safe anyway.
        String::from_utf8(bytes)
            .map(Value::Str)
            .map_err(|_| self.error("string is not valid UTF-8"))
    }

    /// An integer such as `3`, `-1` or Python 2's `3L`.
    fn integer(&mut self) -> Result<Value<'a>, NpyError> {
        let negative = self.peek() == Some(b'-');
        if matches!(self.peek(), Some(b'-' | b'+')) {
            self.pos += 1;
        }
        let start = self.pos;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.expected("digits after the sign"));
        }
        let digits = self.text.get(start..self.pos).unwrap_or_default();
        if matches!(self.peek(), Some(b'L' | b'l')) {
            self.pos += 1;
        }
        if self
            .peek()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'.')
        {
            return Err(self.error("expected an integer"));
        }
        // Normalise "007" to "7" so "-0" and "-00" are both zero.
        let trimmed = digits.trim_start_matches('0');
        let digits = if trimmed.is_empty() { "0" } else { trimmed };
        Ok(Value::Int { negative, digits })
    }

    /// `True`, `False` or `None`.
    fn word(&mut self) -> Result<Value<'a>, NpyError> {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            self.pos += 1;
        }
        match self.text.get(start..self.pos).unwrap_or_default() {
            "True" => Ok(Value::Bool(true)),
            "False" => Ok(Value::Bool(false)),
            "None" => Ok(Value::None),
            word => {
                let reason = format!("unknown name '{word}' (expected True, False or None)");
                self.pos = start;
                Err(self.error(reason))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------

/// Encodes an array as the bytes of a `.npy` file, exactly as `np.save` would write it.
///
/// # Errors
///
/// [`NpyError::LengthMismatch`] if the product of `shape` is not `data.len()`,
/// [`NpyError::ShapeOverflow`] if the size in bytes does not fit in `usize`.
pub fn to_bytes(shape: &[usize], data: &NpyData) -> Result<Vec<u8>, NpyError> {
    let preamble = preamble(shape, data)?;
    let data_bytes = data.len() * data.kind().size(); // checked by `preamble`
    let mut out = Vec::with_capacity(preamble.len() + data_bytes);
    out.extend_from_slice(&preamble);
    let Ok(()) = encode_chunks(data, |chunk| {
        out.extend_from_slice(chunk);
        Ok::<(), Infallible>(())
    });
    Ok(out)
}

/// Writes an array to a `.npy` file, atomically: the bytes go to a new temporary file
/// `.<name>.tmp-<pid>-<n>` in the same directory, which is then renamed over `path`. On any
/// error the temporary file is removed, so no half-written output is ever left at `path`
/// (an existing file there stays as it was). There is no fsync: the rename is atomic for
/// other processes, not against a power cut.
///
/// # Errors
///
/// The errors of [`to_bytes`], before the file system is touched; then [`NpyError::Io`]
/// naming `path` if the temporary file cannot be created or written or cannot be renamed.
pub fn write(path: &Path, shape: &[usize], data: &NpyData) -> Result<(), NpyError> {
    let preamble = preamble(shape, data)?;
    let temp = temp_path(path)?;
    let result = write_new_file(path, &temp, &preamble, data).and_then(|()| {
        fs::rename(&temp, path).map_err(|source| NpyError::Io {
            action: "cannot move the temporary file into place at",
            path: path.to_owned(),
            source,
        })
    });
    if result.is_err() {
        // Best effort: the temporary file may not even have been created.
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Writes an array as a `.npy` file's bytes to `writer` (a file, a pipe, a device), as
/// `np.save` would. Nothing is staged: for an atomic file use [`write`].
///
/// # Errors
///
/// The errors of [`to_bytes`] (as `InvalidInput`, before anything is written), then the
/// writer's own.
pub fn write_to(writer: &mut impl Write, shape: &[usize], data: &NpyData) -> io::Result<()> {
    let preamble =
        preamble(shape, data).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    writer.write_all(&preamble)?;
    encode_chunks(data, |chunk| writer.write_all(chunk))
}

/// Writes the elements of `data`, little-endian, as they follow a [`header_for`] preamble.
///
/// # Errors
///
/// The writer's.
pub fn write_elements(writer: &mut impl Write, data: &NpyData) -> io::Result<()> {
    encode_chunks(data, |chunk| writer.write_all(chunk))
}

/// `.<name>.tmp-<pid>-<n>` next to `path`; `n` keeps concurrent writes in one process apart.
fn temp_path(path: &Path) -> Result<PathBuf, NpyError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().ok_or_else(|| NpyError::Io {
        action: "cannot write",
        path: path.to_owned(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "the path has no file name"),
    })?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(
        ".tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    Ok(path.with_file_name(temp_name))
}

/// Creates `temp` (which must not exist) and writes the whole file into it.
fn write_new_file(
    path: &Path,
    temp: &Path,
    preamble: &[u8],
    data: &NpyData,
) -> Result<(), NpyError> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(temp)
        .map_err(|source| NpyError::Io {
            action: "cannot create a temporary file next to",
            path: path.to_owned(),
            source,
        })?;
    file.write_all(preamble)
        .and_then(|()| encode_chunks(data, |chunk| file.write_all(chunk)))
        .map_err(|source| NpyError::Io {
            action: "cannot write",
            path: path.to_owned(),
            source,
        })
}

/// Validates `shape` against `data` and returns magic, version, header length and header.
fn preamble(shape: &[usize], data: &NpyData) -> Result<Vec<u8>, NpyError> {
    let expected = element_count(shape).unwrap_or_default(); // Some: checked by header_for
    let preamble = header_for(shape, data)?;
    if expected != data.len() {
        return Err(NpyError::LengthMismatch {
            shape: shape.to_vec(),
            expected,
            actual: data.len(),
        });
    }
    Ok(preamble)
}

/// The preamble (magic, version, header length and header) of an array of `shape` with the
/// dtype of `like`, whatever `like` holds: for a writer that writes the elements in pieces
/// after it, with [`write_elements`] (the CLI's streamed outputs).
///
/// # Errors
///
/// [`NpyError::ShapeOverflow`], [`NpyError::HeaderTooLarge`].
pub fn header_for(shape: &[usize], like: &NpyData) -> Result<Vec<u8>, NpyError> {
    let dtype = like.kind();
    data_size(shape, dtype)?;
    let header = header_text(shape, dtype);
    wrap_header(&header, 1, 2)
        .or_else(|| wrap_header(&header, 2, 4))
        .ok_or(NpyError::HeaderTooLarge { len: header.len() })
}

/// The header dict as `np.save` writes it, before padding: keys sorted, a trailing `", "`,
/// and room for the first dimension to grow to 21 digits.
fn header_text(shape: &[usize], dtype: Dtype) -> String {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let shape_text = match dims.as_slice() {
        [one] => format!("({one},)"),
        _ => format!("({})", dims.join(", ")),
    };
    let growth = dims.first().map_or(0, |first| {
        GROWTH_AXIS_MAX_DIGITS.saturating_sub(first.len())
    });
    format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {shape_text}, }}{}",
        dtype.descr(),
        " ".repeat(growth)
    )
}

/// Prefixes the magic string, the version and the length, and pads with spaces and a final
/// `'\n'` to a multiple of 64 bytes, as numpy does (always at least one space). `None` if the
/// length does not fit in `len_size` bytes.
fn wrap_header(header: &str, major: u8, len_size: usize) -> Option<Vec<u8>> {
    let prefix_len = MAGIC.len() + 2 + len_size;
    let unpadded = prefix_len + header.len() + 1;
    let padding = ALIGN - unpadded % ALIGN;
    let header_len = header.len() + padding + 1;
    let len_bytes = u64::try_from(header_len).ok()?.to_le_bytes();
    let (used, unused) = len_bytes.split_at_checked(len_size)?;
    if unused.iter().any(|&b| b != 0) {
        return None;
    }
    let mut out = Vec::with_capacity(prefix_len + header_len);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[major, 0]);
    out.extend_from_slice(used);
    out.extend_from_slice(header.as_bytes());
    out.resize(out.len() + padding, b' ');
    out.push(b'\n');
    Some(out)
}

/// Encodes the elements little-endian, handing `sink` a few hundred KiB at a time.
fn encode_chunks<E>(data: &NpyData, sink: impl FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
    match data {
        NpyData::F64(v) => encode_le(v, sink, f64::to_le_bytes),
        NpyData::F32(v) => encode_le(v, sink, f32::to_le_bytes),
        NpyData::F16(v) => encode_le(v, sink, u16::to_le_bytes),
        NpyData::I64(v) => encode_le(v, sink, i64::to_le_bytes),
        NpyData::I32(v) => encode_le(v, sink, i32::to_le_bytes),
    }
}

fn encode_le<T: Copy, E, const N: usize>(
    values: &[T],
    mut sink: impl FnMut(&[u8]) -> Result<(), E>,
    to_le: fn(T) -> [u8; N],
) -> Result<(), E> {
    let mut buffer = Vec::with_capacity(CHUNK_ELEMENTS.min(values.len()) * N);
    for chunk in values.chunks(CHUNK_ELEMENTS) {
        buffer.clear();
        buffer.extend(chunk.iter().flat_map(|&x| to_le(x)));
        sink(&buffer)?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// The bytes of tests/data/`name`.npy: files written by NumPy 2.4 (`np.save`, or
    /// `np.lib.format.write_array` for versions 2.0 and 3.0), kept as written:
    /// - `f32_2d`: np.array([[1.5, -2], [3, 4]], dtype=np.float32)
    /// - `f16_1d`: np.array([1, -2.5, 65504, 0.099975586], dtype=np.float16)
    /// - `i64_0d`: np.array(-7, dtype=np.int64)
    /// - `i32_1d`: np.array([1, -2, 2147483647], dtype=np.int32)
    /// - `f32_0d`: np.array(0.25, dtype=np.float32)
    /// - `i64_empty`: np.zeros((0,), dtype=np.int64)
    /// - `i64_3d`: np.arange(-3, 9, dtype=np.int64).reshape(2, 3, 2)
    /// - `f32_v2`: np.array([1, 2, 3], dtype=np.float32), format version 2.0
    /// - `i32_v3`: np.array([[5], [6]], dtype=np.int32), format version 3.0
    /// - `f64_1d`: np.array([1.0]) (float64)
    /// - `f32_big_endian`: np.array([1.0], dtype='>f4') (big-endian: unsupported)
    /// - `f32_fortran`: np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3))
    fn fixture(name: &str) -> Vec<u8> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
        std::fs::read(dir.join(format!("{name}.npy"))).unwrap()
    }

    /// A format 1.0 file with the given header text, unpadded, and data bytes.
    fn npy(header: &str, data: &[u8]) -> Vec<u8> {
        npy_versioned(1, header.as_bytes(), data)
    }

    fn npy_versioned(major: u8, header: &[u8], data: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[major, 0]);
        if major == 1 {
            out.extend_from_slice(&u16::try_from(header.len()).unwrap().to_le_bytes());
        } else {
            out.extend_from_slice(&u32::try_from(header.len()).unwrap().to_le_bytes());
        }
        out.extend_from_slice(header);
        out.extend_from_slice(data);
        out
    }

    /// A header dict for `descr` and `shape` (Python syntax), C order.
    fn dict(descr: &str, shape: &str) -> String {
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}")
    }

    fn error(bytes: &[u8]) -> String {
        match parse(bytes) {
            Ok(array) => panic!("expected an error, parsed {array:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn assert_error_contains(bytes: &[u8], expected: &str) {
        let message = error(bytes);
        assert!(
            message.contains(expected),
            "message {message:?} does not contain {expected:?}"
        );
    }

    fn roundtrip(shape: &[usize], data: NpyData) {
        let bytes = to_bytes(shape, &data).unwrap();
        let header_end = bytes.len() - data.len() * data.kind().size();
        assert_eq!(header_end % ALIGN, 0, "data must start 64-byte aligned");
        assert_eq!(bytes[header_end - 1], b'\n');
        let array = parse(&bytes).unwrap();
        assert_eq!(array.shape, shape);
        assert_eq!(array.data, data);
    }

    fn sample(dtype: Dtype, n: usize) -> NpyData {
        let i = 0..n;
        match dtype {
            Dtype::F64 => NpyData::F64(i.map(|i| i as f64 * -1.25e-3 + 0.1).collect()),
            Dtype::F32 => NpyData::F32(i.map(|i| i as f32 * -1.25 + 0.5).collect()),
            Dtype::F16 => NpyData::F16(i.map(|i| (i as u16).wrapping_mul(2_654)).collect()),
            Dtype::I64 => NpyData::I64(i.map(|i| (i as i64 - 3) * 1_000_000_000_007).collect()),
            Dtype::I32 => NpyData::I32(i.map(|i| (i as i32 - 3) * 1_000_003).collect()),
        }
    }

    const DTYPES: [Dtype; 5] = [Dtype::F64, Dtype::F32, Dtype::F16, Dtype::I64, Dtype::I32];

    #[test]
    fn round_trips_every_dtype_and_rank() {
        let shapes: [&[usize]; 8] = [
            &[],
            &[1],
            &[5],
            &[0],
            &[2, 3],
            &[3, 0],
            &[2, 0, 3],
            &[2, 1, 3, 1],
        ];
        for dtype in DTYPES {
            for shape in shapes {
                roundtrip(shape, sample(dtype, shape.iter().product()));
            }
        }
    }

    #[test]
    fn round_trip_keeps_every_float_bit() {
        let bits = [
            0x7fc0_0001,
            0xffc0_1234,
            0x8000_0000,
            0x7f80_0000,
            0xff80_0000,
            1,
            0x7f7f_ffff,
        ];
        let floats: Vec<f32> = bits.iter().map(|&b| f32::from_bits(b)).collect();
        let array = parse(&to_bytes(&[7], &NpyData::F32(floats)).unwrap()).unwrap();
        let NpyData::F32(back) = array.data else {
            panic!("wrong dtype")
        };
        let back: Vec<u32> = back.iter().map(|x| x.to_bits()).collect();
        assert_eq!(back, bits);

        let halves = vec![0x7e01, 0xfc00, 0x8000, 0x0001, 0x7bff, 0x3c00];
        roundtrip(&[2, 3], NpyData::F16(halves));
        roundtrip(&[3], NpyData::I64(vec![i64::MIN, -1, i64::MAX]));
        roundtrip(&[3], NpyData::I32(vec![i32::MIN, 0, i32::MAX]));
    }

    #[test]
    fn data_accessors() {
        let data = NpyData::F16(vec![1, 2, 3]);
        assert_eq!(
            (data.dtype(), data.len(), data.is_empty()),
            ("float16", 3, false)
        );
        let data = NpyData::I32(Vec::new());
        assert_eq!(
            (data.dtype(), data.len(), data.is_empty()),
            ("int32", 0, true)
        );
        assert_eq!(NpyData::F32(vec![0.0]).dtype(), "float32");
        assert_eq!(NpyData::I64(vec![0]).dtype(), "int64");
    }

    /// Files numpy wrote (version 1.0 headers, padded as `np.save` pads them), with the shape
    /// and data they hold.
    fn numpy_files() -> Vec<(Vec<u8>, &'static [usize], NpyData)> {
        vec![
            (
                fixture("f32_2d"),
                &[2, 2],
                NpyData::F32(vec![1.5, -2.0, 3.0, 4.0]),
            ),
            (
                fixture("f16_1d"),
                &[4],
                NpyData::F16(vec![0x3c00, 0xc100, 0x7bff, 0x2e66]),
            ),
            (fixture("i64_0d"), &[], NpyData::I64(vec![-7])),
            (fixture("i32_1d"), &[3], NpyData::I32(vec![1, -2, i32::MAX])),
            (fixture("f32_0d"), &[], NpyData::F32(vec![0.25])),
            (fixture("i64_empty"), &[0], NpyData::I64(vec![])),
            (
                fixture("i64_3d"),
                &[2, 3, 2],
                NpyData::I64((-3..9).collect()),
            ),
        ]
    }

    #[test]
    fn reads_numpy_files() {
        let mut cases = numpy_files();
        // Versions 2.0 and 3.0 of the format, which the writer never produces.
        cases.push((fixture("f32_v2"), &[3], NpyData::F32(vec![1.0, 2.0, 3.0])));
        cases.push((fixture("i32_v3"), &[2, 1], NpyData::I32(vec![5, 6])));
        for (bytes, shape, data) in cases {
            let array = parse(&bytes).unwrap();
            assert_eq!(array.shape, shape);
            assert_eq!(array.data, data);
        }
    }

    #[test]
    fn writes_exactly_what_numpy_writes() {
        let cases = numpy_files();
        for (bytes, shape, data) in cases {
            assert_eq!(
                to_bytes(shape, &data).unwrap(),
                bytes,
                "shape {shape:?} {}",
                data.dtype()
            );
        }
    }

    #[test]
    fn reads_float64() {
        let array = parse(&fixture("f64_1d")).unwrap();
        assert_eq!(array.shape, [1]);
        assert_eq!(array.data, NpyData::F64(vec![1.0]));
        assert_eq!(to_bytes(&[1], &array.data).unwrap(), fixture("f64_1d"));
    }

    #[test]
    fn rejects_numpy_files_of_unsupported_kinds() {
        assert_eq!(
            error(&fixture("f32_big_endian")),
            "dtype '>f4' (float32) is big-endian: only little-endian data is supported, \
             convert with arr.astype('<f4')"
        );
        assert_eq!(
            error(&fixture("f32_fortran")),
            "Fortran-order arrays are not supported: save with np.ascontiguousarray"
        );
    }

    #[test]
    fn writes_version_2_when_the_header_is_long() {
        let shape = vec![1; 25_000];
        let bytes = to_bytes(&shape, &NpyData::I32(vec![42])).unwrap();
        assert_eq!(&bytes[6..8], &[2, 0]);
        assert_eq!((bytes.len() - 4) % ALIGN, 0);
        let array = parse(&bytes).unwrap();
        assert_eq!((array.shape, array.data), (shape, NpyData::I32(vec![42])));
        // Just below the limit stays version 1.0.
        let bytes = to_bytes(&[3; 12], &NpyData::I32(vec![0; 531_441])).unwrap();
        assert_eq!(&bytes[6..8], &[1, 0]);
    }

    #[test]
    fn header_syntax_variants_parse() {
        let headers = [
            "{'shape': (3,), 'fortran_order': False, 'descr': '<i4'}",
            "{\"descr\": \"<i4\", \"fortran_order\": False, \"shape\": (3,)}",
            " {\n 'descr' :'<i4' ,\t'fortran_order':False,'shape':( 3 , ) , } \n",
            "{'descr': '<i4', 'fortran_order': False, 'shape': (3L,), }",
            "{'descr': '<i4', 'fortran_order': False, 'shape': (+3,), }",
            "{'descr': '|i4', 'fortran_order': False, 'shape': (3,), }",
            "{'descr': '=i4', 'fortran_order': False, 'shape': (3,), }",
            "{'descr': 'i4', 'fortran_order': False, 'shape': (3,), }",
            "{'descr': '<i4', 'fortran_order': False, 'shape': (1, 3, 1,), }",
            "{'descr': '<i4', 'fortran_order': False, 'shape': (003,), }",
        ];
        let data = [1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0];
        for header in headers {
            let array = parse(&npy(header, &data)).unwrap_or_else(|e| panic!("{header}: {e}"));
            assert_eq!(array.data, NpyData::I32(vec![1, 2, 3]), "{header}");
        }
        let array = parse(&npy(&dict("<f4", "()"), &[0, 0, 0x80, 0x3f])).unwrap();
        assert_eq!((array.shape, array.data), (vec![], NpyData::F32(vec![1.0])));
        // `-0` is zero, and zero-sized dimensions need no data at all.
        let array = parse(&npy(&dict("<f2", "(-0, 99999999999999)"), &[])).unwrap();
        assert_eq!(
            (array.shape, array.data),
            (vec![0, 99_999_999_999_999], NpyData::F16(vec![]))
        );
    }

    #[test]
    fn error_bad_magic() {
        assert_eq!(
            error(b"PK\x03\x04 definitely a zip file"),
            "not a .npy file: it does not start with the magic string \\x93NUMPY"
        );
        assert_eq!(error(b"\x93NUMP!\x01\x00"), error(b"x"));
    }

    #[test]
    fn error_unsupported_version() {
        let mut bytes = fixture("f32_2d");
        bytes[6] = 4;
        assert_eq!(
            error(&bytes),
            "unsupported .npy format version 4.0: only 1.0, 2.0 and 3.0 are supported"
        );
        bytes[6] = 1;
        bytes[7] = 1;
        assert_error_contains(&bytes, "version 1.1");
    }

    #[test]
    fn error_truncated_header() {
        assert_eq!(
            error(b""),
            "truncated .npy header: needs 10 bytes, the input has 0"
        );
        assert_eq!(
            error(b"\x93NUMPY\x01"),
            "truncated .npy header: needs 10 bytes, the input has 7"
        );
        assert_eq!(
            error(b"\x93NUMPY\x02\x00\x10\x00"),
            "truncated .npy header: needs 12 bytes, the input has 10"
        );
        assert_eq!(
            error(&fixture("f32_2d")[..60]),
            "truncated .npy header: needs 128 bytes, the input has 60"
        );
    }

    #[test]
    fn error_header_encoding() {
        let header = dict("<f4", "(1,)").replace("descr", "d\u{e9}scr");
        assert_eq!(
            error(&npy(&header, &[0; 4])),
            "the .npy header is not valid ASCII (format 1.0)"
        );
        // Format 3.0 allows UTF-8, so the same header gets as far as the key check ...
        assert_eq!(
            error(&npy_versioned(3, header.as_bytes(), &[0; 4])),
            "the .npy header has an unexpected key 'd\u{e9}scr': only 'descr', 'fortran_order' \
             and 'shape' are allowed"
        );
        // ... but not invalid UTF-8.
        let mut header = dict("<f4", "(1,)").into_bytes();
        header[3] = 0xff;
        assert_eq!(
            error(&npy_versioned(3, &header, &[0; 4])),
            "the .npy header is not valid UTF-8 (format 3.0)"
        );
    }

    #[test]
    fn error_header_syntax() {
        let cases = [
            (
                "['descr', '<f4']",
                "expected '{' at the start of the header at byte 0",
            ),
            ("", "expected '{' at the start of the header at byte 0"),
            ("{'descr': '<f4'", "unexpected end of header"),
            ("{'descr' '<f4'}", "expected ':' after a dict key at byte 9"),
            (
                "{'descr': '<f4' 'shape': ()}",
                "expected ',' or '}' in the dict",
            ),
            (
                "{'descr': '<f4'} x",
                "unexpected text after the closing '}' at byte 17",
            ),
            ("{'descr': '<f4'}}", "unexpected text after the closing '}'"),
            ("{'descr: '<f4'}", "expected ':' after a dict key"),
            ("{'descr': '<f4}", "unterminated string at byte 10"),
            (
                "{'fortran_order': false}",
                "unknown name 'false' (expected True, False or None) at byte 18",
            ),
            ("{'shape': (3 4)}", "expected ',' or ')' in a tuple"),
            ("{'shape': (3, 4]}", "expected ',' or ')'"),
            ("{'shape': (1.5,)}", "expected an integer"),
            ("{'shape': (-,)}", "expected digits after the sign"),
            ("{'shape': @}", "unexpected character '@'"),
            (
                "{(1,): 2}",
                "dict keys must be strings, found a tuple of 1 items",
            ),
            (
                &format!("{{'shape': {}}}", "(".repeat(100)),
                "nested deeper than 16 levels",
            ),
        ];
        for (header, expected) in cases {
            let message = error(&npy(header, &[]));
            assert!(
                message.starts_with("the .npy header is not a valid Python dict literal: ")
                    && message.contains(expected),
                "{header}: {message}"
            );
        }
    }

    #[test]
    fn error_missing_and_unexpected_keys() {
        let cases = [
            (
                "{'fortran_order': False, 'shape': ()}",
                "the .npy header has no 'descr' key",
            ),
            (
                "{'descr': '<f4', 'shape': ()}",
                "the .npy header has no 'fortran_order' key",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False}",
                "the .npy header has no 'shape' key",
            ),
            ("{}", "the .npy header has no 'descr' key"),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (), 'extra': 1}",
                "the .npy header has an unexpected key 'extra': only 'descr', 'fortran_order' \
                 and 'shape' are allowed",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (), 'shape': ()}",
                "invalid 'shape' in the .npy header: the key appears more than once",
            ),
        ];
        for (header, expected) in cases {
            assert_eq!(error(&npy(header, &[0; 4])), expected, "{header}");
        }
    }

    #[test]
    fn error_bad_header_values() {
        let cases = [
            (
                "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': ()}",
                "invalid 'descr' in the .npy header: structured dtypes (a list of fields) are not \
                 supported: save a plain float32, float16, int64 or int32 array",
            ),
            (
                "{'descr': 4, 'fortran_order': False, 'shape': ()}",
                "invalid 'descr' in the .npy header: expected a dtype string such as '<f4', found \
                 the integer 4",
            ),
            (
                "{'descr': '<f4', 'fortran_order': 0, 'shape': ()}",
                "invalid 'fortran_order' in the .npy header: expected True or False, found the \
                 integer 0",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': [3]}",
                "invalid 'shape' in the .npy header: expected a tuple of non-negative integers, \
                 found a list of 1 items",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (3)}",
                "invalid 'shape' in the .npy header: expected a tuple of non-negative integers, \
                 found the integer 3",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (None,)}",
                "invalid 'shape' in the .npy header: expected a tuple of non-negative integers, \
                 found None in it",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (2, -3)}",
                "invalid 'shape' in the .npy header: dimension -3 is negative",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (123456789012345678901234567890,)}",
                "invalid 'shape' in the .npy header: dimension 123456789012345678901234567890 is \
                 too large",
            ),
        ];
        for (header, expected) in cases {
            assert_eq!(error(&npy(header, &[0; 4])), expected, "{header}");
        }
    }

    #[test]
    fn error_unsupported_dtypes() {
        let cases = [
            (
                "<f16",
                "dtype '<f16' (longdouble) is not supported: use float64, float32 or float16",
            ),
            (
                "|u1",
                "dtype '|u1' (uint8) is not supported: use int64 or int32",
            ),
            (
                "<i2",
                "dtype '<i2' (int16) is not supported: use int64 or int32",
            ),
            (
                "|b1",
                "dtype '|b1' (bool) is not supported: use int64 or int32",
            ),
            (
                "|O",
                "dtype '|O' (object) is not supported: supported dtypes are float64, float32, float16, int64 and int32",
            ),
            (
                "<U5",
                "dtype '<U5' (unicode string) is not supported: supported dtypes are float64, float32, float16, int64 and int32",
            ),
            (
                "<M8[ns]",
                "dtype '<M8[ns]' (datetime64) is not supported: supported dtypes are float64, float32, float16, int64 and int32",
            ),
            (
                "",
                "dtype '' (unknown type) is not supported: supported dtypes are float64, float32, float16, int64 and int32",
            ),
            (
                ">f8",
                "dtype '>f8' (float64) is big-endian: only little-endian data is supported, \
                 convert with arr.astype('<f8')",
            ),
        ];
        for (descr, expected) in cases {
            assert_eq!(error(&npy(&dict(descr, "()"), &[0; 8])), expected);
        }
    }

    #[test]
    fn error_big_endian() {
        assert_eq!(
            error(&npy(&dict(">i8", "(1,)"), &[0; 8])),
            "dtype '>i8' (int64) is big-endian: only little-endian data is supported, \
             convert with arr.astype('<i8')"
        );
        assert!(matches!(
            parse(&npy(&dict(">f2", "()"), &[0; 2])),
            Err(NpyError::BigEndian { .. })
        ));
    }

    #[test]
    fn error_fortran_order() {
        let header = "{'descr': '<f4', 'fortran_order': True, 'shape': (1,)}";
        assert_eq!(
            error(&npy(header, &[0; 4])),
            "Fortran-order arrays are not supported: save with np.ascontiguousarray"
        );
    }

    #[test]
    fn error_shape_overflow() {
        let shape = format!("({}, 2, 2)", usize::MAX / 2);
        assert_eq!(
            error(&npy(&dict("<i4", &shape), &[])),
            format!(
                "shape [{}, 2, 2] int32 is too large: its size in bytes does not fit in usize",
                usize::MAX / 2
            )
        );
        // The element count fits, the byte count does not.
        let shape = format!("({},)", usize::MAX / 2 + 1);
        assert!(matches!(
            parse(&npy(&dict("<f2", &shape), &[])),
            Err(NpyError::ShapeOverflow { .. })
        ));
        assert!(matches!(
            to_bytes(&[usize::MAX, 2], &NpyData::F32(vec![])),
            Err(NpyError::ShapeOverflow { .. })
        ));
    }

    #[test]
    fn error_truncated_data() {
        assert_eq!(
            error(&npy(&dict("<f4", "(3, 4)"), &[0; 20])),
            "truncated: shape [3, 4] float32 needs 48 bytes of data, file has 20"
        );
        // A corrupt header claiming a huge shape is caught before anything is allocated.
        assert_eq!(
            error(&npy(&dict("<f4", "(1000000000000000,)"), &[0; 8])),
            "truncated: shape [1000000000000000] float32 needs 4000000000000000 bytes of data, file has 8"
        );
        let f32_2d = fixture("f32_2d");
        assert_error_contains(
            &f32_2d[..f32_2d.len() - 1],
            "needs 16 bytes of data, file has 15",
        );
        assert_error_contains(
            &fixture("i64_0d")[..128],
            "truncated: shape [] int64 needs 8 bytes of data, file has 0",
        );
    }

    #[test]
    fn error_trailing_data() {
        let mut bytes = fixture("i32_1d");
        bytes.extend_from_slice(b"junk");
        assert_eq!(
            error(&bytes),
            "trailing data: shape [3] int32 needs 12 bytes of data, file has 16 (4 extra)"
        );
    }

    #[test]
    fn error_length_mismatch_when_writing() {
        let message = to_bytes(&[3, 4], &NpyData::F32(vec![0.0; 10]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "shape [3, 4] needs 12 elements, but the data has 10"
        );
        let message = to_bytes(&[], &NpyData::I64(vec![]))
            .unwrap_err()
            .to_string();
        assert_eq!(message, "shape [] needs 1 elements, but the data has 0");
    }

    /// A fresh, empty directory for one test.
    fn scratch_dir(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("npy-test-{}-{test}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn dir_entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn write_then_read_leaves_no_temporary_file() {
        let dir = scratch_dir("write");
        let path = dir.join("logits.npy");
        let data = NpyData::F32(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        write(&path, &[2, 3], &data).unwrap();
        assert_eq!(dir_entries(&dir), ["logits.npy"]);
        assert_eq!(
            read(&path).unwrap(),
            NpyArray {
                shape: vec![2, 3],
                data
            }
        );

        // Overwriting replaces the file.
        write(&path, &[], &NpyData::I64(vec![9])).unwrap();
        assert_eq!(read(&path).unwrap().data, NpyData::I64(vec![9]));
        assert_eq!(dir_entries(&dir), ["logits.npy"]);

        // A failed write leaves the old file as it was, and nothing else.
        let err = write(&path, &[5], &NpyData::I64(vec![1])).unwrap_err();
        assert!(matches!(err, NpyError::LengthMismatch { .. }));
        assert_eq!(read(&path).unwrap().data, NpyData::I64(vec![9]));
        assert_eq!(dir_entries(&dir), ["logits.npy"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn write_into_missing_directory_fails_and_leaves_nothing() {
        let dir = scratch_dir("missing").join("no-such-dir");
        let path = dir.join("out.npy");
        let err = write(&path, &[1], &NpyData::I32(vec![1])).unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with("cannot create a temporary file next to ")
                && message.contains("out.npy"),
            "{message}"
        );
        assert!(std::error::Error::source(&err).is_some());
        assert!(!dir.exists());
        fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }

    #[test]
    fn write_to_a_directory_path_fails_and_leaves_nothing() {
        let dir = scratch_dir("isdir");
        fs::create_dir(dir.join("taken.npy")).unwrap();
        let err = write(&dir.join("taken.npy"), &[1], &NpyData::I32(vec![1])).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot move the temporary file into place at "),
            "{err}"
        );
        assert_eq!(dir_entries(&dir), ["taken.npy"]);
        let err = write(Path::new("/"), &[1], &NpyData::I32(vec![1])).unwrap_err();
        assert_eq!(err.to_string(), "cannot write /: the path has no file name");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn read_errors_name_the_path() {
        let path = scratch_dir("read").join("absent.npy");
        let message = read(&path).unwrap_err().to_string();
        assert!(
            message.starts_with(&format!("cannot read {}: ", path.display())),
            "{message}"
        );
        fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }
}
