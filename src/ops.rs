//! The operations on a [`Context`]: host slices in and `Vec`s out, or device buffers in and
//! out. Both split batches too large for one storage binding into chunks of whole rows.
//!
//! Data flow of a host call, top-down in this file: validate → upload one chunk of rows →
//! dispatch (row kernel, then the loss sum) → read back → next chunk.

use wgpu::util::DeviceExt;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::batch_sum::{self, STATS_LEN, STATS_LOSS};
use crate::kernels::row_softmax::{self, Entry, RowBuffers, UPSTREAM};
use crate::kernels::{Slice, Strategy};
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
#[derive(Debug, Clone, Copy)]
pub struct DeviceCrossEntropy<'a> {
    /// f32 logits, row-major `[rows, cols]`.
    pub logits: &'a wgpu::Buffer,
    /// Class indices or probabilities.
    pub targets: DeviceTargets<'a>,
    /// f32 gradient output, `[rows, cols]`; `None` writes the gradient over `logits`
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
        self.check_alive()?;
        let n = check_shape(rows, cols)?;
        check_len("logits", n, logits.len())?;
        options.validate(cols)?;
        let cols32 = self.check_cols(cols)?;
        let strategy = self.resolve(strategy, cols);

        // Class labels go to the GPU as i32; ignored rows become -1, which no class can be,
        // so any i64 ignore index works.
        let (gpu_labels, probs, stats) = match targets {
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
        let mut prepared = self.prepare(options, cols32, -1)?;
        prepared.params.has_targets = u32::from(probs.is_some());

        let chunk_rows = self.chunk_rows(cols)?;
        let layout = HostLayout {
            chunk_rows,
            cols,
            per_row: true,
            targets: probs.is_some(),
        };
        let bufs = self.scoped(|| HostBuffers::new(self, layout, &stats))?;
        let mut out = CrossEntropyOutput {
            loss: 0.0,
            row_loss: Vec::with_capacity(rows),
            lse: Vec::with_capacity(rows),
            grad: Vec::with_capacity(n),
        };
        for first in (0..rows).step_by(chunk_rows) {
            let count = chunk_rows.min(rows - first);
            let elems = count * cols;
            // Upload and dispatch inside an error scope; wait and read back outside it.
            self.scoped(|| {
                bufs.upload(self, &logits[first * cols..][..elems]);
                match probs {
                    Some(t) => bufs.upload_targets(self, &t[first * cols..][..elems]),
                    None => bufs.upload_labels(self, &gpu_labels[first..][..count]),
                }
                let mut encoder = self.encoder();
                let mut params = prepared.params;
                params.rows = count as u32;
                let rb = bufs.row_buffers(elems, count, &prepared.weights);
                row_softmax::record(
                    self,
                    &mut encoder,
                    Entry::CrossEntropy,
                    strategy,
                    &rb,
                    params,
                    None,
                )?;
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
                bufs.copy_to_staging(&mut encoder, elems, count);
                self.queue.submit([encoder.finish()]);
                Ok(())
            })?;
            let back = self.read_f32(&bufs.staging, elems + 2 * count + STATS_LEN)?;
            out.grad.extend_from_slice(&back[..elems]);
            out.row_loss.extend_from_slice(&back[elems..][..count]);
            out.lse.extend_from_slice(&back[elems + count..][..count]);
            out.loss = back[elems + 2 * count + STATS_LOSS];
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
        self.check_alive()?;
        let n = check_shape(rows, cols)?;
        check_len("logits", n, logits.len())?;
        let cols32 = self.check_cols(cols)?;
        let strategy = self.resolve(strategy, cols);
        let mut prepared = self.prepare(&CrossEntropyOptions::default(), cols32, -1)?;
        prepared.params.log_softmax = u32::from(log);
        let chunk_rows = self.chunk_rows(cols)?;
        let layout = HostLayout {
            chunk_rows,
            cols,
            per_row: false,
            targets: false,
        };
        let bufs = self.scoped(|| HostBuffers::new(self, layout, &[1.0, 0.0, 0.0, 0.0]))?;
        let mut out = Vec::with_capacity(n);
        for first in (0..rows).step_by(chunk_rows) {
            let count = chunk_rows.min(rows - first);
            let elems = count * cols;
            self.scoped(|| {
                bufs.upload(self, &logits[first * cols..][..elems]);
                let mut encoder = self.encoder();
                let mut params = prepared.params;
                params.rows = count as u32;
                let rb = bufs.row_buffers(elems, count, &prepared.weights);
                row_softmax::record(
                    self,
                    &mut encoder,
                    Entry::Softmax,
                    strategy,
                    &rb,
                    params,
                    None,
                )?;
                encoder.copy_buffer_to_buffer(&bufs.out, 0, &bufs.staging, 0, (elems * 4) as u64);
                self.queue.submit([encoder.finish()]);
                Ok(())
            })?;
            out.extend_from_slice(&self.read_f32(&bufs.staging, elems)?);
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
        check_buffer("logits", bufs.logits, n, storage)?;
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
            check_buffer("grad", b, n, storage)?;
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
        let strategy = self.resolve(strategy, cols);
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
        let upstream_len = if bufs.upstream.is_some() { rows } else { 0 };
        let mut init = vec![0.0f32; UPSTREAM + upstream_len];
        init[0] = scale;
        let scales = self.scales_buffer(&init);
        if let Some(up) = bufs.upstream {
            encoder.copy_buffer_to_buffer(up, 0, &scales, (UPSTREAM * 4) as u64, rows64 * 4);
        }

        let chunk_rows = self.chunk_rows(cols)?;
        let row_slice = |b, first: usize, count: usize| Slice {
            buffer: b,
            start: first as u64,
            len: count as u64,
        };
        let elem_slice = |b, first: usize, count: usize| Slice {
            buffer: b,
            start: (first * cols) as u64,
            len: (count * cols) as u64,
        };
        let tiny_slice = row_slice(&tiny, 0, 1);
        let sum_params = |count: usize| batch_sum::Params {
            rows: count as u32,
            cols: cols32,
            ignore_index: ignore,
            has_weights: prepared.params.has_weights,
            ..Default::default()
        };
        // 1. A class-target mean's denominator: sum of target weights over all rows, then 1/D.
        if let (Some(labels), true) = (labels, gpu_mean) {
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
            let one = row_slice(labels, 0, 1);
            batch_sum::record(
                self,
                encoder,
                batch_sum::Entry::MeanScale,
                one,
                one,
                &prepared.weights,
                &scales,
                sum_params(0),
            )?;
        }
        // 2. The rows, chunk by chunk, then each chunk's share of the loss.
        for first in (0..rows).step_by(chunk_rows) {
            let count = chunk_rows.min(rows - first);
            let rb = RowBuffers {
                logits: elem_slice(bufs.logits, first, count),
                out: bufs.grad.map(|g| elem_slice(g, first, count)),
                labels: labels.map_or(tiny_slice, |b| row_slice(b, first, count)),
                targets: targets.map_or(tiny_slice, |b| elem_slice(b, first, count)),
                row_loss: row_slice(row_loss, first, count),
                lse: row_slice(lse, first, count),
                weights: &prepared.weights,
                scales: &scales,
            };
            let mut params = prepared.params;
            params.rows = count as u32;
            params.row_offset = first as u32;
            row_softmax::record(
                self,
                encoder,
                Entry::CrossEntropy,
                strategy,
                &rb,
                params,
                None,
            )?;
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
        // 3. The reduced loss into the caller's buffer.
        if let Some(loss) = bufs.loss {
            encoder.copy_buffer_to_buffer(&scales, (STATS_LOSS * 4) as u64, loss, 0, 4);
        }
        Ok(())
    }

    /// Device-resident softmax (or log-softmax) of the caller's f32 buffer `logits` into
    /// `out` (`None`: in place, over `logits`).
    pub fn softmax_device(
        &self,
        logits: &wgpu::Buffer,
        out: Option<&wgpu::Buffer>,
        rows: usize,
        cols: usize,
        log: bool,
        strategy: Strategy,
    ) -> Result<wgpu::SubmissionIndex> {
        self.check_alive()?;
        let n = check_shape(rows, cols)? as u64;
        let cols32 = self.check_cols(cols)?;
        check_buffer("logits", logits, n, wgpu::BufferUsages::STORAGE)?;
        if let Some(out) = out {
            check_buffer("out", out, n, wgpu::BufferUsages::STORAGE)?;
        }
        let strategy = self.resolve(strategy, cols);
        let mut prepared = self.prepare(&CrossEntropyOptions::default(), cols32, -1)?;
        prepared.params.log_softmax = u32::from(log);
        self.scoped(|| {
            let scales = self.scales_buffer(&[1.0, 0.0, 0.0, 0.0]);
            // Softmax has no per-row inputs or outputs: small stand-ins, one per binding so
            // that no buffer is both read and written in one dispatch.
            let stand_ins: Vec<wgpu::Buffer> =
                (0..4).map(|_| self.scales_buffer(&[0.0; 4])).collect();
            let tiny = |i: usize| Slice {
                buffer: &stand_ins[i],
                start: 0,
                len: 1,
            };
            let chunk_rows = self.chunk_rows(cols)?;
            let mut encoder = self.encoder();
            for first in (0..rows).step_by(chunk_rows) {
                let count = chunk_rows.min(rows - first);
                let elems = |buffer| Slice {
                    buffer,
                    start: (first * cols) as u64,
                    len: (count * cols) as u64,
                };
                let rb = RowBuffers {
                    logits: elems(logits),
                    out: out.map(elems),
                    labels: tiny(0),
                    targets: tiny(1),
                    row_loss: tiny(2),
                    lse: tiny(3),
                    weights: &prepared.weights,
                    scales: &scales,
                };
                let mut params = prepared.params;
                params.rows = count as u32;
                row_softmax::record(
                    self,
                    &mut encoder,
                    Entry::Softmax,
                    strategy,
                    &rb,
                    params,
                    None,
                )?;
            }
            Ok(self.queue.submit([encoder.finish()]))
        })
    }

    // ---- helpers, in the order the operations above use them ----

    /// The concrete strategy for this adapter and row length.
    fn resolve(&self, strategy: Strategy, cols: usize) -> Strategy {
        strategy.resolve(cols, self.has_subgroups(), self.adapter_info().device_type)
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
    /// slack of [`Slice::bind`].
    pub(crate) fn chunk_rows(&self, cols: usize) -> Result<usize> {
        let align = u64::from(self.limits.min_storage_buffer_offset_alignment);
        let row_bytes = cols as u64 * 4;
        let budget = self.max_chunk_bytes.saturating_sub(align);
        let by_binding = (budget / row_bytes).max(1);
        // Also keep every element index of a chunk below 2^31 in the shaders' u32 math.
        let by_index = ((1u64 << 31) / cols as u64).max(1);
        Ok(by_binding.min(by_index) as usize)
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
        let weights = self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("class weights"),
                contents: bytemuck::cast_slice(&weights),
                usage: wgpu::BufferUsages::STORAGE,
            });
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
        self.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("scales"),
                contents: bytemuck::cast_slice(init),
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
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
    let denominator: f64 = labels
        .iter()
        .filter(|&&y| y != options.ignore_index)
        .map(|&y| match &options.weight {
            Some(w) => f64::from(w[y as usize]),
            None => 1.0,
        })
        .sum();
    let scale = match options.reduction {
        Reduction::Mean if denominator > 0.0 => 1.0 / denominator,
        Reduction::Mean => 0.0,
        Reduction::Sum | Reduction::None => 1.0,
    };
    [scale as f32, denominator as f32, 0.0, 0.0]
}

/// Checks a caller's buffer: its usage and that it holds at least `elems` 4-byte elements.
fn check_buffer(
    what: &'static str,
    buffer: &wgpu::Buffer,
    elems: u64,
    usage: wgpu::BufferUsages,
) -> Result<()> {
    if !buffer.usage().contains(usage) {
        return Err(Error::BadBuffer {
            what,
            problem: format!("needs usage {usage:?}, has {:?}", buffer.usage()),
        });
    }
    let needed = elems * 4;
    if buffer.size() < needed {
        return Err(Error::BadBuffer {
            what,
            problem: format!("holds {} bytes, needs {needed}", buffer.size()),
        });
    }
    Ok(())
}

/// What the device buffers of a host call hold.
#[derive(Debug, Clone, Copy)]
struct HostLayout {
    /// Rows per chunk.
    chunk_rows: usize,
    cols: usize,
    /// Per-row inputs and outputs (labels, losses, lse); softmax has none.
    per_row: bool,
    /// Probability targets, `chunk_rows * cols`.
    targets: bool,
}

/// The device buffers of one host call, sized for one chunk and reused for each chunk.
struct HostBuffers {
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
        let rows = if layout.per_row {
            layout.chunk_rows as u64
        } else {
            1
        };
        let buffer = |label, len: u64, usage| {
            ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: len * 4,
                usage,
                mapped_at_creation: false,
            })
        };
        Ok(Self {
            layout,
            logits: buffer("logits", elems, U::STORAGE | U::COPY_DST),
            out: buffer("out", elems, U::STORAGE | U::COPY_SRC | U::COPY_DST),
            labels: buffer("labels", rows, U::STORAGE | U::COPY_DST),
            targets: buffer(
                "targets",
                if layout.targets { elems } else { 1 },
                U::STORAGE | U::COPY_DST,
            ),
            row_loss: buffer("row_loss", rows, U::STORAGE | U::COPY_SRC | U::COPY_DST),
            lse: buffer("lse", rows, U::STORAGE | U::COPY_SRC | U::COPY_DST),
            scales: ctx.scales_buffer(stats),
            staging: buffer(
                "staging",
                elems + 2 * rows + STATS_LEN as u64,
                U::MAP_READ | U::COPY_DST,
            ),
            poison: ctx.poison_outputs,
        })
    }

    /// Writes one chunk of logits (and, when poisoning, NaN into the outputs so that an
    /// element the kernel fails to write shows up).
    fn upload(&self, ctx: &Context, logits: &[f32]) {
        ctx.queue
            .write_buffer(&self.logits, 0, bytemuck::cast_slice(logits));
        if self.poison {
            let nan = vec![f32::NAN; logits.len()];
            ctx.queue
                .write_buffer(&self.out, 0, bytemuck::cast_slice(&nan));
            if self.layout.per_row {
                let rows = logits.len() / self.layout.cols;
                let rows = bytemuck::cast_slice(&nan[..rows]);
                ctx.queue.write_buffer(&self.row_loss, 0, rows);
                ctx.queue.write_buffer(&self.lse, 0, rows);
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
        let slice = |buffer, len: usize| Slice {
            buffer,
            start: 0,
            len: len as u64,
        };
        RowBuffers {
            logits: slice(&self.logits, elems),
            out: Some(slice(&self.out, elems)),
            labels: slice(&self.labels, rows),
            targets: slice(&self.targets, targets),
            row_loss: slice(&self.row_loss, rows),
            lse: slice(&self.lse, rows),
            weights,
            scales: &self.scales,
        }
    }

    /// Staging layout: gradient, row losses, lse, stats.
    fn copy_to_staging(&self, encoder: &mut wgpu::CommandEncoder, elems: usize, rows: usize) {
        let (e, r) = ((elems * 4) as u64, (rows * 4) as u64);
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
