//! The host path: host slices in, `Vec`s out. Every call goes through one chunk loop,
//! `Context::host_rows_async`: validate → upload one chunk of rows → dispatch (the row
//! kernel: one dispatch per chunk) → read back → add the chunk's row losses to the loss on
//! the CPU → next chunk. A call of several chunks pipelines them over two buffer sets
//! (pool.rs): chunk k + 1 is written into mapped staging and chunk k - 1 copied out of its
//! readback while the GPU runs chunk k; the order of submission, of the loss sum and of the
//! readbacks is that of one chunk at a time, so are the results.

use super::pool::{self, HostBuffers, HostLayout};
use super::{BatchPart, HalfCrossEntropy, SoftmaxKind, Targets, gpu_labels, padded};
use crate::context::Context;
use crate::error::Result;
use crate::kernels::batch_sum::STATS_LEN;
use crate::kernels::row_softmax::{self, Entry, RowKernel};
use crate::kernels::{Precision, Strategy, geometry};
use crate::options::{CrossEntropyOptions, Reduction, check_labels, check_len, check_shape};
use crate::reference::CrossEntropyOutput;

/// Blocking methods that wait on an async host call ([`Context::block_on_gpu`]): each item
/// is a method's docs and signature, then `=>` the future it waits on (an `_async` call of
/// `host_async.rs`, or of this file). The wrapper's body is written once, here, so the
/// blocking API cannot drift from the async one it wraps.
macro_rules! blocking {
    ($($(#[$attr:meta])* pub fn $name:ident(&$s:ident $(, $arg:ident: $ty:ty)* $(,)?) -> $ret:ty
        => $wait:expr;)*) => {
        $(
            $(#[$attr])*
            pub fn $name(&$s $(, $arg: $ty)*) -> $ret {
                $s.block_on_gpu($wait)
            }
        )*
    };
}

impl Context {
    blocking! {
        /// Cross-entropy loss, per-row losses, per-row lse and the gradient, for host data
        /// with class-index targets.
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
        pub fn cross_entropy(&self, logits: &[f32], labels: &[i64], rows: usize, cols: usize,
            options: &CrossEntropyOptions) -> Result<CrossEntropyOutput>
            => self.cross_entropy_async(logits, labels, rows, cols, options);

        /// [`Context::cross_entropy`] with an explicit reduction strategy.
        pub fn cross_entropy_with(&self, logits: &[f32], labels: &[i64], rows: usize, cols: usize,
            options: &CrossEntropyOptions, strategy: Strategy) -> Result<CrossEntropyOutput>
            => self.cross_entropy_targets_async(
                logits, Targets::Classes(labels), rows, cols, options, strategy);

        /// Cross-entropy with probability targets `[rows, cols]`; see
        /// [`crate::reference::cross_entropy_probs`] for the formulas.
        pub fn cross_entropy_probs(&self, logits: &[f32], targets: &[f32], rows: usize,
            cols: usize, options: &CrossEntropyOptions) -> Result<CrossEntropyOutput>
            => self.cross_entropy_targets_async(
                logits, Targets::Probabilities(targets), rows, cols, options, Strategy::Auto);

        /// Cross-entropy for host data, with either kind of targets and an explicit strategy.
        pub fn cross_entropy_targets(&self, logits: &[f32], targets: Targets<'_>, rows: usize,
            cols: usize, options: &CrossEntropyOptions, strategy: Strategy)
            -> Result<CrossEntropyOutput>
            => self.cross_entropy_targets_async(logits, targets, rows, cols, options, strategy);

        /// Softmax of each row of host data.
        ///
        /// ```no_run
        /// let ctx = ml_softmax::Context::new()?;
        /// let p = ctx.softmax(&[1.0, 2.0, 3.0], 1, 3)?;
        /// assert!((p[2] - 0.665).abs() < 1e-3);
        /// # Ok::<(), ml_softmax::Error>(())
        /// ```
        pub fn softmax(&self, logits: &[f32], rows: usize, cols: usize) -> Result<Vec<f32>>
            => self.softmax_with_async(logits, rows, cols, SoftmaxKind::Softmax, Strategy::Auto);

        /// Log-softmax of each row of host data.
        pub fn log_softmax(&self, logits: &[f32], rows: usize, cols: usize) -> Result<Vec<f32>>
            => self.softmax_with_async(
                logits, rows, cols, SoftmaxKind::LogSoftmax, Strategy::Auto);

        /// Softmax or log-softmax (`kind`) with an explicit strategy.
        ///
        /// ```
        /// use ml_softmax::{Context, SoftmaxKind, Strategy};
        /// let ctx = Context::new()?;
        /// let lp = ctx.softmax_with(&[1.0, 2.0, 3.0], 1, 3, SoftmaxKind::LogSoftmax, Strategy::Auto)?;
        /// assert!((lp[2] - 0.665f32.ln()).abs() < 1e-3);
        /// # Ok::<(), ml_softmax::Error>(())
        /// ```
        pub fn softmax_with(&self, logits: &[f32], rows: usize, cols: usize, kind: SoftmaxKind,
            strategy: Strategy) -> Result<Vec<f32>>
            => self.softmax_with_async(logits, rows, cols, kind, strategy);

        /// Softmax or log-softmax of half-precision logits (`F16` or `Bf16` bits), with the
        /// output in the same format.
        pub fn softmax_half(&self, logits: &[u16], precision: Precision, rows: usize,
            cols: usize, kind: SoftmaxKind, strategy: Strategy) -> Result<Vec<u16>>
            => async move {
                let job = HostJob::Softmax { kind };
                let out = self.host_elements_async(logits, precision, job, rows, cols, strategy);
                Ok(out.await?.grad)
            };
    }

    /// Cross-entropy of half-precision logits (`F16` or `Bf16` bits, one `u16` each): the
    /// gradient comes back in the same format; loss, row losses and lse as f32. All
    /// arithmetic is f32. `F16` needs an adapter with `Features::SHADER_F16`.
    ///
    /// ```
    /// use ml_softmax::{Context, CrossEntropyOptions, HalfCrossEntropy, Precision, Strategy, Targets};
    /// let ctx = Context::new()?;
    /// // bf16 bits of [1, 2, 3]: the upper half of each f32.
    /// let logits: Vec<u16> = [1.0f32, 2.0, 3.0].iter().map(|x| (x.to_bits() >> 16) as u16).collect();
    /// let out = ctx.cross_entropy_half(&HalfCrossEntropy {
    ///     logits: &logits,
    ///     precision: Precision::Bf16,
    ///     targets: Targets::Classes(&[1]),
    ///     rows: 1,
    ///     cols: 3,
    ///     options: &CrossEntropyOptions::default(),
    ///     strategy: Strategy::Auto,
    /// })?;
    /// assert!((out.loss - 1.4076).abs() < 1e-3);
    /// # Ok::<(), ml_softmax::Error>(())
    /// ```
    pub fn cross_entropy_half(
        &self,
        request: &HalfCrossEntropy<'_>,
    ) -> Result<CrossEntropyOutput<u16>> {
        let logits = request.checked_logits()?;
        let job = HostJob::CrossEntropy {
            targets: request.targets,
            options: request.options,
        };
        let (rows, cols, precision) = (request.rows, request.cols, request.precision);
        let done = self.host_elements_async(logits, precision, job, rows, cols, request.strategy);
        self.block_on_gpu(done)
    }

    /// [`Context::host_rows_async`] on typed elements (f32, or u16 bits of halves), as one
    /// whole call: checks their count, and gives the output back in the same type. The core
    /// of the host API's sync and async calls.
    pub(super) async fn host_elements_async<T: bytemuck::Pod>(
        &self,
        logits: &[T],
        precision: Precision,
        job: HostJob<'_>,
        rows: usize,
        cols: usize,
        strategy: Strategy,
    ) -> Result<CrossEntropyOutput<T>> {
        let n = check_shape(rows, cols)?;
        check_len("logits", n, logits.len())?;
        let call = HostCall {
            logits: bytemuck::cast_slice(logits),
            precision,
            job,
            rows,
            cols,
            strategy,
            part: BatchPart::whole(),
        };
        let out = self.host_rows_async(call).await?;
        Ok(out.map_grad(|bytes| bytemuck::pod_collect_to_vec(&bytes)))
    }

    /// [`Context::host_rows_async`], waiting for the GPU: a piece of a longer batch
    /// (`src/stream.rs`, `src/multi.rs`), whose gradient comes back as bytes in the logits'
    /// format and whose `loss` is the batch's loss so far.
    pub(crate) fn host_rows(&self, call: HostCall<'_>) -> Result<CrossEntropyOutput<u8>> {
        self.block_on_gpu(self.host_rows_async(call))
    }

    /// How many row chunks this context's host calls have submitted: a test hook, as a
    /// call's chunking does not show in its element and row outputs.
    #[doc(hidden)]
    pub fn host_chunks_submitted(&self) -> u64 {
        self.host_chunks.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Every host call: validate → upload a chunk of rows → dispatch → read back → next
    /// chunk. The output (softmax or gradient) comes back as bytes in the logits' format, in
    /// `grad` (softmax leaves the rest empty). Async: each chunk's readback is awaited, never
    /// blocked on.
    async fn host_rows_async(&self, call: HostCall<'_>) -> Result<CrossEntropyOutput<u8>> {
        let HostCall {
            logits,
            precision,
            job,
            rows,
            cols,
            strategy,
            part,
        } = call;
        self.check_alive()?;
        let n = check_shape(rows, cols)?;
        if let HostJob::CrossEntropy { options, .. } = job {
            options.validate(cols)?;
        }
        let cols32 = self.check_cols(cols)?;
        let strategy = self.resolve_strategy_for(strategy, rows, cols, precision);

        // The per-row inputs: class labels go to the GPU as i32, ignored rows as -1, which
        // no class can be, so any i64 ignore index works.
        let (entry, prepared, inputs, denominator) = match job {
            HostJob::Softmax { kind } => {
                let mut prepared =
                    self.prepare(&CrossEntropyOptions::default(), cols32, -1, false)?;
                prepared.params.log_softmax = kind.log_flag();
                (Entry::Softmax, prepared, RowInputs::None, 0.0)
            }
            HostJob::CrossEntropy {
                targets: Targets::Classes(labels),
                options,
            } => {
                check_len("labels", rows, labels.len())?;
                check_labels(labels, cols, options.ignore_index)?;
                let gpu = gpu_labels(labels, options.ignore_index);
                let prepared = self.prepare(options, cols32, -1, false)?;
                let d = class_denominator(labels, options);
                (Entry::CrossEntropy, prepared, RowInputs::Labels(gpu), d)
            }
            HostJob::CrossEntropy {
                targets: Targets::Probabilities(t),
                options,
            } => {
                check_len("targets", n, t.len())?;
                let prepared = self.prepare(options, cols32, -1, true)?;
                let d = rows as f64;
                (
                    Entry::CrossEntropy,
                    prepared,
                    RowInputs::Probabilities(t),
                    d,
                )
            }
        };
        // The reduction's factor: 1 / D for a mean (over the whole batch when this call is a
        // piece of a longer one), 1 otherwise. The GPU scales the gradient by it; the host
        // scales the loss (`add_chunk_loss`).
        let (scale, stats) = match job {
            HostJob::CrossEntropy { options, .. } => {
                let denominator = part.denominator.unwrap_or(denominator);
                let scale = reduction_scale(denominator, options.reduction);
                (scale, [scale as f32, denominator as f32, 0.0, 0.0])
            }
            HostJob::Softmax { .. } => (1.0, [1.0, 0.0, 0.0, 0.0]),
        };
        let per_row = entry == Entry::CrossEntropy;
        let kernel = RowKernel {
            entry,
            strategy,
            options: prepared.options,
        };

        let eb = precision.bytes() as usize;
        // Chunks within the binding limit, and of at most `PIPELINE_CHUNK_BYTES` of logits
        // when the call is larger than that. A call of several chunks alternates between two
        // sets of buffers (pool.rs, `SETS`).
        let pipeline_rows = (pool::PIPELINE_CHUNK_BYTES / (cols * eb)).max(1);
        let chunk_rows = self
            .chunk_rows(cols, strategy)?
            .min(pipeline_rows)
            .min(rows);
        let sets = if rows > chunk_rows { pool::SETS } else { 1 };
        let layout = HostLayout {
            chunk_rows,
            cols,
            per_row,
            targets: matches!(inputs, RowInputs::Probabilities(_)),
            precision,
            partials: geometry::partials_len(strategy, chunk_rows, cols),
            sets,
        };
        let mut bufs = self.host_buffers(layout, &stats)?;
        let mut out = CrossEntropyOutput {
            // The loss of the batch's earlier pieces; each chunk adds its share.
            loss: part.loss_before,
            row_loss: Vec::with_capacity(if per_row { rows } else { 0 }),
            lse: Vec::with_capacity(if per_row { rows } else { 0 }),
            grad: Vec::with_capacity(n * eb),
        };
        // The pipeline: chunk k is uploaded into set k % 2 and submitted, then chunk k - 1 is
        // read back out of the other set while the GPU runs chunk k, and chunk k + 1's upload
        // follows while it still does. Chunks are submitted, summed and read back in order,
        // so the results are those of one chunk at a time, bit for bit.
        let mut submitted: Option<Submitted> = None;
        for (k, first) in (0..rows).step_by(chunk_rows).enumerate() {
            let set = k % sets;
            let count = chunk_rows.min(rows - first);
            let elems = count * cols;
            let chunk = &logits[first * cols * eb..][..elems * eb];
            bufs.upload(self, set, chunk, elems).await?;
            // Dispatch inside an error scope; wait and read back outside it.
            let dispatch = self.scoped_async(|| {
                match &inputs {
                    RowInputs::None => {}
                    RowInputs::Labels(labels) => {
                        bufs.upload_labels(self, set, &labels[first..][..count])
                    }
                    RowInputs::Probabilities(t) => {
                        bufs.upload_targets(self, set, &t[first * cols..][..elems])
                    }
                }
                let mut encoder = self.encoder();
                bufs.record_upload(&mut encoder, set, chunk.len());
                let mut params = prepared.params;
                params.rows = count as u32;
                params.partials_base = STATS_LEN as u32;
                // One row dispatch is all: the mean's factor came with the stats, and the
                // loss is summed here from the row losses read back (`add_chunk_loss`).
                let rb = bufs.row_buffers(set, elems, count, &prepared.weights);
                let variant = row_softmax::choose_variant(self, strategy, &rb)?;
                row_softmax::record(self, &mut encoder, kernel, variant, &rb, params)?;
                let back_len = bufs.copy_to_staging(&mut encoder, set, elems, count);
                let index = self.queue.submit([encoder.finish()]);
                self.host_chunks
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok((back_len, index))
            });
            let (back_len, index) = dispatch.await?;
            bufs.remap_upload(self, set);
            let this = Submitted {
                set,
                count,
                out_bytes: elems * eb,
                back_len,
                index,
            };
            if let Some(previous) = submitted.replace(this) {
                previous
                    .read_back(self, &mut bufs, per_row, scale, &mut out)
                    .await?;
            }
        }
        if let Some(last) = submitted {
            last.read_back(self, &mut bufs, per_row, scale, &mut out)
                .await?;
        }
        Ok(out)
    }
}

/// A chunk submitted and not yet read back: its set, rows, output bytes, readback bytes and
/// submission.
struct Submitted {
    set: usize,
    count: usize,
    out_bytes: usize,
    back_len: usize,
    index: wgpu::SubmissionIndex,
}

impl Submitted {
    /// Waits for the chunk's readback and appends it to `out`, copying straight out of the
    /// mapped staging: the output (softmax or gradient bytes) and, per row, losses and lse;
    /// the loss is the batch's so far.
    async fn read_back(
        self,
        ctx: &Context,
        bufs: &mut HostBuffers,
        per_row: bool,
        scale: f64,
        out: &mut CrossEntropyOutput<u8>,
    ) -> Result<()> {
        let Self {
            set,
            count,
            out_bytes,
            back_len,
            index,
        } = self;
        // A blocking call waits for this chunk's submission only, not for the next chunk's.
        crate::platform::wait_first_for(index);
        bufs.read_back(ctx, set, back_len, |back| {
            out.grad.extend_from_slice(&back[..out_bytes]);
            if per_row {
                let tail: Vec<f32> = bytemuck::pod_collect_to_vec(&back[padded(out_bytes)..]);
                out.row_loss.extend_from_slice(&tail[..count]);
                out.lse.extend_from_slice(&tail[count..][..count]);
                out.loss = add_chunk_loss(out.loss, scale, &tail[..count]);
            }
        })
        .await
    }
}

/// One host call: the logits as bytes stored as `precision` (`rows * cols` of them), what
/// to compute, the strategy, and where the call sits in a longer batch (`part`;
/// [`BatchPart::whole`]: none).
#[derive(Clone, Copy)]
pub(crate) struct HostCall<'a> {
    pub(crate) logits: &'a [u8],
    pub(crate) precision: Precision,
    pub(crate) job: HostJob<'a>,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) strategy: Strategy,
    pub(crate) part: BatchPart,
}

/// What a host call computes.
#[derive(Clone, Copy)]
pub(crate) enum HostJob<'a> {
    /// Softmax, or log-softmax, of each row.
    Softmax { kind: SoftmaxKind },
    /// The cross-entropy and its gradient.
    CrossEntropy {
        targets: Targets<'a>,
        options: &'a CrossEntropyOptions,
    },
}

/// The per-row inputs a host call uploads with each chunk.
enum RowInputs<'a> {
    /// Softmax: none.
    None,
    /// Class labels as the GPU takes them.
    Labels(Vec<i32>),
    /// Probability targets, `[rows, cols]`.
    Probabilities(&'a [f32]),
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

/// The reduction's factor given the mean's denominator `D`: `1 / D` for `Mean` (0 when
/// `D = 0`: loss 0 and a zero gradient), 1 for `Sum` and `None`.
fn reduction_scale(denominator: f64, reduction: Reduction) -> f64 {
    match reduction {
        Reduction::Mean if denominator > 0.0 => 1.0 / denominator,
        Reduction::Mean => 0.0,
        Reduction::Sum | Reduction::None => 1.0,
    }
}

/// The reduced loss after one more chunk: `loss + scale * sum of the chunk's row losses`,
/// summed here in f64, in row order. The host path reads every row loss back anyway, so
/// summing them here saves the GPU a dispatch per chunk (BENCHMARKS.md, "Fewer dispatches");
/// the same rows in the same chunks give the same bits, whether one call or a stream's
/// pieces. A factor of 0 (a mean over nothing) adds nothing, even where a row loss is NaN.
fn add_chunk_loss(loss: f32, scale: f64, row_loss: &[f32]) -> f32 {
    if scale == 0.0 {
        return loss;
    }
    let sum: f64 = row_loss.iter().map(|&l| f64::from(l)).sum();
    (f64::from(loss) + scale * sum) as f32
}
