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
        // A batch of one workgroup does the sums of steps 1 and 2 in its row dispatch.
        let whole = rows == chunk_rows && geometry::one_workgroup(strategy, rows as u32);
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
            if whole {
                params.whole_batch = if gpu_mean {
                    row_softmax::WHOLE_BATCH_MEAN
                } else {
                    row_softmax::WHOLE_BATCH_LOSS
                };
            }
            let kernel = RowKernel {
                entry: Entry::CrossEntropy,
                strategy,
                options: prepared.options,
            };
            let variant = row_softmax::choose_variant(self, strategy, &rb)?;
            row_softmax::record(self, encoder, kernel, variant, &rb, params)?;
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
        if let Some(loss) = loss {
            let at = loss.start * 4;
            encoder.copy_buffer_to_buffer(&scales, (STATS_LOSS * 4) as u64, loss.buffer, at, 4);
        }
        Ok(())
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
