//! The operations on a [`Context`]: host slices in and `Vec`s out, or device buffers in and
//! out. Both split batches too large for one storage binding into chunks of whole rows.
//!
//! Data flow of a host call, top-down in this file: validate → upload one chunk of rows →
//! dispatch (row kernel, then the loss sum; a batch of one workgroup sums itself in the row
//! kernel) → read back → next chunk.

use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::batch_sum::{self, STATS_LEN, STATS_LOSS};
use crate::kernels::row_softmax::{self, Entry, RowBuffers, UPSTREAM};
use crate::kernels::{Precision, Slice, Strategy};
use crate::options::{CrossEntropyOptions, Reduction, check_labels, check_len, check_shape};
use crate::reference::CrossEntropyOutput;

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
#[derive(Debug, Clone, Copy)]
pub enum DeviceTargets<'a> {
    /// i32 class indices, `[rows]`. Out-of-range labels that are not the ignore index make
    /// their row's loss and gradient NaN (they cannot be checked without a host round trip).
    Classes(&'a wgpu::Buffer),
    /// f32 probabilities, `[rows, cols]`.
    Probabilities(&'a wgpu::Buffer),
}

/// Buffers for the device-resident cross-entropy ([`Context::cross_entropy_device`]).
///
/// All buffers need `BufferUsages::STORAGE`, except `loss` (`COPY_DST`) and `upstream`
/// (`COPY_SRC`).
///
/// Speed: logits and gradient are read and written as 4-element vectors when both buffers'
/// sizes are whole vectors (multiples of 16 bytes for f32, 8 for f16 and bf16: round the size
/// up when creating them); otherwise the kernel falls back to scalar access, 1.2-1.6x slower
/// for f32 and up to 7x for bf16 on lavapipe (BENCHMARKS.md).
#[derive(Debug, Clone, Copy)]
pub struct DeviceCrossEntropy<'a> {
    /// Logits, row-major `[rows, cols]`, in `precision`.
    pub logits: &'a wgpu::Buffer,
    /// The storage format of `logits` and `grad` (f32 unless you keep half-precision
    /// logits; the arithmetic is f32 either way). 2-byte buffers must be padded to a
    /// multiple of 4 bytes.
    pub precision: Precision,
    /// Class indices or probabilities.
    pub targets: DeviceTargets<'a>,
    /// Gradient output, `[rows, cols]` in `precision`; `None` writes the gradient over `logits`
    /// (in place: one `[rows, cols]` buffer per step instead of two).
    pub grad: Option<&'a wgpu::Buffer>,
    /// Receives the reduced loss as one f32 at offset 0 (`None`: not written).
    pub loss: Option<&'a wgpu::Buffer>,
    /// Receives the per-row losses, f32 `[rows]`.
    pub row_loss: Option<&'a wgpu::Buffer>,
    /// Receives the per-row log-sum-exp, f32 `[rows]`.
    pub lse: Option<&'a wgpu::Buffer>,
    /// The upstream gradient of each row's loss, f32 `[rows]`: row r of the gradient is
    /// multiplied by `upstream[r]` (with `Reduction::None`, the gradient of
    /// `sum_r upstream[r] * row_loss[r]`). The reduced loss is not affected.
    pub upstream: Option<&'a wgpu::Buffer>,
}

/// Where a host call sits in a longer batch fed in pieces (`src/stream.rs`, `src/multi.rs`):
/// the hook that lets a caller supply the whole batch's mean denominator instead of the one
/// counted from this call's rows. [`BatchPart::whole`] is an ordinary call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchPart {
    /// The `Mean` denominator `D` of the whole batch (`None`: counted from this call's rows,
    /// as [`host_stats`] does); the gradient scale is then `1 / D` (0 when `D = 0`).
    pub denominator: Option<f64>,
    /// The reduced loss of the batch's earlier pieces: the GPU adds this call's share to it
    /// (`loss += scale * sum of row losses`, chunk by chunk, exactly as in one call).
    pub loss_before: f32,
    /// Rows of the whole batch: a call is summed by the row kernel itself (the one-workgroup
    /// shortcut) only when it is the whole batch, so pieces sum as one call's chunks do.
    pub batch_rows: usize,
}

impl BatchPart {
    /// An ordinary call of `rows` rows: its own denominator, the loss starting at 0.
    pub(crate) fn whole(rows: usize) -> Self {
        Self {
            denominator: None,
            loss_before: 0.0,
            batch_rows: rows,
        }
    }
}

/// The options as the kernels take them, and the class weights on the device.
struct Prepared {
    params: row_softmax::Params,
    weights: wgpu::Buffer,
}

impl Context {
    /// Cross-entropy loss, per-row losses, per-row lse and the gradient, for host data with
    /// class-index targets.
    ///
    /// `logits` is row-major `[rows, cols]`, `labels` holds one class index per row. See
    /// [`crate::reference::cross_entropy`] for the exact formulas, which this matches.
    ///
    /// ```no_run
    /// let ctx = ml_softmax::Context::new()?;
    /// let out = ctx.cross_entropy(&[1.0, 2.0, 3.0], &[1], 1, 3, &Default::default())?;
    /// assert!((out.loss - 1.4076).abs() < 1e-4);
    /// # Ok::<(), ml_softmax::Error>(())
    /// ```
    pub fn cross_entropy(
        &self,
        logits: &[f32],
        labels: &[i64],
        rows: usize,
        cols: usize,
        options: &CrossEntropyOptions,
    ) -> Result<CrossEntropyOutput> {
        self.cross_entropy_targets(
            logits,
            Targets::Classes(labels),
            rows,
            cols,
            options,
            Strategy::Auto,
        )
    }

    /// [`Context::cross_entropy`] with an explicit reduction strategy.
    pub fn cross_entropy_with(
        &self,
        logits: &[f32],
        labels: &[i64],
        rows: usize,
        cols: usize,
        options: &CrossEntropyOptions,
        strategy: Strategy,
    ) -> Result<CrossEntropyOutput> {
        self.cross_entropy_targets(
            logits,
            Targets::Classes(labels),
            rows,
            cols,
            options,
            strategy,
        )
    }

    /// Cross-entropy with probability targets `[rows, cols]`; see
    /// [`crate::reference::cross_entropy_probs`] for the formulas.
    pub fn cross_entropy_probs(
        &self,
        logits: &[f32],
        targets: &[f32],
        rows: usize,
        cols: usize,
        options: &CrossEntropyOptions,
    ) -> Result<CrossEntropyOutput> {
        self.cross_entropy_targets(
            logits,
            Targets::Probabilities(targets),
            rows,
            cols,
            options,
            Strategy::Auto,
        )
    }

    /// Cross-entropy for host data, with either kind of targets and an explicit strategy.
    pub fn cross_entropy_targets(
        &self,
        logits: &[f32],
        targets: Targets<'_>,
        rows: usize,
        cols: usize,
        options: &CrossEntropyOptions,
        strategy: Strategy,
    ) -> Result<CrossEntropyOutput> {
        let n = check_shape(rows, cols)?;
        check_len("logits", n, logits.len())?;
        let bytes = bytemuck::cast_slice(logits);
        let out = self.host_cross_entropy(
            bytes,
            Precision::F32,
            targets,
            rows,
            cols,
            options,
            strategy,
            BatchPart::whole(rows),
        )?;
        Ok(out.map_grad(|bytes| bytemuck::pod_collect_to_vec(&bytes)))
    }

    /// Cross-entropy of half-precision logits (`F16` or `Bf16` bits, one `u16` each): the
    /// gradient comes back in the same format; loss, row losses and lse as f32. All
    /// arithmetic is f32. `F16` needs an adapter with `Features::SHADER_F16`.
    #[allow(clippy::too_many_arguments)]
    pub fn cross_entropy_half(
        &self,
        logits: &[u16],
        precision: Precision,
        targets: Targets<'_>,
        rows: usize,
        cols: usize,
        options: &CrossEntropyOptions,
        strategy: Strategy,
    ) -> Result<CrossEntropyOutput<u16>> {
        let n = check_shape(rows, cols)?;
        check_len("logits", n, logits.len())?;
        if precision == Precision::F32 {
            return Err(Error::InvalidOption {
                name: "precision",
                value: "F32".into(),
                reason: "u16 logits are F16 or Bf16; use cross_entropy_targets for f32",
            });
        }
        let bytes = bytemuck::cast_slice(logits);
        let out = self.host_cross_entropy(
            bytes,
            precision,
            targets,
            rows,
            cols,
            options,
            strategy,
            BatchPart::whole(rows),
        )?;
        Ok(out.map_grad(|bytes| bytemuck::pod_collect_to_vec(&bytes)))
    }

    /// The host cross-entropy on logits stored as `precision`, as bytes; the gradient comes
    /// back as bytes in the same format. `part` places the call in a longer batch (the
    /// returned `loss` is then the batch's loss so far).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn host_cross_entropy(
        &self,
        logits: &[u8],
        precision: Precision,
        targets: Targets<'_>,
        rows: usize,
        cols: usize,
        options: &CrossEntropyOptions,
        strategy: Strategy,
        part: BatchPart,
    ) -> Result<CrossEntropyOutput<u8>> {
        self.check_alive()?;
        let n = check_shape(rows, cols)?;
        options.validate(cols)?;
        let cols32 = self.check_cols(cols)?;
        let strategy = self.resolve(strategy, rows, cols);

        // Class labels go to the GPU as i32; ignored rows become -1, which no class can be,
        // so any i64 ignore index works.
        let (gpu_labels, probs, mut stats) = match targets {
            Targets::Classes(labels) => {
                check_len("labels", rows, labels.len())?;
                check_labels(labels, cols, options.ignore_index)?;
                let gpu: Vec<i32> = labels
                    .iter()
                    .map(|&y| {
                        if y == options.ignore_index {
                            -1
                        } else {
                            y as i32
                        }
                    })
                    .collect();
                (gpu, None, host_stats(labels, options))
            }
            Targets::Probabilities(t) => {
                check_len("targets", n, t.len())?;
                let scale = match options.reduction {
                    Reduction::Mean => 1.0 / rows as f64,
                    Reduction::Sum | Reduction::None => 1.0,
                };
                (Vec::new(), Some(t), [scale as f32, rows as f32, 0.0, 0.0])
            }
        };
        if let Some(denominator) = part.denominator {
            stats = mean_stats(denominator, options.reduction);
        }
        stats[STATS_LOSS] = part.loss_before;
        let mut prepared = self.prepare(options, cols32, -1)?;
        prepared.params.has_targets = u32::from(probs.is_some());

        let chunk_rows = self.chunk_rows(cols, strategy)?.min(rows);
        prepared.params.partials_base = STATS_LEN as u32;
        let layout = HostLayout {
            chunk_rows,
            cols,
            per_row: true,
            targets: probs.is_some(),
            precision,
            partials: row_softmax::partials_len(strategy, chunk_rows, cols),
        };
        let bufs = self.host_buffers(layout, &stats)?;
        let eb = precision.bytes() as usize;
        let mut out = CrossEntropyOutput {
            loss: 0.0,
            row_loss: Vec::with_capacity(rows),
            lse: Vec::with_capacity(rows),
            grad: Vec::with_capacity(n * eb),
        };
        for first in (0..rows).step_by(chunk_rows) {
            let count = chunk_rows.min(rows - first);
            let elems = count * cols;
            // Upload and dispatch inside an error scope; wait and read back outside it.
            self.scoped(|| {
                bufs.upload(self, &logits[first * cols * eb..][..elems * eb], elems);
                match probs {
                    Some(t) => bufs.upload_targets(self, &t[first * cols..][..elems]),
                    None => bufs.upload_labels(self, &gpu_labels[first..][..count]),
                }
                let mut encoder = self.encoder();
                let mut params = prepared.params;
                params.rows = count as u32;
                // A batch of one workgroup sums its loss itself (the factor is set here).
                let whole =
                    part.batch_rows == count && row_softmax::one_workgroup(strategy, params.rows);
                if whole {
                    params.whole_batch = row_softmax::WHOLE_BATCH_LOSS;
                }
                let rb = bufs.row_buffers(elems, count, &prepared.weights);
                row_softmax::record(
                    self,
                    &mut encoder,
                    Entry::CrossEntropy,
                    strategy,
                    &rb,
                    params,
                )?;
                if !whole {
                    let sum_params = batch_sum::Params {
                        rows: count as u32,
                        ..Default::default()
                    };
                    batch_sum::record(
                        self,
                        &mut encoder,
                        batch_sum::Entry::LossSum,
                        rb.labels,
                        rb.row_loss,
                        &prepared.weights,
                        &bufs.scales,
                        sum_params,
                    )?;
                }
                bufs.copy_to_staging(&mut encoder, elems, count);
                self.queue.submit([encoder.finish()]);
                Ok(())
            })?;
            let out_bytes = padded(elems * eb);
            let back = self.read_bytes(&bufs.staging, out_bytes + (2 * count + STATS_LEN) * 4)?;
            out.grad.extend_from_slice(&back[..elems * eb]);
            let tail: Vec<f32> = bytemuck::pod_collect_to_vec(&back[out_bytes..]);
            out.row_loss.extend_from_slice(&tail[..count]);
            out.lse.extend_from_slice(&tail[count..][..count]);
            out.loss = tail[2 * count + STATS_LOSS];
        }
        Ok(out)
    }

    /// Softmax of each row of host data.
    ///
    /// ```no_run
    /// let ctx = ml_softmax::Context::new()?;
    /// let p = ctx.softmax(&[1.0, 2.0, 3.0], 1, 3)?;
    /// assert!((p[2] - 0.665).abs() < 1e-3);
    /// # Ok::<(), ml_softmax::Error>(())
    /// ```
    pub fn softmax(&self, logits: &[f32], rows: usize, cols: usize) -> Result<Vec<f32>> {
        self.softmax_with(logits, rows, cols, false, Strategy::Auto)
    }

    /// Log-softmax of each row of host data.
    pub fn log_softmax(&self, logits: &[f32], rows: usize, cols: usize) -> Result<Vec<f32>> {
        self.softmax_with(logits, rows, cols, true, Strategy::Auto)
    }

    /// Softmax (`log = false`) or log-softmax with an explicit strategy.
    pub fn softmax_with(
        &self,
        logits: &[f32],
        rows: usize,
        cols: usize,
        log: bool,
        strategy: Strategy,
    ) -> Result<Vec<f32>> {
        let n = check_shape(rows, cols)?;
        check_len("logits", n, logits.len())?;
        let bytes = bytemuck::cast_slice(logits);
        let out = self.host_softmax(bytes, Precision::F32, rows, cols, log, strategy)?;
        Ok(bytemuck::pod_collect_to_vec(&out))
    }

    /// Softmax or log-softmax of half-precision logits (`F16` or `Bf16` bits), with the
    /// output in the same format.
    pub fn softmax_half(
        &self,
        logits: &[u16],
        precision: Precision,
        rows: usize,
        cols: usize,
        log: bool,
        strategy: Strategy,
    ) -> Result<Vec<u16>> {
        let n = check_shape(rows, cols)?;
        check_len("logits", n, logits.len())?;
        let bytes = bytemuck::cast_slice(logits);
        let out = self.host_softmax(bytes, precision, rows, cols, log, strategy)?;
        Ok(bytemuck::pod_collect_to_vec(&out))
    }

    fn host_softmax(
        &self,
        logits: &[u8],
        precision: Precision,
        rows: usize,
        cols: usize,
        log: bool,
        strategy: Strategy,
    ) -> Result<Vec<u8>> {
        self.check_alive()?;
        let n = check_shape(rows, cols)?;
        let cols32 = self.check_cols(cols)?;
        let strategy = self.resolve(strategy, rows, cols);
        let mut prepared = self.prepare(&CrossEntropyOptions::default(), cols32, -1)?;
        prepared.params.log_softmax = u32::from(log);
        let chunk_rows = self.chunk_rows(cols, strategy)?.min(rows);
        prepared.params.partials_base = STATS_LEN as u32;
        let layout = HostLayout {
            chunk_rows,
            cols,
            per_row: false,
            targets: false,
            precision,
            partials: row_softmax::partials_len(strategy, chunk_rows, cols),
        };
        let bufs = self.host_buffers(layout, &[1.0, 0.0, 0.0, 0.0])?;
        let eb = precision.bytes() as usize;
        let mut out = Vec::with_capacity(n * eb);
        for first in (0..rows).step_by(chunk_rows) {
            let count = chunk_rows.min(rows - first);
            let elems = count * cols;
            self.scoped(|| {
                bufs.upload(self, &logits[first * cols * eb..][..elems * eb], elems);
                let mut encoder = self.encoder();
                let mut params = prepared.params;
                params.rows = count as u32;
                let rb = bufs.row_buffers(elems, count, &prepared.weights);
                row_softmax::record(self, &mut encoder, Entry::Softmax, strategy, &rb, params)?;
                let bytes = padded(elems * eb) as u64;
                encoder.copy_buffer_to_buffer(&bufs.out, 0, &bufs.staging, 0, bytes);
                self.queue.submit([encoder.finish()]);
                Ok(())
            })?;
            let back = self.read_bytes(&bufs.staging, padded(elems * eb))?;
            out.extend_from_slice(&back[..elems * eb]);
        }
        Ok(out)
    }

    /// Device-resident cross-entropy: reads the caller's buffers, writes the gradient (and on
    /// request the loss, per-row losses and lse) into the caller's buffers, and returns
    /// without waiting. Class labels are i32; `options.ignore_index` must fit in i32.
    ///
    /// The whole batch is recorded into one command buffer and submitted once; poll the
    /// device (or map a buffer) to wait for it.
    pub fn cross_entropy_device(
        &self,
        bufs: &DeviceCrossEntropy<'_>,
        rows: usize,
        cols: usize,
        options: &CrossEntropyOptions,
        strategy: Strategy,
    ) -> Result<wgpu::SubmissionIndex> {
        self.check_alive()?;
        self.scoped(|| {
            let mut encoder = self.encoder();
            self.encode_cross_entropy(&mut encoder, bufs, rows, cols, options, strategy)?;
            Ok(self.queue.submit([encoder.finish()]))
        })
    }

    /// Records the device-resident cross-entropy into the caller's encoder, to be submitted
    /// with other work; see [`Context::cross_entropy_device`]. Errors of wgpu validation show
    /// up when the caller submits (or in the caller's error scope).
    pub fn encode_cross_entropy(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        bufs: &DeviceCrossEntropy<'_>,
        rows: usize,
        cols: usize,
        options: &CrossEntropyOptions,
        strategy: Strategy,
    ) -> Result<()> {
        let n = check_shape(rows, cols)? as u64;
        options.validate(cols)?;
        let cols32 = self.check_cols(cols)?;
        let ignore = i32::try_from(options.ignore_index).map_err(|_| Error::InvalidOption {
            name: "ignore_index",
            value: options.ignore_index.to_string(),
            reason: "the device API takes i32 labels, so the ignore index must fit in i32",
        })?;
        let rows64 = rows as u64;
        let storage = wgpu::BufferUsages::STORAGE;
        let eb = bufs.precision.bytes();
        check_bytes("logits", bufs.logits, n * eb, storage)?;
        let (labels, targets) = match bufs.targets {
            DeviceTargets::Classes(b) => {
                check_buffer("labels", b, rows64, storage)?;
                (Some(b), None)
            }
            DeviceTargets::Probabilities(b) => {
                check_buffer("targets", b, n, storage)?;
                (None, Some(b))
            }
        };
        if let Some(b) = bufs.grad {
            check_bytes("grad", b, n * eb, storage)?;
        }
        if let Some(b) = bufs.loss {
            check_buffer("loss", b, 1, wgpu::BufferUsages::COPY_DST)?;
        }
        if let Some(b) = bufs.row_loss {
            check_buffer("row_loss", b, rows64, storage)?;
        }
        if let Some(b) = bufs.lse {
            check_buffer("lse", b, rows64, storage)?;
        }
        if let Some(b) = bufs.upstream {
            check_buffer("upstream", b, rows64, wgpu::BufferUsages::COPY_SRC)?;
        }
        let strategy = self.resolve(strategy, rows, cols);
        let mut prepared = self.prepare(options, cols32, ignore)?;
        prepared.params.has_targets = u32::from(targets.is_some());
        prepared.params.has_upstream = u32::from(bufs.upstream.is_some());

        // Scratch for what the caller did not ask for, and the scales: the reduction factor
        // (set here, or computed on the GPU for a class-target mean), then the upstream
        // gradients copied in.
        let scratch = |label, len: u64| {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: len.max(1) * 4,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            })
        };
        let own_row_loss = scratch("row_loss", rows64);
        let own_lse = scratch("lse", rows64);
        let tiny = scratch("unused", 1);
        let row_loss = bufs.row_loss.unwrap_or(&own_row_loss);
        let lse = bufs.lse.unwrap_or(&own_lse);
        let gpu_mean = options.reduction == Reduction::Mean && labels.is_some();
        let scale = match options.reduction {
            Reduction::Mean if gpu_mean => 0.0,
            Reduction::Mean => 1.0 / rows as f32,
            Reduction::Sum | Reduction::None => 1.0,
        };
        // Scales: [stats | upstream gradients | split partials, reused by each row chunk].
        let chunk_rows = self.chunk_rows(cols, strategy)?.min(rows);
        let upstream_len = if bufs.upstream.is_some() { rows } else { 0 };
        let partials = row_softmax::partials_len(strategy, chunk_rows, cols);
        prepared.params.partials_base = (UPSTREAM + upstream_len) as u32;
        let mut init = vec![0.0f32; UPSTREAM + upstream_len + partials];
        init[0] = scale;
        let scales = self.scales_buffer(&init);
        if let Some(up) = bufs.upstream {
            encoder.copy_buffer_to_buffer(up, 0, &scales, (UPSTREAM * 4) as u64, rows64 * 4);
        }

        let row_slice = |b, first: usize, count: usize| Slice::words(b, first as u64, count as u64);
        let elem_slice = |b, first: usize, count: usize, elem_bytes| Slice {
            buffer: b,
            start: (first * cols) as u64,
            len: (count * cols) as u64,
            elem_bytes,
        };
        let tiny_slice = row_slice(&tiny, 0, 1);
        let sum_params = |count: usize| batch_sum::Params {
            rows: count as u32,
            cols: cols32,
            ignore_index: ignore,
            has_weights: prepared.params.has_weights,
            ..Default::default()
        };
        // A batch of one workgroup does the sums of steps 1 and 2 in its row dispatch.
        let whole = rows == chunk_rows && row_softmax::one_workgroup(strategy, rows as u32);
        // 1. A class-target mean's denominator: sum of target weights over all rows, and 1/D.
        if let (Some(labels), true, false) = (labels, gpu_mean, whole) {
            for first in (0..rows).step_by(chunk_rows) {
                let count = chunk_rows.min(rows - first);
                let slice = row_slice(labels, first, count);
                batch_sum::record(
                    self,
                    encoder,
                    batch_sum::Entry::TargetWeightSum,
                    slice,
                    slice,
                    &prepared.weights,
                    &scales,
                    sum_params(count),
                )?;
            }
        }
        // 2. The rows, chunk by chunk, then each chunk's share of the loss.
        for first in (0..rows).step_by(chunk_rows) {
            let count = chunk_rows.min(rows - first);
            let rb = RowBuffers {
                logits: elem_slice(bufs.logits, first, count, eb),
                out: bufs.grad.map(|g| elem_slice(g, first, count, eb)),
                precision: bufs.precision,
                labels: labels.map_or(tiny_slice, |b| row_slice(b, first, count)),
                targets: targets.map_or(tiny_slice, |b| elem_slice(b, first, count, 4)),
                row_loss: row_slice(row_loss, first, count),
                lse: row_slice(lse, first, count),
                weights: &prepared.weights,
                scales: &scales,
            };
            let mut params = prepared.params;
            params.rows = count as u32;
            params.row_offset = first as u32;
            if whole {
                params.whole_batch = if gpu_mean {
                    row_softmax::WHOLE_BATCH_MEAN
                } else {
                    row_softmax::WHOLE_BATCH_LOSS
                };
            }
            row_softmax::record(self, encoder, Entry::CrossEntropy, strategy, &rb, params)?;
            if !whole {
                batch_sum::record(
                    self,
                    encoder,
                    batch_sum::Entry::LossSum,
                    rb.row_loss,
                    rb.row_loss,
                    &prepared.weights,
                    &scales,
                    sum_params(count),
                )?;
            }
        }
        // 3. The reduced loss into the caller's buffer.
        if let Some(loss) = bufs.loss {
            encoder.copy_buffer_to_buffer(&scales, (STATS_LOSS * 4) as u64, loss, 0, 4);
        }
        Ok(())
    }

    /// Device-resident softmax (or log-softmax) of the caller's buffer `logits` (stored as
    /// `precision`) into `out` (`None`: in place, over `logits`). As for
    /// [`DeviceCrossEntropy`], buffers of whole 4-element vectors are accessed as vectors
    /// (faster).
    #[allow(clippy::too_many_arguments)]
    pub fn softmax_device(
        &self,
        logits: &wgpu::Buffer,
        out: Option<&wgpu::Buffer>,
        precision: Precision,
        rows: usize,
        cols: usize,
        log: bool,
        strategy: Strategy,
    ) -> Result<wgpu::SubmissionIndex> {
        self.check_alive()?;
        let n = check_shape(rows, cols)? as u64;
        let cols32 = self.check_cols(cols)?;
        let eb = precision.bytes();
        check_bytes("logits", logits, n * eb, wgpu::BufferUsages::STORAGE)?;
        if let Some(out) = out {
            check_bytes("out", out, n * eb, wgpu::BufferUsages::STORAGE)?;
        }
        let strategy = self.resolve(strategy, rows, cols);
        let mut prepared = self.prepare(&CrossEntropyOptions::default(), cols32, -1)?;
        prepared.params.log_softmax = u32::from(log);
        prepared.params.partials_base = STATS_LEN as u32;
        self.scoped(|| {
            let chunk_rows = self.chunk_rows(cols, strategy)?.min(rows);
            let mut init =
                vec![0.0f32; STATS_LEN + row_softmax::partials_len(strategy, chunk_rows, cols)];
            init[0] = 1.0;
            let scales = self.scales_buffer(&init);
            // Softmax has no per-row inputs or outputs: small stand-ins, one per binding so
            // that no buffer is both read and written in one dispatch.
            let stand_ins: Vec<wgpu::Buffer> =
                (0..4).map(|_| self.scales_buffer(&[0.0; 4])).collect();
            let tiny = |i: usize| Slice::words(&stand_ins[i], 0, 1);
            let mut encoder = self.encoder();
            for first in (0..rows).step_by(chunk_rows) {
                let count = chunk_rows.min(rows - first);
                let elems = |buffer| Slice {
                    buffer,
                    start: (first * cols) as u64,
                    len: (count * cols) as u64,
                    elem_bytes: eb,
                };
                let rb = RowBuffers {
                    logits: elems(logits),
                    out: out.map(elems),
                    precision,
                    labels: tiny(0),
                    targets: tiny(1),
                    row_loss: tiny(2),
                    lse: tiny(3),
                    weights: &prepared.weights,
                    scales: &scales,
                };
                let mut params = prepared.params;
                params.rows = count as u32;
                row_softmax::record(self, &mut encoder, Entry::Softmax, strategy, &rb, params)?;
            }
            Ok(self.queue.submit([encoder.finish()]))
        })
    }

    // ---- helpers, in the order the operations above use them ----

    /// The concrete strategy for this adapter and row length.
    fn resolve(&self, strategy: Strategy, rows: usize, cols: usize) -> Strategy {
        let device_type = self.adapter_info().device_type;
        strategy.resolve(rows, cols, self.subgroup_size(), device_type)
    }

    /// `cols` as u32, checked against what one binding can hold.
    fn check_cols(&self, cols: usize) -> Result<u32> {
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
        if let Strategy::Split { .. } = strategy {
            rows = rows.min(u64::from(crate::kernels::MAX_GRID_DIM));
        }
        Ok(rows as usize)
    }

    fn prepare(&self, options: &CrossEntropyOptions, cols: u32, ignore: i32) -> Result<Prepared> {
        let (weights, weight_sum, has) = match &options.weight {
            Some(w) => (
                w.clone(),
                w.iter().map(|&x| f64::from(x)).sum::<f64>() as f32,
                1,
            ),
            None => (vec![0.0], cols as f32, 0),
        };
        let weights = self.buffer_with(
            "class weights",
            bytemuck::cast_slice(&weights),
            wgpu::BufferUsages::STORAGE,
        );
        Ok(Prepared {
            params: row_softmax::Params {
                cols,
                ignore_index: ignore,
                has_weights: has,
                label_smoothing: options.label_smoothing,
                z_loss: options.z_loss,
                softcap: options.softcap,
                weight_sum,
                ..Default::default()
            },
            weights,
        })
    }

    fn scales_buffer(&self, init: &[f32]) -> wgpu::Buffer {
        self.buffer_with(
            "scales",
            bytemuck::cast_slice(init),
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        )
    }

    /// Device buffers for a host call: a pooled set of the same layout when one is free
    /// (so a stream of small calls allocates nothing), else new ones. They go back to the
    /// pool when the call's [`Pooled`] guard drops.
    fn host_buffers(&self, layout: HostLayout, stats: &[f32; STATS_LEN]) -> Result<Pooled<'_>> {
        let reused = self
            .host_pool
            .lock()
            .ok()
            .and_then(|mut pool| pool.take(layout));
        let bufs = match reused {
            Some(bufs) => {
                self.queue
                    .write_buffer(&bufs.scales, 0, bytemuck::cast_slice(stats));
                bufs
            }
            None => self.scoped(|| HostBuffers::new(self, layout, stats))?,
        };
        Ok(Pooled {
            ctx: self,
            bufs: Some(bufs),
        })
    }

    fn encoder(&self) -> wgpu::CommandEncoder {
        self.device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("ml-softmax"),
            })
    }
}

/// The stats for host class labels: the mean's denominator is summed here, in f64.
fn host_stats(labels: &[i64], options: &CrossEntropyOptions) -> [f32; STATS_LEN] {
    mean_stats(class_denominator(labels, options), options.reduction)
}

/// The `Mean` denominator of class-index labels (checked by the caller): the sum of the
/// target weights of the rows not ignored, in f64.
pub(crate) fn class_denominator(labels: &[i64], options: &CrossEntropyOptions) -> f64 {
    labels
        .iter()
        .filter(|&&y| y != options.ignore_index)
        .map(|&y| match &options.weight {
            Some(w) => f64::from(w[y as usize]),
            None => 1.0,
        })
        .sum()
}

/// The stats a host call starts from, given the mean's denominator: the gradient scale
/// (`1 / D` for `Mean`, 0 when `D = 0`; 1 otherwise), `D`, and a loss of 0.
fn mean_stats(denominator: f64, reduction: Reduction) -> [f32; STATS_LEN] {
    let scale = match reduction {
        Reduction::Mean if denominator > 0.0 => 1.0 / denominator,
        Reduction::Mean => 0.0,
        Reduction::Sum | Reduction::None => 1.0,
    };
    [scale as f32, denominator as f32, 0.0, 0.0]
}

/// Checks a caller's buffer of 4-byte elements: its usage and that it holds `elems`.
fn check_buffer(
    what: &'static str,
    buffer: &wgpu::Buffer,
    elems: u64,
    usage: wgpu::BufferUsages,
) -> Result<()> {
    check_bytes(what, buffer, elems * 4, usage)
}

/// Checks a caller's buffer: its usage and that it holds `bytes` (rounded up to whole
/// 4-byte words, the granularity of storage bindings).
fn check_bytes(
    what: &'static str,
    buffer: &wgpu::Buffer,
    bytes: u64,
    usage: wgpu::BufferUsages,
) -> Result<()> {
    if !buffer.usage().contains(usage) {
        return Err(Error::BadBuffer {
            what,
            problem: format!("needs usage {usage:?}, has {:?}", buffer.usage()),
        });
    }
    let needed = bytes.next_multiple_of(4);
    if buffer.size() < needed {
        return Err(Error::BadBuffer {
            what,
            problem: format!("holds {} bytes, needs {needed}", buffer.size()),
        });
    }
    Ok(())
}

/// `bytes` rounded up to whole 4-byte words (copies and storage bindings move words).
fn padded(bytes: usize) -> usize {
    bytes.next_multiple_of(4)
}

/// What the device buffers of a host call hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HostLayout {
    /// Rows per chunk.
    chunk_rows: usize,
    cols: usize,
    /// Per-row inputs and outputs (labels, losses, lse); softmax has none.
    per_row: bool,
    /// Probability targets, `chunk_rows * cols`.
    targets: bool,
    /// The storage format of logits and output.
    precision: Precision,
    /// Floats of split-layout partials after the stats in `scales`.
    partials: usize,
}

/// The device buffers of one host call, sized for one chunk and reused for each chunk.
pub(crate) struct HostBuffers {
    layout: HostLayout,
    logits: wgpu::Buffer,
    out: wgpu::Buffer,
    labels: wgpu::Buffer,
    targets: wgpu::Buffer,
    row_loss: wgpu::Buffer,
    lse: wgpu::Buffer,
    scales: wgpu::Buffer,
    staging: wgpu::Buffer,
    poison: bool,
}

impl HostBuffers {
    fn new(ctx: &Context, layout: HostLayout, stats: &[f32; STATS_LEN]) -> Result<Self> {
        use wgpu::BufferUsages as U;
        let elems = (layout.chunk_rows * layout.cols) as u64;
        // Whole 16-byte vectors, so that rows of any length and format take the vector io files.
        let elem_bytes = (elems * layout.precision.bytes()).next_multiple_of(16);
        let rows = if layout.per_row {
            layout.chunk_rows as u64
        } else {
            1
        };
        let buffer = |label, bytes: u64, usage| {
            ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes,
                usage,
                mapped_at_creation: false,
            })
        };
        Ok(Self {
            layout,
            logits: buffer("logits", elem_bytes, U::STORAGE | U::COPY_DST),
            out: buffer("out", elem_bytes, U::STORAGE | U::COPY_SRC | U::COPY_DST),
            labels: buffer("labels", rows * 4, U::STORAGE | U::COPY_DST),
            targets: buffer(
                "targets",
                if layout.targets { elems * 4 } else { 4 },
                U::STORAGE | U::COPY_DST,
            ),
            row_loss: buffer("row_loss", rows * 4, U::STORAGE | U::COPY_SRC | U::COPY_DST),
            lse: buffer("lse", rows * 4, U::STORAGE | U::COPY_SRC | U::COPY_DST),
            scales: {
                let mut init = vec![0.0f32; STATS_LEN + layout.partials];
                init[..STATS_LEN].copy_from_slice(stats);
                ctx.scales_buffer(&init)
            },
            staging: buffer(
                "staging",
                elem_bytes + (2 * rows + STATS_LEN as u64) * 4,
                U::MAP_READ | U::COPY_DST,
            ),
            poison: ctx.poison_outputs,
        })
    }

    /// Writes one chunk of `elems` logits, given as bytes (and, when poisoning, NaN into the
    /// outputs so that an element the kernel fails to write shows up).
    fn upload(&self, ctx: &Context, logits: &[u8], elems: usize) {
        ctx.write_words(&self.logits, logits);
        if self.poison {
            // All-ones bits are a NaN in f32, f16 and bf16 alike.
            let nan = vec![0xffu8; padded(logits.len())];
            ctx.queue.write_buffer(&self.out, 0, &nan);
            if self.layout.per_row {
                let rows = elems / self.layout.cols;
                let nan = vec![0xffu8; rows * 4];
                ctx.queue.write_buffer(&self.row_loss, 0, &nan);
                ctx.queue.write_buffer(&self.lse, 0, &nan);
            }
        }
    }

    fn upload_labels(&self, ctx: &Context, labels: &[i32]) {
        ctx.queue
            .write_buffer(&self.labels, 0, bytemuck::cast_slice(labels));
    }

    fn upload_targets(&self, ctx: &Context, targets: &[f32]) {
        ctx.queue
            .write_buffer(&self.targets, 0, bytemuck::cast_slice(targets));
    }

    fn row_buffers<'a>(
        &'a self,
        elems: usize,
        rows: usize,
        weights: &'a wgpu::Buffer,
    ) -> RowBuffers<'a> {
        // Without per-row outputs (softmax) the row buffers hold one element.
        let rows = if self.layout.per_row { rows } else { 1 };
        let targets = if self.layout.targets { elems } else { 1 };
        let words = |buffer, len: usize| Slice::words(buffer, 0, len as u64);
        let data = |buffer| Slice {
            buffer,
            start: 0,
            len: elems as u64,
            elem_bytes: self.layout.precision.bytes(),
        };
        RowBuffers {
            logits: data(&self.logits),
            out: Some(data(&self.out)),
            precision: self.layout.precision,
            labels: words(&self.labels, rows),
            targets: words(&self.targets, targets),
            row_loss: words(&self.row_loss, rows),
            lse: words(&self.lse, rows),
            weights,
            scales: &self.scales,
        }
    }

    /// Staging layout: the output (padded to whole words), row losses, lse, stats.
    fn copy_to_staging(&self, encoder: &mut wgpu::CommandEncoder, elems: usize, rows: usize) {
        let e = padded(elems * self.layout.precision.bytes() as usize) as u64;
        let r = (rows * 4) as u64;
        encoder.copy_buffer_to_buffer(&self.out, 0, &self.staging, 0, e);
        encoder.copy_buffer_to_buffer(&self.row_loss, 0, &self.staging, e, r);
        encoder.copy_buffer_to_buffer(&self.lse, 0, &self.staging, e + r, r);
        encoder.copy_buffer_to_buffer(
            &self.scales,
            0,
            &self.staging,
            e + 2 * r,
            (STATS_LEN * 4) as u64,
        );
    }
}

/// Free host-call buffer sets, kept for reuse. Only sets up to [`HostPool::MAX_BYTES`] are
/// kept, at most [`HostPool::MAX_SETS`] of them: small calls (where allocation is a large
/// share of the time) reuse, huge ones (where it is not) give their memory back.
#[derive(Default)]
pub(crate) struct HostPool {
    free: Vec<HostBuffers>,
}

impl HostPool {
    const MAX_SETS: usize = 4;
    const MAX_BYTES: u64 = 16 << 20;

    fn take(&mut self, layout: HostLayout) -> Option<HostBuffers> {
        let i = self.free.iter().position(|b| b.layout == layout)?;
        Some(self.free.swap_remove(i))
    }

    fn give(&mut self, bufs: HostBuffers) {
        if bufs.staging.size() <= Self::MAX_BYTES {
            if self.free.len() == Self::MAX_SETS {
                self.free.remove(0);
            }
            self.free.push(bufs);
        }
    }
}

/// A host call's buffer set, returned to the context's pool when dropped.
struct Pooled<'a> {
    ctx: &'a Context,
    bufs: Option<HostBuffers>,
}

impl std::ops::Deref for Pooled<'_> {
    type Target = HostBuffers;

    fn deref(&self) -> &HostBuffers {
        // Always `Some` until `drop`.
        self.bufs.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let (Some(bufs), Ok(mut pool)) = (self.bufs.take(), self.ctx.host_pool.lock()) {
            pool.give(bufs);
        }
    }
}
