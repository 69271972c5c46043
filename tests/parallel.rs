//! Vocabulary-parallel cross-entropy (`ml_softmax::parallel`): threads stand in for ranks,
//! each with its own slice of the vocabulary, merging through a thread all-reduce that folds
//! the ranks' vectors in rank order. The sharded result, its slices of the gradient put back
//! together, must match the f64 reference within the tolerances of the unsharded tests
//! (`assert_output_close`), on every adapter, with fresh random data and poisoned outputs.

mod common;

use std::sync::{Barrier, Mutex};

use common::{Rng, assert_output_close, contexts, open_contexts};
use ml_softmax::parallel::{ReduceOp, VocabPartials, VocabShard};
use ml_softmax::{
    Context, ContextOptions, CrossEntropyOptions, CrossEntropyOutput, Error, Reduction, Targets,
    reference,
};

/// An all-reduce among threads: each rank deposits its vector, then every rank folds all of
/// them in rank order (so every rank gets the same bits, and the same bits every run).
struct Group {
    slots: Mutex<Vec<Vec<f32>>>,
    barrier: Barrier,
}

impl Group {
    fn new(ranks: usize) -> Self {
        Group {
            slots: Mutex::new(vec![Vec::new(); ranks]),
            barrier: Barrier::new(ranks),
        }
    }

    fn all_reduce(&self, rank: usize, v: &mut [f32], op: ReduceOp) {
        self.slots.lock().unwrap()[rank] = v.to_vec();
        self.barrier.wait();
        {
            let slots = self.slots.lock().unwrap();
            for (i, x) in v.iter_mut().enumerate() {
                let column = slots.iter().map(|s| s[i]);
                *x = match op {
                    ReduceOp::Max => column.fold(f32::NEG_INFINITY, f32::max),
                    ReduceOp::Sum => column.fold(0.0, |a, b| a + b),
                };
            }
        }
        self.barrier.wait();
    }
}

/// Columns `start .. start + n` of each row of a `[rows, cols]` matrix.
fn columns(data: &[f32], cols: usize, start: usize, n: usize) -> Vec<f32> {
    data.chunks(cols)
        .flat_map(|row| &row[start..start + n])
        .copied()
        .collect()
}

/// Uneven slice bounds of `vocab` classes over `ranks` ranks (each at least one column).
fn bounds(rng: &mut Rng, vocab: usize, ranks: usize) -> Vec<usize> {
    let mut cuts: Vec<usize> = Vec::new();
    while cuts.len() < ranks - 1 {
        let c = 1 + rng.below(vocab - 1);
        if !cuts.contains(&c) {
            cuts.push(c);
        }
    }
    cuts.sort();
    let mut b = vec![0];
    b.extend(cuts);
    b.push(vocab);
    b
}

enum Whole<'a> {
    Labels(&'a [i64]),
    Probs(&'a [f32]),
}

/// Runs one sharded call, one thread per rank, and returns each rank's output.
fn sharded(
    ctx: &Context,
    logits: &[f32],
    target: &Whole<'_>,
    rows: usize,
    vocab: usize,
    bounds: &[usize],
    options: &CrossEntropyOptions,
) -> Vec<CrossEntropyOutput> {
    let ranks = bounds.len() - 1;
    let group = Group::new(ranks);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..ranks)
            .map(|rank| {
                let group = &group;
                s.spawn(move || {
                    let (start, n) = (bounds[rank], bounds[rank + 1] - bounds[rank]);
                    let mine = columns(logits, vocab, start, n);
                    let probs;
                    let targets = match target {
                        Whole::Labels(y) => Targets::Classes(y),
                        Whole::Probs(t) => {
                            probs = columns(t, vocab, start, n);
                            Targets::Probabilities(&probs)
                        }
                    };
                    let options = CrossEntropyOptions {
                        weight: options
                            .weight
                            .as_ref()
                            .map(|w| w[start..start + n].to_vec()),
                        ..options.clone()
                    };
                    let shard = VocabShard {
                        logits: &mine,
                        targets,
                        rows,
                        cols: n,
                        vocab_start: start,
                        vocab_size: vocab,
                    };
                    ctx.vocab_parallel_cross_entropy(&shard, &options, |v, op| {
                        group.all_reduce(rank, v, op);
                        Ok(())
                    })
                    .unwrap_or_else(|e| panic!("rank {rank} of {ranks}: {e}"))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// The ranks' outputs as one: the same loss, row losses and lse on every rank (bit for
/// bit), the gradient slices side by side.
fn gathered(outs: &[CrossEntropyOutput], rows: usize, bounds: &[usize]) -> CrossEntropyOutput {
    for (rank, out) in outs.iter().enumerate() {
        assert_eq!(
            out.loss.to_bits(),
            outs[0].loss.to_bits(),
            "rank {rank}'s loss"
        );
        assert_eq!(out.row_loss.len(), rows);
        for (a, b) in out.row_loss.iter().zip(&outs[0].row_loss) {
            assert_eq!(a.to_bits(), b.to_bits(), "rank {rank}'s row losses");
        }
        assert_eq!(out.grad.len(), rows * (bounds[rank + 1] - bounds[rank]));
    }
    let mut grad = Vec::with_capacity(rows * bounds[bounds.len() - 1]);
    for r in 0..rows {
        for (rank, out) in outs.iter().enumerate() {
            let n = bounds[rank + 1] - bounds[rank];
            grad.extend_from_slice(&out.grad[r * n..][..n]);
        }
    }
    CrossEntropyOutput {
        loss: outs[0].loss,
        row_loss: outs[0].row_loss.clone(),
        lse: outs[0].lse.clone(),
        grad,
    }
}

/// One batch of a test: the whole `[rows, vocab]` logits and their targets.
struct Batch<'a> {
    logits: &'a [f32],
    target: Whole<'a>,
    rows: usize,
    vocab: usize,
}

impl<'a> Batch<'a> {
    fn new(logits: &'a [f32], target: Whole<'a>, rows: usize, vocab: usize) -> Self {
        Batch {
            logits,
            target,
            rows,
            vocab,
        }
    }

    /// The sharded call over `bounds`, the ranks' outputs gathered into one.
    fn sharded(
        &self,
        ctx: &Context,
        bounds: &[usize],
        options: &CrossEntropyOptions,
    ) -> CrossEntropyOutput {
        let outs = sharded(
            ctx,
            self.logits,
            &self.target,
            self.rows,
            self.vocab,
            bounds,
            options,
        );
        gathered(&outs, self.rows, bounds)
    }

    /// The sharded call, checked against the f64 reference of the unsharded one
    /// (`assert_output_close` at `scale`); the gathered output.
    fn check(
        &self,
        ctx: &Context,
        what: &str,
        bounds: &[usize],
        options: &CrossEntropyOptions,
        scale: f32,
    ) -> CrossEntropyOutput {
        let got = self.sharded(ctx, bounds, options);
        let (logits, rows, vocab) = (self.logits, self.rows, self.vocab);
        let want = match self.target {
            Whole::Labels(y) => reference::cross_entropy(logits, y, rows, vocab, options),
            Whole::Probs(t) => reference::cross_entropy_probs(logits, t, rows, vocab, options),
        }
        .unwrap();
        assert_output_close(what, &got, &want, scale);
        got
    }
}

/// The option sets of these tests: the defaults, each option alone, and all of them at once.
fn option_sets(vocab: usize, rng: &mut Rng) -> Vec<(&'static str, CrossEntropyOptions)> {
    common::option_sets_but(
        vocab,
        rng,
        &["weight+smoothing+ignore", "softcap+z_loss+ignore"],
    )
}

fn grad_scale(reduction: Reduction, rows: usize) -> f32 {
    if reduction == Reduction::Mean {
        1.0 / rows as f32
    } else {
        1.0
    }
}

/// Labels with at least one row per rank whose class that rank holds, and row 1 on the
/// ignore index 2 (a class, unless `ignore_index` is 2).
fn labels_on_every_rank(rng: &mut Rng, rows: usize, vocab: usize, bounds: &[usize]) -> Vec<i64> {
    let mut labels = rng.labels(rows, vocab);
    for rank in 0..bounds.len() - 1 {
        let r = (2 + rank) % rows;
        labels[r] = (bounds[rank] + rng.below(bounds[rank + 1] - bounds[rank])) as i64;
    }
    labels[1] = 2;
    labels
}

/// One case of the 1-to-5-rank sweeps: an adapter, a shape, the ranks' bounds, an option
/// set with one reduction.
struct Sweep<'a> {
    ctx: &'a Context,
    rows: usize,
    vocab: usize,
    ranks: usize,
    b: Vec<usize>,
    name: &'static str,
    reduction: Reduction,
    options: CrossEntropyOptions,
}

impl Sweep<'_> {
    /// Checks the batch of this case's shape, `logits` and `target`, sharded over this case's
    /// ranks, against the reference; `kind` opens the case's name in a failure.
    fn check(&self, kind: &str, logits: &[f32], target: Whole) {
        let batch = Batch::new(logits, target, self.rows, self.vocab);
        let what = format!(
            "{} {kind}{} {:?} {}x{} over {} ranks {:?}",
            self.ctx.adapter_info().name,
            self.name,
            self.reduction,
            self.rows,
            self.vocab,
            self.ranks,
            self.b
        );
        let scale = grad_scale(self.reduction, self.rows);
        batch.check(self.ctx, &what, &self.b, &self.options, scale);
    }
}

/// Calls `f` for every adapter, shape of `shapes`, 1 to 5 ranks with random bounds, option
/// set and reduction.
fn sweep(rng: &mut Rng, shapes: &[(usize, usize)], mut f: impl FnMut(&mut Rng, &Sweep)) {
    for ctx in contexts() {
        for &(rows, vocab) in shapes {
            for ranks in 1..=5 {
                let b = bounds(rng, vocab, ranks);
                for (name, options) in option_sets(vocab, rng) {
                    for (reduction, options) in common::each_reduction(&options) {
                        let case = Sweep {
                            ctx,
                            rows,
                            vocab,
                            ranks,
                            b: b.clone(),
                            name,
                            reduction,
                            options,
                        };
                        f(rng, &case);
                    }
                }
            }
        }
    }
}

#[test]
fn class_targets_match_the_reference_for_1_to_5_ranks_every_option_and_reduction() {
    let mut rng = Rng::new("vocab-parallel classes");
    // 6 x 40000: shards past one split chunk (16,384 columns) for 1 and 2 ranks.
    sweep(&mut rng, &[(9, 13), (5, 3001), (3, 40000)], |rng, c| {
        let logits = rng.logits(c.rows * c.vocab, 3.0);
        let labels = labels_on_every_rank(rng, c.rows, c.vocab, &c.b);
        c.check("", &logits, Whole::Labels(&labels));
    });
}

#[test]
fn probability_targets_match_the_reference_for_1_to_5_ranks() {
    let mut rng = Rng::new("vocab-parallel probabilities");
    sweep(&mut rng, &[(7, 11), (4, 2049)], |rng, c| {
        let logits = rng.logits(c.rows * c.vocab, 3.0);
        let mut t: Vec<f32> = (0..c.rows * c.vocab)
            .map(|_| rng.uniform() as f32)
            .collect();
        for row in t.chunks_mut(c.vocab) {
            let sum: f32 = row.iter().sum();
            row.iter_mut().for_each(|x| *x /= sum);
        }
        c.check("probs ", &logits, Whole::Probs(&t));
    });
}

/// A rank that holds no row's label (its rows all count on other ranks), a rank whose rows
/// are all ignored, and a batch with every row ignored (a mean over nothing: 0, zero grad).
#[test]
fn ranks_without_labels_and_fully_ignored_batches() {
    let mut rng = Rng::new("vocab-parallel ignored");
    let (rows, vocab) = (8, 50);
    let b = [0, 10, 30, 50];
    let weight: Vec<f32> = (0..vocab).map(|_| 0.5 + rng.uniform() as f32).collect();
    for ctx in contexts() {
        for weight in [None, Some(weight.clone())] {
            for reduction in [Reduction::Mean, Reduction::Sum, Reduction::None] {
                let options = CrossEntropyOptions {
                    reduction,
                    weight: weight.clone(),
                    ..Default::default()
                };
                let logits = rng.logits(rows * vocab, 2.0);
                // No label in rank 1's columns 10..30; rank 2's labels (30..50) all ignored.
                let mut labels: Vec<i64> = (0..rows).map(|_| rng.below(10) as i64).collect();
                labels[3] = -100;
                labels[5] = -100;
                let cases = [
                    ("no labels on rank 1", labels.clone()),
                    ("all ignored", vec![-100; rows]),
                ];
                for (name, labels) in cases {
                    let target = Whole::Labels(&labels);
                    let batch = Batch::new(&logits, target, rows, vocab);
                    let what = format!("{} {name} {reduction:?}", ctx.adapter_info().name);
                    let got = batch.check(ctx, &what, &b, &options, grad_scale(reduction, rows));
                    if name == "all ignored" {
                        common::assert_zero_loss_and_grad(&what, &got);
                    }
                }
            }
        }
    }
}

#[test]
fn a_sharded_call_is_bit_identical_run_after_run() {
    let mut rng = Rng::new("vocab-parallel bits");
    let (rows, vocab) = (6, 1000);
    let options = CrossEntropyOptions {
        label_smoothing: 0.1,
        ..Default::default()
    };
    for ctx in contexts() {
        let b = bounds(&mut rng, vocab, 3);
        let logits = rng.logits(rows * vocab, 3.0);
        let labels = rng.labels(rows, vocab);
        let target = Whole::Labels(&labels);
        let batch = Batch::new(&logits, target, rows, vocab);
        let run = || batch.sharded(ctx, &b, &options);
        let (first, second) = (run(), run());
        assert_eq!(first.loss.to_bits(), second.loss.to_bits());
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&first.grad), bits(&second.grad));
        assert_eq!(bits(&first.lse), bits(&second.lse));
    }
}

#[test]
fn bad_shards_give_errors_that_name_the_problem() {
    // `err` is the error `pattern` says, or the assertion prints it.
    macro_rules! assert_error {
        ($err:expr, $pattern:pat) => {
            assert!(matches!($err, $pattern), "{}", $err)
        };
    }
    let ctx = &contexts()[0];
    let logits = vec![0.5f32; 2 * 3];
    let labels = [0i64, 4];
    let options = CrossEntropyOptions::default();
    let shard = |vocab_start, vocab_size, labels| VocabShard {
        logits: &logits,
        targets: Targets::Classes(labels),
        rows: 2,
        cols: 3,
        vocab_start,
        vocab_size,
    };
    let partials_err =
        |shard: &VocabShard, options| ctx.vocab_partials(shard, options).unwrap_err();
    let err = partials_err(&shard(3, 5, &labels), &options);
    assert_error! { err, Error::InvalidOption { name: "vocab_start", .. } }
    assert!(err.to_string().contains("vocabulary of 5"), "{err}");
    let err = partials_err(&shard(0, 4, &labels), &options);
    assert_error! { err, Error::LabelOutOfRange { row: 1, value: 4, cols: 4, .. } }
    let five_weights = CrossEntropyOptions {
        weight: Some(vec![1.0; 5]),
        ..options.clone()
    };
    let err = partials_err(&shard(0, 5, &labels), &five_weights);
    assert_error! { err, Error::LengthMismatch { what: "weight", expected: 3, actual: 5 } }
    let partials = ctx.vocab_partials(&shard(0, 5, &labels), &options).unwrap();
    assert_eq!(partials.max.len(), 2);
    let err = partials.sums(&[1.0]).unwrap_err();
    assert_error! { err, Error::LengthMismatch { what: "all-reduced max", .. } }
    let sums = partials.sums(&partials.max).unwrap();
    assert_eq!(sums.len(), VocabPartials::sums_len(2));
    let err = ctx
        .vocab_finish(&shard(0, 5, &labels), &options, &partials.max, &sums[1..])
        .unwrap_err();
    assert_error! { err, Error::LengthMismatch { what: "all-reduced sums", .. } }
}

/// Shards whose rows do not fit one binding go in chunks of rows (here a 4 KiB limit: about
/// 10 rows of a 100-column shard per chunk), the mean's denominator still over the whole batch.
#[test]
fn shards_in_chunks_of_rows_match_the_reference() {
    let options = ContextOptions {
        max_chunk_bytes: Some(4096),
        poison_outputs: true,
        ..Default::default()
    };
    let mut rng = Rng::new("vocab-parallel chunks");
    let (rows, vocab) = (53, 301);
    for ctx in &open_contexts(&options) {
        let b = bounds(&mut rng, vocab, 3);
        for (name, options) in option_sets(vocab, &mut rng) {
            let logits = rng.logits(rows * vocab, 2.0);
            let labels = labels_on_every_rank(&mut rng, rows, vocab, &b);
            let target = Whole::Labels(&labels);
            let batch = Batch::new(&logits, target, rows, vocab);
            let what = format!("{} chunked {name} {b:?}", ctx.adapter_info().name);
            batch.check(ctx, &what, &b, &options, 1.0 / rows as f32);
        }
    }
}
