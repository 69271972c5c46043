//! Vocabulary-parallel cross-entropy: each rank holds `logits[:, start..start + cols]` of a
//! vocabulary of `V` classes, and the ranks merge per-row statistics with two all-reduces
//! of the caller's collective (MPI, torch.distributed, threads) instead of gathering rows.
//!
//! The data flow, per rank:
//! 1. [`Context::vocab_partials`]: the GPU computes, per row of the shard, the online-softmax
//!    stats of the split layout (`split_stats` of shaders/row_softmax.wgsl): max `m`,
//!    `d = sum_j exp(z'_j - m)`, and the sums the options need (`s1`, `s2`: see below); the
//!    host adds the target class's weight `w_y` when the label falls in the shard, and the
//!    shard's weight sum.
//! 2. all-reduce **max** over [`VocabPartials::max`]: the row max `M` over the whole vocabulary.
//! 3. [`VocabPartials::sums`]`(M)`: `d * exp(m - M)` (every rank's sum rescaled to the
//!    common max: the merge rule of `merge` in row_softmax.wgsl and of docs/reductions.md
//!    step 5, done in two steps because a collective reduces one operator at a time), then
//!    all-reduce **sum**.
//! 4. [`Context::vocab_finish`]: the merged stats go in as the split layout's partials and
//!    `split_write` writes this rank's slice of the gradient, the row losses and lse; the
//!    reduced loss (the whole batch's: every rank computes the same one) is summed on the host.
//!
//! [`Context::vocab_parallel_cross_entropy`] does the four steps with an `all_reduce`
//! callback. The sums (per row `d`, `s1`, `s2`, `w_y`, then the weight sum `W`):
//! `s1 = sum_j w_j z'_j` with label smoothing (class targets), `sum_j w_j t'_j z'_j` with
//! probability targets; `s2 = z'_y` (0 on the ranks that do not hold `y`), `T = sum_j w_j t'_j`
//! with probability targets. Each label's `w_y` comes from exactly one rank, so the mean's
//! denominator `D = sum_r w_y(r)` is counted once.
//!
//! **Reproducibility.** The max is exact in any order. The sum is not: results are
//! bit-reproducible from run to run only if the collective adds the ranks' vectors in an order
//! that does not change between calls (e.g. rank order, or a fixed tree), and every rank must
//! receive the same bits (all-reduce semantics), or ranks would compute slightly different
//! `lse` and losses. MPI implementations and NCCL keep a fixed order for a fixed
//! communicator, message size and algorithm; `NCCL_ALGO` / Open MPI's tuned collectives can
//! change it between configurations.

use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::batch_sum::STATS_LEN;
use crate::kernels::geometry::SPLIT_CHUNK_COLS;
use crate::kernels::row_softmax::{self, Entry, Params, RowBuffers, RowKernel, SplitPass};
use crate::kernels::{Slice, Specialisation, Strategy};
use crate::ops::{Targets, gpu_labels};
use crate::options::{CrossEntropyOptions, Reduction, check_labels, check_len, check_shape};
use crate::reference::CrossEntropyOutput;

/// The split layout that shards use, at its default width (256 lanes per workgroup).
const SPLIT: Strategy = Strategy::Split { lanes: 256 };
/// Floats per row in the sum all-reduce: `d`, `s1`, `s2`, `w_y`.
const PER_ROW: usize = 4;
/// The split layout's running-max start (`LOWEST` in row_softmax.wgsl): a max that saw only
/// `-inf` masks.
const LOWEST: f32 = f32::MIN;

/// One rank's part of a vocabulary-parallel cross-entropy.
#[derive(Debug, Clone, Copy)]
pub struct VocabShard<'a> {
    /// Row-major `[rows, cols]`: columns `vocab_start .. vocab_start + cols` of each row.
    pub logits: &'a [f32],
    /// `Classes`: the whole batch's labels (`[rows]`, classes of the whole vocabulary), the
    /// same on every rank. `Probabilities`: this rank's columns of the targets, `[rows, cols]`.
    pub targets: Targets<'a>,
    /// Rows of the batch (the same on every rank).
    pub rows: usize,
    /// Columns this rank holds (at least 1).
    pub cols: usize,
    /// The class of this rank's first column.
    pub vocab_start: usize,
    /// Classes of the whole vocabulary, `V` (the sum of the ranks' `cols`).
    pub vocab_size: usize,
}

/// The operator of one all-reduce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    /// Elementwise maximum.
    Max,
    /// Elementwise sum.
    Sum,
}

/// What one rank's GPU learnt about its shard ([`Context::vocab_partials`]).
#[derive(Debug, Clone, PartialEq)]
pub struct VocabPartials {
    /// Per row, the max of the shard's (soft-capped) logits: all-reduce it with max.
    pub max: Vec<f32>,
    /// Per row `d`, `s1`, `s2`, `w_y` at the shard's own max.
    stats: Vec<f32>,
    /// Sum of the shard's class weights (`cols` without weights).
    weight_sum: f32,
}

impl VocabPartials {
    /// Length of the vector [`sums`](Self::sums) returns for `rows` rows: `4 * rows + 1`.
    pub fn sums_len(rows: usize) -> usize {
        PER_ROW * rows + 1
    }

    /// The vector to all-reduce with sum, given the all-reduced max: per row
    /// `d * exp(m - max)`, `s1`, `s2`, `w_y`, then the shard's weight sum.
    pub fn sums(&self, max: &[f32]) -> Result<Vec<f32>> {
        check_len("all-reduced max", self.max.len(), max.len())?;
        let mut out = Vec::with_capacity(Self::sums_len(max.len()));
        for ((&m, &global), st) in self.max.iter().zip(max).zip(self.stats.chunks(PER_ROW)) {
            out.extend_from_slice(&[rescaled(st[0], m, global), st[1], st[2], st[3]]);
        }
        out.push(self.weight_sum);
        Ok(out)
    }
}

/// `d`, a sum of `exp(z - m)`, as a sum of `exp(z - max)`: one side of `merge` in
/// row_softmax.wgsl. A zero sum stays 0 (no `0 * inf`).
fn rescaled(d: f32, m: f32, max: f32) -> f32 {
    if d == 0.0 { 0.0 } else { d * (m - max).exp() }
}

/// The online-softmax merge of two split-layout partials `(m, d, s1, s2)`, as `merge` in
/// row_softmax.wgsl: the merge of a row's chunks, here on the host.
fn merge(a: [f32; 4], b: [f32; 4]) -> [f32; 4] {
    let m = a[0].max(b[0]);
    [
        m,
        a[1] * (a[0] - m).exp() + b[1] * (b[0] - m).exp(),
        a[2] + b[2],
        a[3] + b[3],
    ]
}

impl Context {
    /// Step 1 of a vocabulary-parallel cross-entropy (see [`crate::parallel`]): this rank's
    /// per-row partial statistics. `options.weight`, when given, is this rank's slice of the
    /// class weights (`shard.cols` of them); the other options are the whole call's.
    pub fn vocab_partials(
        &self,
        shard: &VocabShard<'_>,
        options: &CrossEntropyOptions,
    ) -> Result<VocabPartials> {
        let job = Job::new(self, shard, options)?;
        let mut partials = VocabPartials {
            max: Vec::with_capacity(shard.rows),
            stats: Vec::with_capacity(PER_ROW * shard.rows),
            weight_sum: match &options.weight {
                Some(w) => w.iter().map(|&x| f64::from(x)).sum::<f64>() as f32,
                None => shard.cols as f32,
            },
        };
        // Not the host path's chunk loop (ops/host.rs, host_rows_async): each chunk here is
        // one split pass whose partials come back to be merged across ranks on the host, not
        // the row kernel and the loss sums; only the chunk size (Context::chunk_rows) and
        // the params (Params::for_loss) are the host path's.
        for first in (0..shard.rows).step_by(job.chunk_rows) {
            let count = job.chunk_rows.min(shard.rows - first);
            let chunks = shard.cols.div_ceil(SPLIT_CHUNK_COLS as usize);
            // Poisoned: a partial the kernel fails to write is NaN.
            let scales = vec![f32::NAN; STATS_LEN + PER_ROW * count * chunks];
            let bufs = job.buffers(first, count, &scales, None)?;
            let back = self.scoped(|| {
                let mut encoder = self.encoder();
                let params = job.params(count, 0);
                job.record(&mut encoder, SplitPass::Stats, &bufs, params)?;
                let bytes = (scales.len() - STATS_LEN) as u64 * 4;
                encoder.copy_buffer_to_buffer(
                    &bufs.scales,
                    STATS_LEN as u64 * 4,
                    &bufs.staging,
                    0,
                    bytes,
                );
                self.queue.submit([encoder.finish()]);
                Ok(bytes as usize)
            })?;
            let back: Vec<f32> =
                bytemuck::pod_collect_to_vec(&self.read_bytes(&bufs.staging, back)?);
            // Each row's chunks merged in chunk order, as split_write does.
            for (r, row) in back.chunks(PER_ROW * chunks).enumerate() {
                let st = row
                    .chunks(PER_ROW)
                    .map(|p| [p[0], p[1], p[2], p[3]])
                    .fold([LOWEST, 0.0, 0.0, 0.0], merge);
                partials.max.push(st[0]);
                partials.stats.extend_from_slice(&[
                    st[1],
                    st[2],
                    st[3],
                    job.target_weight(first + r),
                ]);
            }
        }
        Ok(partials)
    }

    /// Step 4 of a vocabulary-parallel cross-entropy: this rank's slice of the gradient,
    /// given the all-reduced `max` (`[rows]`) and `sums` (`[4 * rows + 1]`). `loss`,
    /// `row_loss` and `lse` are the whole batch's (the same on every rank); `grad` is
    /// `[rows, shard.cols]`.
    pub fn vocab_finish(
        &self,
        shard: &VocabShard<'_>,
        options: &CrossEntropyOptions,
        max: &[f32],
        sums: &[f32],
    ) -> Result<CrossEntropyOutput> {
        let job = Job::new(self, shard, options)?;
        let rows = shard.rows;
        check_len("all-reduced max", rows, max.len())?;
        check_len(
            "all-reduced sums",
            VocabPartials::sums_len(rows),
            sums.len(),
        )?;
        let merged = |r: usize| &sums[PER_ROW * r..][..PER_ROW];
        // The reduction factor: 1 / D for a mean of class targets, D the merged w_y.
        let k = match (options.reduction, shard.targets) {
            (Reduction::Mean, Targets::Classes(_)) => {
                let d: f64 = (0..rows).map(|r| f64::from(merged(r)[3])).sum();
                if d > 0.0 { 1.0 / d } else { 0.0 }
            }
            (Reduction::Mean, Targets::Probabilities(_)) => 1.0 / rows as f64,
            (Reduction::Sum | Reduction::None, _) => 1.0,
        };
        let weight_sum = sums[PER_ROW * rows];
        let mut out = CrossEntropyOutput {
            loss: 0.0,
            row_loss: Vec::with_capacity(rows),
            lse: Vec::with_capacity(rows),
            grad: Vec::with_capacity(rows * shard.cols),
        };
        let chunks = shard.cols.div_ceil(SPLIT_CHUNK_COLS as usize);
        for first in (0..rows).step_by(job.chunk_rows) {
            let count = job.chunk_rows.min(rows - first);
            // The merged stats as each row's chunk-0 partial; the other chunks hold the
            // merge's identity, so split_write's merge over the chunks gives them back.
            let mut scales = vec![k as f32, 0.0, 0.0, 0.0];
            let mut row_weights = Vec::with_capacity(count);
            for (r, &m) in max.iter().enumerate().skip(first).take(count) {
                let s = merged(r);
                scales.extend_from_slice(&[m, s[0], s[1], s[2]]);
                for _ in 1..chunks {
                    scales.extend_from_slice(&[LOWEST, 0.0, 0.0, 0.0]);
                }
                row_weights.push(s[3]);
            }
            let bufs = job.buffers(first, count, &scales, Some(&row_weights))?;
            let back = self.scoped(|| {
                let mut encoder = self.encoder();
                let mut params = job.params(count, shard.cols as u32);
                params.weight_sum = weight_sum;
                job.record(&mut encoder, SplitPass::Write, &bufs, params)?;
                let bytes = bufs.copy_outputs(&mut encoder);
                self.queue.submit([encoder.finish()]);
                Ok(bytes)
            })?;
            bufs.read_outputs(self, back, &mut out)?;
        }
        // The whole batch's loss, from the row losses every rank has; a factor of 0 (a mean
        // over nothing) gives 0 even where a row loss is NaN.
        if k != 0.0 {
            let total: f64 = out.row_loss.iter().map(|&l| f64::from(l)).sum();
            out.loss = (k * total) as f32;
        }
        Ok(out)
    }

    /// A whole vocabulary-parallel cross-entropy on this rank: [`Self::vocab_partials`],
    /// `all_reduce(max, Max)`, [`VocabPartials::sums`], `all_reduce(sums, Sum)`,
    /// [`Self::vocab_finish`]. `all_reduce` must be called collectively by every rank, reduce
    /// the ranks' slices elementwise in place, and give every rank the same result (see
    /// [`crate::parallel`] for what reproducibility needs of it).
    ///
    /// Threads standing in for ranks, each holding some columns of a 10-class vocabulary
    /// (runnable: `cargo test --doc`, on the machine's default adapter):
    ///
    /// ```
    /// use std::sync::{Barrier, Mutex};
    /// use ml_softmax::parallel::{ReduceOp, VocabShard};
    /// use ml_softmax::{Context, CrossEntropyOptions, Targets};
    ///
    /// let (rows, vocab) = (3, 10);
    /// let logits: Vec<f32> = (0..rows * vocab).map(|i| (i % 7) as f32 * 0.5).collect();
    /// let labels = [1i64, 9, 4];
    /// let bounds = [0, 3, 5, 8, 10]; // 4 ranks, uneven slices
    /// let ranks = bounds.len() - 1;
    /// let ctx = Context::new()?; // one adapter shared by the "ranks" (a Context is Sync)
    /// // A toy all-reduce: each rank leaves its vector in its slot, waits for the others,
    /// // then folds all slots in rank order (so every rank gets the same bits).
    /// let slots = Mutex::new(vec![Vec::new(); ranks]);
    /// let barrier = Barrier::new(ranks);
    /// let all_reduce = |rank: usize, v: &mut [f32], op: ReduceOp| {
    ///     slots.lock().unwrap()[rank] = v.to_vec();
    ///     barrier.wait();
    ///     for (i, x) in v.iter_mut().enumerate() {
    ///         let column = slots.lock().unwrap().iter().map(|s| s[i]).collect::<Vec<_>>();
    ///         *x = match op {
    ///             ReduceOp::Max => column.into_iter().fold(f32::NEG_INFINITY, f32::max),
    ///             ReduceOp::Sum => column.into_iter().sum(),
    ///         };
    ///     }
    ///     barrier.wait();
    /// };
    /// let losses: Vec<f32> = std::thread::scope(|s| {
    ///     let handles: Vec<_> = (0..ranks)
    ///         .map(|rank| {
    ///             let (ctx, logits, all_reduce) = (&ctx, &logits, &all_reduce);
    ///             s.spawn(move || {
    ///                 let (start, cols) = (bounds[rank], bounds[rank + 1] - bounds[rank]);
    ///                 let mine: Vec<f32> =
    ///                     logits.chunks(vocab).flat_map(|row| &row[start..start + cols]).copied().collect();
    ///                 let shard = VocabShard {
    ///                     logits: &mine,
    ///                     targets: Targets::Classes(&labels), // the whole batch's labels
    ///                     rows,
    ///                     cols,
    ///                     vocab_start: start,
    ///                     vocab_size: vocab,
    ///                 };
    ///                 let options = CrossEntropyOptions::default();
    ///                 let out = ctx.vocab_parallel_cross_entropy(&shard, &options, |v, op| {
    ///                     all_reduce(rank, v, op);
    ///                     Ok(())
    ///                 })?;
    ///                 Ok::<f32, ml_softmax::Error>(out.loss) // out.grad: [rows, cols], this slice
    ///             })
    ///         })
    ///         .collect();
    ///     handles.into_iter().map(|h| h.join().unwrap().unwrap()).collect()
    /// });
    /// let whole = ctx.cross_entropy(&logits, &labels, rows, vocab, &CrossEntropyOptions::default())?;
    /// assert!(losses.iter().all(|&l| (l - whole.loss).abs() <= 1e-5 * whole.loss.abs()));
    /// # Ok::<(), ml_softmax::Error>(())
    /// ```
    pub fn vocab_parallel_cross_entropy(
        &self,
        shard: &VocabShard<'_>,
        options: &CrossEntropyOptions,
        mut all_reduce: impl FnMut(&mut [f32], ReduceOp) -> Result<()>,
    ) -> Result<CrossEntropyOutput> {
        let partials = self.vocab_partials(shard, options)?;
        let mut max = partials.max.clone();
        all_reduce(&mut max, ReduceOp::Max)?;
        let mut sums = partials.sums(&max)?;
        all_reduce(&mut sums, ReduceOp::Sum)?;
        self.vocab_finish(shard, options, &max, &sums)
    }
}

/// A checked shard call: what both halves share.
struct Job<'a> {
    ctx: &'a Context,
    shard: &'a VocabShard<'a>,
    options: &'a CrossEntropyOptions,
    /// Class labels as i32 (ignored rows -1, as the host path sends them).
    labels: Vec<i32>,
    chunk_rows: usize,
}

impl<'a> Job<'a> {
    fn new(
        ctx: &'a Context,
        shard: &'a VocabShard<'a>,
        options: &'a CrossEntropyOptions,
    ) -> Result<Self> {
        ctx.check_alive()?;
        let n = check_shape(shard.rows, shard.cols)?;
        check_len("logits", n, shard.logits.len())?;
        options.validate(shard.cols)?;
        let end = shard.vocab_start.checked_add(shard.cols);
        if end.is_none_or(|end| end > shard.vocab_size) || shard.vocab_size > i32::MAX as usize {
            return Err(Error::InvalidOption {
                name: "vocab_start",
                value: format!(
                    "{} (with {} columns of a vocabulary of {})",
                    shard.vocab_start, shard.cols, shard.vocab_size
                ),
                reason: "the shard's columns must lie inside the vocabulary (of at most 2^31 - 1 classes)",
            });
        }
        let labels = match shard.targets {
            Targets::Classes(labels) => {
                check_len("labels", shard.rows, labels.len())?;
                check_labels(labels, shard.vocab_size, options.ignore_index)?;
                gpu_labels(labels, options.ignore_index)
            }
            Targets::Probabilities(t) => {
                check_len("targets", n, t.len())?;
                Vec::new()
            }
        };
        ctx.check_cols(shard.cols)?;
        let chunk_rows = ctx.chunk_rows(shard.cols, SPLIT)?.min(shard.rows);
        Ok(Self {
            ctx,
            shard,
            options,
            labels,
            chunk_rows,
        })
    }

    /// w_y of row `r` if its label is one of this shard's classes, else 0 (and 0 for ignored
    /// rows and probability targets).
    fn target_weight(&self, r: usize) -> f32 {
        let Some(&y) = self.labels.get(r) else {
            return 0.0;
        };
        let start = self.shard.vocab_start as i64;
        let local = i64::from(y) - start;
        if y < 0 || local < 0 || local >= self.shard.cols as i64 {
            return 0.0;
        }
        match &self.options.weight {
            Some(w) => w[local as usize],
            None => 1.0,
        }
    }

    /// Records one pass of the split layout's cross-entropy kernel, specialised for the
    /// options, over a chunk's buffers.
    fn record(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        pass: SplitPass,
        bufs: &ShardBuffers,
        params: Params,
    ) -> Result<()> {
        let probs = matches!(self.shard.targets, Targets::Probabilities(_));
        let kernel = RowKernel {
            entry: Entry::CrossEntropy,
            strategy: SPLIT,
            options: Specialisation::of(self.options, probs),
        };
        let rb = bufs.row_buffers();
        let variant = row_softmax::choose_variant(self.ctx, SPLIT, &rb)?;
        row_softmax::record_split_pass(self.ctx, encoder, kernel, variant, pass, &rb, params)
    }

    /// The kernel's params for `count` rows; `row_weights` is where the rows' w_y start in
    /// the weights binding (0: none).
    fn params(&self, count: usize, row_weights: u32) -> Params {
        let has_weights = self.options.weight.is_some();
        Params {
            rows: count as u32,
            // The whole vocabulary's sum of weights is only known after the all-reduce:
            // vocab_finish sets it.
            weight_sum: self.shard.vocab_size as f32,
            partials_base: STATS_LEN as u32,
            classes: self.shard.vocab_size as u32,
            class_base: self.shard.vocab_start as u32,
            row_weights: if has_weights { row_weights } else { 0 },
            ..Params::for_loss(self.options, self.shard.cols as u32)
        }
    }

    /// Device buffers for rows `first .. first + count`, filled; `scales` is the whole scales
    /// buffer (stats, then partials); `row_weights` the rows' merged w_y (finish only).
    fn buffers(
        &self,
        first: usize,
        count: usize,
        scales: &[f32],
        row_weights: Option<&[f32]>,
    ) -> Result<ShardBuffers> {
        use wgpu::BufferUsages as U;
        let ctx = self.ctx;
        let cols = self.shard.cols;
        let elems = count * cols;
        let f32s =
            |label, data: &[f32], usage| ctx.buffer_with(label, bytemuck::cast_slice(data), usage);
        let logits = &self.shard.logits[first * cols..][..elems];
        let targets = match self.shard.targets {
            Targets::Probabilities(t) => &t[first * cols..][..elems],
            Targets::Classes(_) => &[0.0][..],
        };
        let labels: &[i32] = if self.labels.is_empty() {
            &[0]
        } else {
            &self.labels[first..][..count]
        };
        let mut weights = self.options.weight.clone().unwrap_or_else(|| vec![0.0]);
        if let (Some(_), Some(w_y)) = (&self.options.weight, row_weights) {
            weights.extend_from_slice(w_y);
        }
        // Outputs start as NaN when poisoning, so an element the kernel misses shows up.
        let fill = if ctx.poison_outputs { f32::NAN } else { 0.0 };
        let staging_bytes = ((elems + 2 * count).max(scales.len()) * 4) as u64;
        ctx.scoped(|| {
            Ok(ShardBuffers {
                elems,
                count,
                logits: f32s("shard logits", logits, U::STORAGE),
                out: f32s("shard grad", &vec![fill; elems], U::STORAGE | U::COPY_SRC),
                labels: ctx.buffer_with("shard labels", bytemuck::cast_slice(labels), U::STORAGE),
                targets: f32s("shard targets", targets, U::STORAGE),
                row_loss: f32s(
                    "shard row_loss",
                    &vec![fill; count],
                    U::STORAGE | U::COPY_SRC,
                ),
                lse: f32s("shard lse", &vec![fill; count], U::STORAGE | U::COPY_SRC),
                weights: f32s("shard weights", &weights, U::STORAGE),
                scales: f32s("shard scales", scales, U::STORAGE | U::COPY_SRC),
                staging: ctx.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("shard staging"),
                    size: staging_bytes,
                    usage: U::MAP_READ | U::COPY_DST,
                    mapped_at_creation: false,
                }),
            })
        })
    }
}

/// The device buffers of one chunk of rows of a shard.
struct ShardBuffers {
    elems: usize,
    count: usize,
    logits: wgpu::Buffer,
    out: wgpu::Buffer,
    labels: wgpu::Buffer,
    targets: wgpu::Buffer,
    row_loss: wgpu::Buffer,
    lse: wgpu::Buffer,
    weights: wgpu::Buffer,
    scales: wgpu::Buffer,
    staging: wgpu::Buffer,
}

impl ShardBuffers {
    fn row_buffers(&self) -> RowBuffers<'_> {
        let targets = self.targets.size() / 4;
        RowBuffers {
            logits: Slice::words(&self.logits, 0, self.elems as u64),
            out: Some(Slice::words(&self.out, 0, self.elems as u64)),
            precision: crate::Precision::F32,
            labels: Slice::words(
                &self.labels,
                0,
                (self.labels.size() / 4).min(self.count as u64),
            ),
            targets: Slice::words(&self.targets, 0, targets),
            row_loss: Slice::words(&self.row_loss, 0, self.count as u64),
            lse: Slice::words(&self.lse, 0, self.count as u64),
            weights: &self.weights,
            scales: &self.scales,
        }
    }

    /// Copies gradient, row losses and lse to the staging buffer; returns the bytes to read.
    fn copy_outputs(&self, encoder: &mut wgpu::CommandEncoder) -> usize {
        let (e, r) = (self.elems as u64 * 4, self.count as u64 * 4);
        encoder.copy_buffer_to_buffer(&self.out, 0, &self.staging, 0, e);
        encoder.copy_buffer_to_buffer(&self.row_loss, 0, &self.staging, e, r);
        encoder.copy_buffer_to_buffer(&self.lse, 0, &self.staging, e + r, r);
        (e + 2 * r) as usize
    }

    /// Waits for the copies of [`Self::copy_outputs`] and appends them to `out`.
    fn read_outputs(
        &self,
        ctx: &Context,
        bytes: usize,
        out: &mut CrossEntropyOutput,
    ) -> Result<()> {
        let back: Vec<f32> = bytemuck::pod_collect_to_vec(&ctx.read_bytes(&self.staging, bytes)?);
        let (elems, count) = (self.elems, self.count);
        out.grad.extend_from_slice(&back[..elems]);
        out.row_loss.extend_from_slice(&back[elems..][..count]);
        out.lse.extend_from_slice(&back[elems + count..][..count]);
        Ok(())
    }
}
