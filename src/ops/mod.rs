//! The operations on a [`Context`]: host slices in and `Vec`s out (`host.rs`), or device
//! buffers in and out (`device.rs`). Both split batches too large for one storage binding
//! into chunks of whole rows.
//!
//! - `mod.rs`: the public argument types, and the helpers both paths share (strategy,
//!   chunking, the options as the kernels take them);
//! - `host.rs`: validate → upload one chunk of rows → dispatch (the row kernel) → read back
//!   (the loss is summed from the row losses on the CPU) → next chunk; one chunk loop for
//!   every host call, pipelined over two buffer sets when a call has several chunks;
//! - `device.rs`: the same dispatches recorded over the caller's buffers, no readback;
//! - `pool.rs`: the host path's device and staging buffers, pooled for reuse across calls.

mod device;
mod host;
mod host_async;
mod pool;

pub(crate) use host::{HostCall, HostJob, class_denominator};
pub(crate) use pool::HostPool;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::row_softmax;
use crate::kernels::{Precision, Slice, Specialisation, Strategy};
use crate::options::{CrossEntropyOptions, check_half, check_len, check_shape};

/// The targets of a host cross-entropy call.
#[derive(Debug, Clone, Copy)]
pub enum Targets<'a> {
    /// One class index per row, `[rows]` (PyTorch's class-index targets).
    Classes(&'a [i64]),
    /// A probability distribution per row, row-major `[rows, cols]` (PyTorch's probability
    /// targets). `ignore_index` does not apply; `Mean` divides by `rows`.
    Probabilities(&'a [f32]),
}

/// The targets of a device-resident cross-entropy call.
#[derive(Debug, Clone)]
pub enum DeviceTargets<'a> {
    /// i32 class indices, `[rows]`. Out-of-range labels that are not the ignore index make
    /// their row's loss and gradient NaN (they cannot be checked without a host round trip).
    Classes(wgpu::BufferSlice<'a>),
    /// f32 probabilities, `[rows, cols]`.
    Probabilities(wgpu::BufferSlice<'a>),
}

/// Buffers for the device-resident cross-entropy ([`Context::cross_entropy_device`]): slices
/// of the caller's buffers, `buffer.slice(..)` for a whole buffer or
/// `buffer.slice(offset..offset + size)` for a tensor inside a larger one (the offset a
/// multiple of the element size).
///
/// All slices need `BufferUsages::STORAGE`, except `loss` (`COPY_DST`) and `upstream`
/// (`COPY_SRC`). Slices the kernel writes (`grad`, `row_loss`, `lse`) must not share a
/// buffer with the slices it only reads (wgpu refuses a buffer bound both ways in one
/// dispatch); in place, leave `grad` out.
///
/// Speed: logits and gradient are read and written as 4-element vectors when both slices
/// can be bound as whole vectors (sizes rounded up to a multiple of 16 bytes for f32, 8 for
/// f16 and bf16, within the buffer); otherwise the kernel falls back to scalar access, which
/// is several times slower on lavapipe, most for bf16 (BENCHMARKS.md, rows not a multiple
/// of 4, and "Figures moved from code comments").
#[derive(Debug, Clone)]
pub struct DeviceCrossEntropy<'a> {
    /// Logits, row-major `[rows, cols]`, in `precision`.
    pub logits: wgpu::BufferSlice<'a>,
    /// The storage format of `logits` and `grad` (f32 unless you keep half-precision
    /// logits; the arithmetic is f32 either way). 2-byte data must be padded to a multiple
    /// of 4 bytes.
    pub precision: Precision,
    /// Class indices or probabilities.
    pub targets: DeviceTargets<'a>,
    /// Gradient output, `[rows, cols]` in `precision`; `None` writes the gradient over `logits`
    /// (in place: one `[rows, cols]` buffer per step instead of two).
    pub grad: Option<wgpu::BufferSlice<'a>>,
    /// Receives the reduced loss as one f32 (`None`: not written).
    pub loss: Option<wgpu::BufferSlice<'a>>,
    /// Receives the per-row losses, f32 `[rows]`.
    pub row_loss: Option<wgpu::BufferSlice<'a>>,
    /// Receives the per-row log-sum-exp, f32 `[rows]`.
    pub lse: Option<wgpu::BufferSlice<'a>>,
    /// The upstream gradient of each row's loss, f32 `[rows]`: row r of the gradient is
    /// multiplied by `upstream[r]` (with `Reduction::None`, the gradient of
    /// `sum_r upstream[r] * row_loss[r]`). The reduced loss is not affected.
    pub upstream: Option<wgpu::BufferSlice<'a>>,
}

/// Buffers for the device-resident softmax ([`Context::softmax_device`]), as slices like
/// [`DeviceCrossEntropy`]'s.
#[derive(Debug, Clone)]
pub struct DeviceSoftmax<'a> {
    /// Logits, row-major `[rows, cols]`, in `precision`.
    pub logits: wgpu::BufferSlice<'a>,
    /// The output, `[rows, cols]` in `precision`; `None` writes over `logits`.
    pub out: Option<wgpu::BufferSlice<'a>>,
    /// The storage format of `logits` and `out`.
    pub precision: Precision,
    /// Probabilities or log-probabilities.
    pub kind: SoftmaxKind,
}

/// What a softmax call writes: probabilities or their logarithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SoftmaxKind {
    /// `p_j = exp(z_j - lse)`.
    #[default]
    Softmax,
    /// `log p_j = z_j - lse`.
    LogSoftmax,
}

impl SoftmaxKind {
    /// `Params::log_softmax` of row_softmax.wgsl.
    pub(crate) fn log_flag(self) -> u32 {
        u32::from(self == SoftmaxKind::LogSoftmax)
    }
}

/// A host cross-entropy of half-precision logits ([`Context::cross_entropy_half`],
/// [`crate::multi::MultiContext::cross_entropy_half`]): the f32 call's arguments, with the
/// logits as `u16` bits in `precision`.
#[derive(Debug, Clone, Copy)]
pub struct HalfCrossEntropy<'a> {
    /// Row-major `[rows, cols]` bits of `precision`.
    pub logits: &'a [u16],
    /// `F16` or `Bf16` (an `F32` request is an [`Error::InvalidOption`]); the gradient comes
    /// back in it.
    pub precision: Precision,
    /// Class indices or probabilities.
    pub targets: Targets<'a>,
    /// Rows of the batch.
    pub rows: usize,
    /// Classes per row.
    pub cols: usize,
    /// The loss options.
    pub options: &'a CrossEntropyOptions,
    /// The reduction strategy (`Strategy::Auto` picks one).
    pub strategy: Strategy,
}

impl<'a> HalfCrossEntropy<'a> {
    /// The logits, checked: their count against the shape, and the precision a half one.
    pub(crate) fn checked_logits(&self) -> Result<&'a [u16]> {
        let n = check_shape(self.rows, self.cols)?;
        check_len("logits", n, self.logits.len())?;
        check_half(
            self.precision,
            "u16 logits are F16 or Bf16; use cross_entropy_targets for f32",
        )?;
        Ok(self.logits)
    }
}

/// Where a host call sits in a longer batch fed in pieces (`src/stream.rs`, `src/multi.rs`):
/// the hook that lets a caller supply the whole batch's mean denominator instead of the one
/// counted from this call's rows. [`BatchPart::whole`] is an ordinary call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchPart {
    /// The `Mean` denominator `D` of the whole batch (`None`: counted from this call's rows,
    /// as `host::host_stats` does); the gradient scale is then `1 / D` (0 when `D = 0`).
    pub denominator: Option<f64>,
    /// The reduced loss of the batch's earlier pieces: this call adds its share to it
    /// (`loss += scale * sum of row losses`, chunk by chunk, exactly as in one call).
    pub loss_before: f32,
}

impl BatchPart {
    /// An ordinary call: its own denominator, the loss starting at 0.
    pub(crate) fn whole() -> Self {
        Self {
            denominator: None,
            loss_before: 0.0,
        }
    }
}

/// The options as the kernels take them, and the class weights on the device.
pub(super) struct Prepared {
    pub(super) params: row_softmax::Params,
    pub(super) weights: wgpu::Buffer,
    /// Which options the row kernel's code handles.
    pub(super) options: Specialisation,
}

impl Context {
    /// `cols` as u32, checked against what one binding can hold.
    pub(crate) fn check_cols(&self, cols: usize) -> Result<u32> {
        let row_bytes = cols as u64 * 4;
        let align = u64::from(self.limits.min_storage_buffer_offset_alignment);
        if row_bytes + align > self.max_chunk_bytes {
            return Err(Error::Unsupported {
                adapter: self.adapter_info().name.clone(),
                what: format!(
                    "one row of {cols} f32 ({row_bytes} bytes) does not fit one storage binding \
                     of {} bytes",
                    self.max_chunk_bytes
                ),
            });
        }
        u32::try_from(cols).map_err(|_| Error::ShapeOverflow { rows: 1, cols })
    }

    /// Rows per chunk: as many whole rows as fit one binding, leaving room for the alignment
    /// slack of [`Slice::bind`] (and at most one grid dimension for the split layout).
    pub(crate) fn chunk_rows(&self, cols: usize, strategy: Strategy) -> Result<usize> {
        let align = u64::from(self.limits.min_storage_buffer_offset_alignment);
        let row_bytes = cols as u64 * 4;
        let budget = self.max_chunk_bytes.saturating_sub(align);
        let by_binding = (budget / row_bytes).max(1);
        // Also keep every element index of a chunk below 2^31 in the shaders' u32 math.
        let by_index = ((1u64 << 31) / cols as u64).max(1);
        let mut rows = by_binding.min(by_index);
        if strategy.is_split() {
            rows = rows.min(u64::from(crate::kernels::MAX_GRID_DIM));
        }
        Ok(rows as usize)
    }

    pub(super) fn prepare(
        &self,
        options: &CrossEntropyOptions,
        cols: u32,
        ignore: i32,
        probs: bool,
    ) -> Result<Prepared> {
        // Unweighted: a stand-in the shader never reads.
        let weights = options.weight.as_deref().unwrap_or(&[0.0]);
        let weights = self.buffer_with(
            "class weights",
            bytemuck::cast_slice(weights),
            wgpu::BufferUsages::STORAGE,
        );
        Ok(Prepared {
            params: row_softmax::Params {
                ignore_index: ignore,
                ..row_softmax::Params::for_loss(options, cols)
            },
            weights,
            options: Specialisation::of(options, probs),
        })
    }

    pub(super) fn scales_buffer(&self, init: &[f32]) -> wgpu::Buffer {
        self.buffer_with(
            "scales",
            bytemuck::cast_slice(init),
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        )
    }

    pub(crate) fn encoder(&self) -> wgpu::CommandEncoder {
        self.device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("ml-softmax"),
            })
    }
}

/// Checks a caller's slice: its usage, that it holds `elems` elements of `elem_bytes` (rounded
/// up to whole 4-byte words, the granularity of storage bindings) and that it starts on an
/// element; returns it as the kernels' [`Slice`].
pub(crate) fn check_slice<'a>(
    what: &'static str,
    slice: &wgpu::BufferSlice<'a>,
    elems: u64,
    elem_bytes: u64,
    usage: wgpu::BufferUsages,
) -> Result<Slice<'a>> {
    let buffer = slice.buffer();
    let bad = |problem| Error::BadBuffer { what, problem };
    if !buffer.usage().contains(usage) {
        return Err(bad(format!(
            "needs usage {usage:?}, has {:?}",
            buffer.usage()
        )));
    }
    let needed = (elems * elem_bytes).next_multiple_of(4);
    if slice.size() < needed {
        return Err(bad(format!("holds {} bytes, needs {needed}", slice.size())));
    }
    // (4-byte elements, which the copies of loss and upstream move, start on a word.)
    let offset = slice.offset();
    if offset % elem_bytes != 0 {
        return Err(bad(format!(
            "starts at byte {offset}, not at a whole {elem_bytes}-byte element"
        )));
    }
    Ok(Slice {
        buffer,
        start: offset / elem_bytes,
        len: elems,
        elem_bytes,
    })
}

/// Class labels as the GPU takes them: i32, with the rows whose label is `ignore_index` as
/// -1, which no class can be, so any i64 ignore index works (the labels are checked first).
pub(crate) fn gpu_labels(labels: &[i64], ignore_index: i64) -> Vec<i32> {
    labels
        .iter()
        .map(|&y| if y == ignore_index { -1 } else { y as i32 })
        .collect()
}

/// `bytes` rounded up to whole 4-byte words (copies and storage bindings move words).
pub(super) fn padded(bytes: usize) -> usize {
    bytes.next_multiple_of(4)
}
