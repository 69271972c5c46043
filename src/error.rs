//! The one error type of the crate: every failure names what went wrong.

/// Everything that can go wrong, from bad input to a lost device.
///
/// The library never panics on bad input: each check returns one of these variants, and
/// its `Display` text names the offending row, value, length or option.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `rows` or `cols` is zero.
    #[error("empty input: the shape is {rows} x {cols}, but rows and cols must both be at least 1")]
    EmptyShape {
        /// Rows asked for.
        rows: usize,
        /// Columns asked for.
        cols: usize,
    },

    /// `rows * cols` does not fit in `usize` (or in the 64-bit index math).
    #[error("the shape {rows} x {cols} is too large to address")]
    ShapeOverflow {
        /// Rows asked for.
        rows: usize,
        /// Columns asked for.
        cols: usize,
    },

    /// A slice or buffer has the wrong number of elements for the shape.
    #[error("{what} has {actual} elements, but the shape needs {expected}")]
    LengthMismatch {
        /// Which input.
        what: &'static str,
        /// Elements the shape needs.
        expected: usize,
        /// Elements given.
        actual: usize,
    },

    /// A class-index target is neither in `0..cols` nor the ignore index.
    #[error(
        "label {value} in row {row} is outside 0..{cols} and is not the ignore index {ignore_index}"
    )]
    LabelOutOfRange {
        /// The row.
        row: usize,
        /// Its label.
        value: i64,
        /// Number of classes.
        cols: usize,
        /// The ignore index in force.
        ignore_index: i64,
    },

    /// An option has a value outside its domain (NaN, negative, out of range).
    #[error("invalid option {name} = {value}: {reason}")]
    InvalidOption {
        /// The option.
        name: &'static str,
        /// Its value, as text.
        value: String,
        /// What it must be.
        reason: &'static str,
    },

    /// A class weight is negative, NaN or infinite.
    #[error("class weight {index} is {value}: weights must be finite and >= 0")]
    InvalidWeight {
        /// The class.
        index: usize,
        /// Its weight.
        value: f32,
    },

    /// No adapter at all, or none that matches the requested backend / name.
    #[error("no GPU adapter found ({tried}). {hint}")]
    NoAdapter {
        /// What was asked for and what was found.
        tried: String,
        /// How to get an adapter.
        hint: &'static str,
    },

    /// The adapter lacks a feature or limit the operation needs.
    #[error("the adapter \"{adapter}\" cannot do this: {what}")]
    Unsupported {
        /// The adapter's name.
        adapter: String,
        /// What it lacks.
        what: String,
    },

    /// A device-resident buffer is too small or lacks a usage flag.
    #[error("buffer {what}: {problem}")]
    BadBuffer {
        /// Which buffer.
        what: &'static str,
        /// What is wrong with it.
        problem: String,
    },

    /// wgpu reported out-of-memory for an allocation or submission.
    #[error("the GPU ran out of memory: {0}")]
    OutOfMemory(String),

    /// wgpu reported a validation error (a bug in this crate or a misuse of the device API).
    #[error("wgpu validation error: {0}")]
    Validation(String),

    /// The device was lost; the [`crate::Context`] must be rebuilt.
    #[error("the GPU device was lost ({0}); build a new Context")]
    DeviceLost(String),

    /// Waiting for the GPU or mapping a buffer failed or timed out.
    #[error("waiting for the GPU failed: {0}")]
    Wait(String),
    /// The autotune file of `ContextOptions::autotune` (`Autotune::Persist`) cannot be used:
    /// unreadable, not JSON, not an autotune file, or with malformed entries for this adapter.
    /// The file is left as it is: delete it, or name another.
    #[error(
        "the autotune file {path} cannot be used: it {problem} (delete it, or name another file)"
    )]
    AutotuneFile {
        /// The file.
        path: String,
        /// What is wrong with it.
        problem: String,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
