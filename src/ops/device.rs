//! The device path: the caller's buffers in and out, recorded into one command buffer, no
//! readback. Chunks of rows are the host path's ([`Context::chunk_rows`]); each is one
//! [`row_softmax::record`] plus, for a reduced loss, its share of the batch sums.

use super::{DeviceCrossEntropy, DeviceSoftmax, DeviceTargets, check_slice};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::batch_sum::{self, STATS_LEN, STATS_LOSS};
use crate::kernels::row_softmax::{self, Entry, RowBuffers, RowKernel, UPSTREAM};
use crate::kernels::{Slice, Strategy, geometry};
use crate::options::{CrossEntropyOptions, Reduction, check_shape};

impl Context {
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
    pub fn encode_cross_entropy<'a>(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        bufs: &DeviceCrossEntropy<'a>,
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
        let logits = check_slice("logits", &bufs.logits, n, eb, storage)?;
        let (labels, targets) = match &bufs.targets {
            DeviceTargets::Classes(b) => {
                (Some(check_slice("labels", b, rows64, 4, storage)?), None)
            }
            DeviceTargets::Probabilities(b) => {
                (None, Some(check_slice("targets", b, n, 4, storage)?))
            }
        };
        let check = |what, slice: &Option<wgpu::BufferSlice<'a>>, elems, elem_bytes, usage| {
            slice
                .as_ref()
                .map(|s| check_slice(what, s, elems, elem_bytes, usage))
                .transpose()
        };
        let grad = check("grad", &bufs.grad, n, eb, storage)?;
        let loss = check("loss", &bufs.loss, 1, 4, wgpu::BufferUsages::COPY_DST)?;
        let row_loss = check("row_loss", &bufs.row_loss, rows64, 4, storage)?;
        let lse = check("lse", &bufs.lse, rows64, 4, storage)?;
        let upstream = check(
            "upstream",
            &bufs.upstream,
            rows64,
            4,
            wgpu::BufferUsages::COPY_SRC,
        )?;
        let strategy = self.resolve_strategy_for(strategy, rows, cols, bufs.precision);
        let mut prepared = self.prepare(options, cols32, ignore, targets.is_some())?;
        prepared.params.has_upstream = u32::from(upstream.is_some());

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
        let row_loss = row_loss.unwrap_or(Slice::words(&own_row_loss, 0, rows64));
        let lse = lse.unwrap_or(Slice::words(&own_lse, 0, rows64));
        let gpu_mean = options.reduction == Reduction::Mean && labels.is_some();
        let scale = match options.reduction {
            Reduction::Mean if gpu_mean => 0.0,
            Reduction::Mean => 1.0 / rows as f32,
            Reduction::Sum | Reduction::None => 1.0,
        };
        // Scales: [stats | upstream gradients | split partials, reused by each row chunk].
        let chunk_rows = self.chunk_rows(cols, strategy)?.min(rows);
        let upstream_len = if upstream.is_some() { rows } else { 0 };
        let partials = geometry::partials_len(strategy, chunk_rows, cols);
        prepared.params.partials_base = (UPSTREAM + upstream_len) as u32;
        let mut init = vec![0.0f32; UPSTREAM + upstream_len + partials];
        init[0] = scale;
        let scales = self.scales_buffer(&init);
        if let Some(up) = upstream {
            let at = up.start * 4;
            encoder.copy_buffer_to_buffer(
                up.buffer,
                at,
                &scales,
                (UPSTREAM * 4) as u64,
                rows64 * 4,
            );
        }

        // A chunk's part of a slice: `count` rows from row `first`.
        let row_slice = |s, first: usize, count: usize| Slice::part(s, first as u64, count as u64);
        let elem_slice = |s, first: usize, count: usize| {
            Slice::part(s, (first * cols) as u64, (count * cols) as u64)
        };
        let tiny_slice = Slice::words(&tiny, 0, 1);
        let sum_params = |count: usize| batch_sum::Params {
            rows: count as u32,
            cols: cols32,
            ignore_index: ignore,
            has_weights: u32::from(prepared.options.weights),
            ..Default::default()
        };
        // Where the batch's sums happen: in batch_sum's dispatches or in the row dispatch.
        let sums = self.plan_sums(strategy, rows, cols32, gpu_mean, loss.is_some())?;
        // 1. A class-target mean's denominator: sum of target weights over all rows, and 1/D.
        if let (Some(labels), true) = (labels, sums.denominator_dispatch) {
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
                logits: elem_slice(logits, first, count),
                out: grad.map(|g| elem_slice(g, first, count)),
                precision: bufs.precision,
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
            params.whole_batch = sums.in_rows;
            let kernel = RowKernel {
                entry: Entry::CrossEntropy,
                strategy,
                options: prepared.options,
            };
            let variant = row_softmax::choose_variant(self, strategy, &rb)?;
            row_softmax::record(self, encoder, kernel, variant, &rb, params)?;
            if sums.loss_dispatch {
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
        if let Some(loss) = loss {
            let at = loss.start * 4;
            encoder.copy_buffer_to_buffer(&scales, (STATS_LOSS * 4) as u64, loss.buffer, at, 4);
        }
        Ok(())
    }

    /// Where a device cross-entropy of `rows` rows in `strategy` does the batch's sums
    /// (`gpu_mean`: a mean whose denominator the GPU counts from the labels; `want_loss`: the
    /// caller asked for the reduced loss). The fewest dispatches that are correct on every
    /// adapter (BENCHMARKS.md, "Fewer dispatches"): WGSL orders storage between workgroups
    /// only across dispatches, so a sum over rows that several workgroups write is a
    /// dispatch after them, and a denominator that every workgroup needs before its gradient
    /// is a dispatch before them, or counted again by each workgroup.
    fn plan_sums(
        &self,
        strategy: Strategy,
        rows: usize,
        cols: u32,
        gpu_mean: bool,
        want_loss: bool,
    ) -> Result<SumsPlan> {
        let single_chunk = rows <= self.chunk_rows(cols as usize, strategy)?;
        let rows32 = rows as u32;
        let one_workgroup = single_chunk && geometry::one_workgroup(strategy, rows32);
        let each_workgroup = gpu_mean && single_chunk && !one_workgroup && {
            let (workgroup, team) = geometry::shape_of(self, strategy, rows32)?;
            let workgroups = (rows as u64).div_ceil(u64::from(workgroup / team));
            geometry::denominator_in_each_workgroup(strategy, rows32, cols, workgroups, workgroup)
        };
        Ok(SumsPlan::choose(
            gpu_mean,
            want_loss,
            one_workgroup,
            each_workgroup,
        ))
    }

    /// Device-resident softmax (or log-softmax) of `bufs.logits` into `bufs.out` (or in
    /// place); returns without waiting. As for [`DeviceCrossEntropy`], slices of whole
    /// 4-element vectors are accessed as vectors (faster).
    ///
    /// ```no_run
    /// use ml_softmax::{Context, DeviceSoftmax, Precision, SoftmaxKind, Strategy, wgpu};
    ///
    /// let ctx = Context::new()?;
    /// let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC;
    /// let logits = ctx.create_buffer("logits", 12, usage | wgpu::BufferUsages::COPY_DST)?;
    /// ctx.queue().write_buffer(&logits, 0, bytemuck::cast_slice(&[1.0f32, 2.0, 3.0]));
    /// let bufs = DeviceSoftmax {
    ///     logits: logits.slice(..),
    ///     out: None, // in place
    ///     precision: Precision::F32,
    ///     kind: SoftmaxKind::Softmax,
    /// };
    /// ctx.softmax_device(&bufs, 1, 3, Strategy::Auto)?;
    /// let p = ctx.read_f32(logits.slice(..))?;
    /// assert!((p[2] - 0.665).abs() < 1e-3);
    /// # Ok::<(), ml_softmax::Error>(())
    /// ```
    pub fn softmax_device(
        &self,
        bufs: &DeviceSoftmax<'_>,
        rows: usize,
        cols: usize,
        strategy: Strategy,
    ) -> Result<wgpu::SubmissionIndex> {
        self.check_alive()?;
        let n = check_shape(rows, cols)? as u64;
        let cols32 = self.check_cols(cols)?;
        let precision = bufs.precision;
        let storage = wgpu::BufferUsages::STORAGE;
        let logits = check_slice("logits", &bufs.logits, n, precision.bytes(), storage)?;
        let out = match &bufs.out {
            Some(out) => Some(check_slice("out", out, n, precision.bytes(), storage)?),
            None => None,
        };
        let strategy = self.resolve_strategy_for(strategy, rows, cols, precision);
        let mut prepared = self.prepare(&CrossEntropyOptions::default(), cols32, -1, false)?;
        prepared.params.log_softmax = bufs.kind.log_flag();
        prepared.params.partials_base = STATS_LEN as u32;
        self.scoped(|| {
            let chunk_rows = self.chunk_rows(cols, strategy)?.min(rows);
            let mut init =
                vec![0.0f32; STATS_LEN + geometry::partials_len(strategy, chunk_rows, cols)];
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
                let elems = |s| Slice::part(s, (first * cols) as u64, (count * cols) as u64);
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
                let kernel = RowKernel {
                    entry: Entry::Softmax,
                    strategy,
                    options: prepared.options,
                };
                let variant = row_softmax::choose_variant(self, strategy, &rb)?;
                row_softmax::record(self, &mut encoder, kernel, variant, &rb, params)?;
            }
            Ok(self.queue.submit([encoder.finish()]))
        })
    }
}

/// Where a device cross-entropy does the batch's sums ([`Context::plan_sums`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SumsPlan {
    /// batch_sum's `TargetWeightSum` dispatch(es) first, one per chunk.
    denominator_dispatch: bool,
    /// `params.whole_batch` of the row dispatches.
    in_rows: u32,
    /// batch_sum's `LossSum` dispatch after each chunk's row dispatch.
    loss_dispatch: bool,
}

impl SumsPlan {
    /// The plan, given whether the batch is one workgroup (of a single chunk), and whether
    /// each of its workgroups may count the denominator itself
    /// ([`geometry::denominator_in_each_workgroup`], for a single chunk).
    fn choose(gpu_mean: bool, want_loss: bool, one_workgroup: bool, each_workgroup: bool) -> Self {
        let plan = |denominator_dispatch, in_rows, loss_dispatch| Self {
            denominator_dispatch,
            in_rows,
            loss_dispatch,
        };
        if one_workgroup {
            // Everything in the row dispatch.
            return match (gpu_mean, want_loss) {
                (true, _) => plan(false, row_softmax::WHOLE_BATCH_MEAN, false),
                (false, true) => plan(false, row_softmax::WHOLE_BATCH_LOSS, false),
                (false, false) => plan(false, 0, false),
            };
        }
        if gpu_mean && each_workgroup {
            return plan(false, row_softmax::BATCH_DENOMINATOR, want_loss);
        }
        plan(gpu_mean, 0, want_loss)
    }

    /// Dispatches per chunk: batch_sum's, and the row kernel's (two for the split layout).
    #[cfg(test)]
    fn dispatches(self, row_dispatches: u32) -> u32 {
        u32::from(self.denominator_dispatch) + row_dispatches + u32::from(self.loss_dispatch)
    }
}

#[cfg(test)]
mod tests {
    use super::SumsPlan;

    /// Dispatches per chunk of a device cross-entropy (a row kernel of one dispatch), the
    /// table of BENCHMARKS.md's "Fewer dispatches": (gpu_mean, want_loss, one workgroup,
    /// each workgroup may count D) -> dispatches. Before: 3 for a GPU-counted mean, 2 for
    /// the other reductions, 1 for one workgroup, whether the loss was asked for or not.
    #[test]
    fn the_fewest_dispatches_per_case() {
        let cases = [
            // One workgroup: one dispatch, whatever is asked.
            (true, true, true, false, 1),
            (false, true, true, false, 1),
            (false, false, true, false, 1),
            // Several workgroups, labels few beside the logits: the denominator in each.
            (true, true, false, true, 2),
            (true, false, false, true, 1),
            // Labels many beside the logits: batch_sum counts D first.
            (true, true, false, false, 3),
            (true, false, false, false, 2),
            // Sum, none, probability targets (D known on the host): the loss sum only if
            // the loss is asked for.
            (false, true, false, true, 2),
            (false, false, false, false, 1),
        ];
        for (gpu_mean, want_loss, one, each, want) in cases {
            let plan = SumsPlan::choose(gpu_mean, want_loss, one, each);
            let what = format!("mean {gpu_mean} loss {want_loss} one {one} each {each}");
            assert_eq!(plan.dispatches(1), want, "{what}: {plan:?}");
        }
    }
}
