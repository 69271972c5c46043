//! The CPU reference: softmax, log-softmax and cross-entropy (loss and gradient) in plain Rust.
//!
//! Every GPU result of this crate is checked against these functions, so they are written to
//! be easy to read and hard to get wrong, not to be fast:
//!
//! * inputs are `f32`, but every intermediate value is an `f64`, and results are rounded to
//!   `f32` only at the very end;
//! * each row is handled on its own, in the order the formulas are written below;
//! * bad input is reported as an [`Error`](crate::error::Error), never a panic.
//!
//! # The math, per row
//!
//! For one row of logits `z` (length `C = cols`) with class label `y`:
//!
//! ```text
//! soft-capping (c > 0):  z'_j = c * tanh(z_j / c)          (c = 0: z'_j = z_j)
//! log-sum-exp:           lse  = m + ln( sum_j exp(z'_j - m) ),   m = max_j z'_j
//! log-probabilities:     logp_j = z'_j - lse,   p_j = exp(logp_j)
//! class weights:         w_j = weight[j] (or 1),   W = sum_j w_j
//! row loss:              (1 - eps) * w_y * (-logp_y)                 cross-entropy
//!                      + (eps / C) * sum_j w_j * (-logp_j)           label smoothing
//!                      + s * lse^2                                    z-loss
//! gradient w.r.t. z':    g'_j = scale * [ (1 - eps) * w_y * (p_j - [j == y])
//!                                       + (eps / C) * (W * p_j - w_j)
//!                                       + 2 * s * lse * p_j ]
//! gradient w.r.t. z:     g_j = g'_j * (1 - tanh^2(z_j / c))      (c = 0: g_j = g'_j)
//! ```
//!
//! With `eps = 0`, `s = 0` and `c = 0` this is exactly `torch.nn.functional.cross_entropy`
//! with class-index targets; with `eps > 0` it is PyTorch's label smoothing (class weights
//! included). The z-loss and soft-capping are the two extras of large-vocabulary training.
//!
//! Subtracting `m` before `exp` is what keeps the log-sum-exp from overflowing: every
//! `exp(z'_j - m)` is at most 1, and the largest one is exactly 1.
//!
//! # Reduction
//!
//! * [`Reduction::Mean`]: `loss = sum_i row_loss_i / D` with `D = sum of w_{y_i}` over the rows
//!   that are not ignored, and `scale = 1 / D`. The z-loss term is not multiplied by `w_y` in a
//!   row's loss, but it is divided by the same `D` here.
//! * [`Reduction::Sum`]: `loss = sum_i row_loss_i`, `scale = 1`.
//! * [`Reduction::None`]: `loss = sum_i row_loss_i` too (the per-row values are in
//!   [`CrossEntropyOutput::row_loss`]), and `scale = 1`: the gradient is that of the sum.
//!
//! # Infinities and NaN
//!
//! Nothing is special-cased beyond what `f64` arithmetic gives (with one exception each for
//! an all-`-inf` row and a NaN, see `log_sum_exp` below):
//!
//! * a `-inf` logit is a mask: its probability is exactly 0 and its gradient is finite.
//!   Label smoothing, however, adds `-logp_j = +inf` for the masked class, so with `eps > 0`
//!   the row loss is `+inf` (PyTorch gives the same);
//! * a NaN or `+inf` logit makes that row's `lse`, loss and gradient NaN, and no other row's:
//!   the `Mean` denominator `D` depends only on the labels and the weights;
//! * soft-capping maps `+-inf` to `+-c`: with `c > 0` infinities are no longer masks, they are
//!   ordinary (capped) logits whose gradient is 0.

use crate::error::Result;
use crate::options::{CrossEntropyOptions, Reduction, check_labels, check_len, check_shape};

/// Output of the cross-entropy forward + backward. `G` is the gradient's element type:
/// `f32`, or `u16` bits for half-precision logits ([`crate::Context::cross_entropy_half`]).
#[derive(Debug, Clone, PartialEq)]
pub struct CrossEntropyOutput<G = f32> {
    /// Mean: the mean; Sum: the sum; None: the sum of `row_loss` (the quantity `grad` is the
    /// gradient of).
    ///
    /// Under [`Reduction::Mean`], when the denominator `D` (the summed weight of the rows that
    /// are not ignored) is 0 — every row ignored, or all their target weights 0 — the loss is
    /// 0 and the gradient is 0. This deliberately differs from PyTorch, which returns NaN
    /// (0 / 0) there.
    pub loss: f32,
    /// Per-row loss before reduction (ignored rows: 0).
    pub row_loss: Vec<f32>,
    /// Per-row log-sum-exp of the (soft-capped) logits.
    ///
    /// Reported for ignored rows too. `-inf` for a row whose logits are all `-inf`; NaN for a
    /// row with a NaN or a `+inf` (where `torch.logsumexp` would say `+inf`).
    pub lse: Vec<f32>,
    /// dloss/dlogits, row-major [rows, cols].
    ///
    /// Ignored rows get an all-zero gradient row, even when their logits hold a NaN or `+inf`
    /// (PyTorch's autograd gives NaN there, because `0 * NaN = NaN` in its log-softmax
    /// backward).
    pub grad: Vec<G>,
}

impl<G> CrossEntropyOutput<G> {
    /// The same output with the gradient converted by `f` (e.g. from bytes to elements).
    pub fn map_grad<H>(self, f: impl FnOnce(Vec<G>) -> Vec<H>) -> CrossEntropyOutput<H> {
        CrossEntropyOutput {
            loss: self.loss,
            row_loss: self.row_loss,
            lse: self.lse,
            grad: f(self.grad),
        }
    }
}

/// Softmax of each row: `p_j = exp(z_j - lse)`, so that every row sums to 1.
///
/// `logits` is row-major `[rows, cols]`; so is the result. A row whose logits are all `-inf`,
/// or that holds a NaN or a `+inf`, comes out all NaN.
///
/// # Errors
///
/// [`Error::EmptyShape`](crate::error::Error::EmptyShape) or
/// [`Error::ShapeOverflow`](crate::error::Error::ShapeOverflow) for a bad shape, and
/// [`Error::LengthMismatch`](crate::error::Error::LengthMismatch) when
/// `logits.len() != rows * cols`.
pub fn softmax(logits: &[f32], rows: usize, cols: usize) -> Result<Vec<f32>> {
    Ok(log_softmax_f64(logits, rows, cols)?
        .into_iter()
        .map(|logp| logp.exp() as f32)
        .collect())
}

/// Log-softmax of each row: `logp_j = z_j - lse`, with the numerically stable `lse` of the
/// module documentation.
///
/// `logits` is row-major `[rows, cols]`; so is the result. Masked (`-inf`) logits give `-inf`.
///
/// # Errors
///
/// The same as [`softmax`].
pub fn log_softmax(logits: &[f32], rows: usize, cols: usize) -> Result<Vec<f32>> {
    Ok(log_softmax_f64(logits, rows, cols)?
        .into_iter()
        .map(|logp| logp as f32)
        .collect())
}

/// Checks the shape, then computes the log-softmax of every row in `f64`.
fn log_softmax_f64(logits: &[f32], rows: usize, cols: usize) -> Result<Vec<f64>> {
    let n = check_shape(rows, cols)?;
    check_len("logits", n, logits.len())?;
    let mut out = Vec::with_capacity(n);
    for row in logits.chunks_exact(cols) {
        let z: Vec<f64> = row.iter().map(|&v| f64::from(v)).collect();
        let lse = log_sum_exp(&z);
        out.extend(z.iter().map(|&zj| zj - lse));
    }
    Ok(out)
}

/// The log-sum-exp `ln( sum_j exp(z_j) )` of one row, computed as
/// `m + ln( sum_j exp(z_j - m) )` with `m = max_j z_j`, so that no `exp` can overflow.
///
/// Two cases need care, because `z_j - m` is not always a number:
///
/// * every `z_j` is `-inf`: `m = -inf` and `-inf - (-inf)` would be NaN, but the true value
///   `ln(0)` is `-inf`, so that is what is returned;
/// * a NaN anywhere: `f64::max` would quietly skip it, so it is checked for explicitly and
///   the result is NaN.
///
/// A `+inf` needs no special case: `m = +inf`, `exp(+inf - inf) = exp(NaN)`, and the result is
/// NaN, as for a NaN.
fn log_sum_exp(z: &[f64]) -> f64 {
    if z.iter().any(|v| v.is_nan()) {
        return f64::NAN;
    }
    let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    let sum: f64 = z.iter().map(|&zj| (zj - m).exp()).sum();
    m + sum.ln()
}

/// A row's logits as f64, soft-capped when `c > 0`, with d z'/d z for the chain rule.
fn capped_row(z_row: &[f32], c: f64) -> (Vec<f64>, Vec<f64>) {
    z_row
        .iter()
        .map(|&zj| {
            let zj = f64::from(zj);
            if c > 0.0 { soft_cap(zj, c) } else { (zj, 1.0) }
        })
        .unzip()
}

/// Soft-capping of one logit with cap `c > 0`: returns `(c * tanh(z / c), d/dz of it)`.
///
/// The derivative is `1 - tanh^2(z / c)`. For `z = +-inf`, `tanh` is `+-1`, so the capped
/// logit is `+-c` and the derivative 0.
fn soft_cap(z: f64, c: f64) -> (f64, f64) {
    let t = (z / c).tanh();
    (c * t, 1.0 - t * t)
}

/// The checks both cross-entropies start with, in this order: the shape, the logits'
/// length, the targets' (`(name, length, values per row)`: 1 for labels, `cols` for
/// probabilities), the options. Returns `rows * cols`.
fn check_inputs(
    rows: usize,
    cols: usize,
    logits: &[f32],
    (name, len, per_row): (&'static str, usize, usize),
    options: &CrossEntropyOptions,
) -> Result<usize> {
    let n = check_shape(rows, cols)?;
    check_len("logits", n, logits.len())?;
    check_len(name, rows * per_row, len)?;
    options.validate(cols)?;
    Ok(n)
}

/// The options as the formulas use them, in f64: label smoothing `eps`, z-loss `s`,
/// soft-cap `c`, the class count `C`, and `w_j`, the class weight (1 without weights;
/// `validate` checked `weight.len() == cols`).
fn options_f64(
    options: &CrossEntropyOptions,
    cols: usize,
) -> (f64, f64, f64, f64, impl Fn(usize) -> f64 + Copy + '_) {
    let weight = |j: usize| -> f64 { options.weight.as_ref().map_or(1.0, |w| f64::from(w[j])) };
    (
        f64::from(options.label_smoothing),
        f64::from(options.z_loss),
        f64::from(options.softcap),
        cols as f64,
        weight,
    )
}

/// Cross-entropy of `logits` (row-major `[rows, cols]`) against class-index `labels` (one per
/// row), with its gradient, following PyTorch's `cross_entropy` plus z-loss and soft-capping.
///
/// See the [module documentation](self) for the formulas. A row whose label equals
/// `options.ignore_index` contributes 0 to the loss, gets an all-zero gradient row, and is
/// left out of the `Mean` denominator; its `lse` is still computed and reported.
///
/// A term whose coefficient is exactly 0 (`eps = 0`, or `s = 0`) is skipped rather than
/// multiplied by 0, as PyTorch does, so that `0 * inf` cannot turn a masked (`-inf`) logit's
/// row into NaN. Inside the terms nothing is skipped, again as in PyTorch: a masked class
/// with weight 0 gives `0 * inf = NaN` (in the cross-entropy term when it is the target, in
/// the smoothing term when `eps > 0`), and so does a masked target with `eps = 1`.
///
/// # Errors
///
/// Checked in this order, before anything is computed: the shape (`EmptyShape`,
/// `ShapeOverflow`), `logits.len() == rows * cols` and `labels.len() == rows`
/// (`LengthMismatch`), the options ([`CrossEntropyOptions::validate`]: `InvalidOption`,
/// `LengthMismatch` for `weight`, `InvalidWeight`), and each label in `0..cols` or equal to
/// `ignore_index` (`LabelOutOfRange`); all are variants of [`Error`](crate::error::Error).
pub fn cross_entropy(
    logits: &[f32],
    labels: &[i64],
    rows: usize,
    cols: usize,
    options: &CrossEntropyOptions,
) -> Result<CrossEntropyOutput> {
    // 1. Validation: every error is found before any work is done.
    let n = check_inputs(rows, cols, logits, ("labels", labels.len(), 1), options)?;
    check_labels(labels, cols, options.ignore_index)?;

    // 2. The options, as f64.
    let (eps, s, c, num_classes, weight) = options_f64(options, cols);
    let total_weight: f64 = (0..cols).map(weight).sum();

    // The target class of a row, or `None` for an ignored row. `check_labels` guarantees that
    // any other label is in `0..cols`, so the cast cannot wrap.
    let target = |label: i64| -> Option<usize> {
        if label == options.ignore_index {
            None
        } else {
            Some(label as usize)
        }
    };

    // 3. The reduction. The Mean denominator D depends on labels and weights only, never on
    //    the logits, so a NaN in one row cannot leak into another row's gradient.
    let denominator: f64 = labels.iter().filter_map(|&y| target(y)).map(weight).sum();
    let scale = match options.reduction {
        // D == 0: nothing to average over; no gradient flows (PyTorch: NaN, see the docs).
        Reduction::Mean if denominator == 0.0 => 0.0,
        Reduction::Mean => 1.0 / denominator,
        Reduction::Sum | Reduction::None => 1.0,
    };

    let mut row_loss = vec![0.0_f32; rows];
    let mut lse_out = vec![0.0_f32; rows];
    let mut grad = vec![0.0_f32; n];
    let mut loss_sum = 0.0_f64;

    // 4. One row at a time.
    let per_row = logits
        .chunks_exact(cols)
        .zip(grad.chunks_exact_mut(cols))
        .zip(labels)
        .zip(row_loss.iter_mut().zip(lse_out.iter_mut()));
    for (((z_row, grad_row), &label), (row_loss_i, lse_i)) in per_row {
        // Soft-cap (or not) each logit; keep d z'/d z for the chain rule at the end.
        let (z, dz) = capped_row(z_row, c);

        let lse = log_sum_exp(&z);
        *lse_i = lse as f32;

        // An ignored row: loss 0 and gradient row 0 (already zero-filled).
        let Some(y) = target(label) else {
            continue;
        };

        let logp: Vec<f64> = z.iter().map(|&zj| zj - lse).collect();
        let p: Vec<f64> = logp.iter().map(|&l| l.exp()).collect();
        let w_y = weight(y);

        // The row loss: cross-entropy + label smoothing + z-loss.
        let mut loss = (1.0 - eps) * w_y * (-logp[y]);
        if eps > 0.0 {
            let smooth: f64 = logp.iter().enumerate().map(|(j, &l)| weight(j) * -l).sum();
            loss += eps / num_classes * smooth;
        }
        if s > 0.0 {
            loss += s * lse * lse;
        }
        *row_loss_i = loss as f32;
        loss_sum += loss;

        // The gradient row. With D == 0 under Mean it stays zero (not 0 * NaN).
        if scale == 0.0 {
            continue;
        }
        for (j, g) in grad_row.iter_mut().enumerate() {
            let is_target = if j == y { 1.0 } else { 0.0 };
            let mut g_capped = (1.0 - eps) * w_y * (p[j] - is_target);
            if eps > 0.0 {
                g_capped += eps / num_classes * (total_weight * p[j] - weight(j));
            }
            if s > 0.0 {
                g_capped += 2.0 * s * lse * p[j];
            }
            // Chain rule through the soft-cap (dz = 1 without it).
            *g = (scale * g_capped * dz[j]) as f32;
        }
    }

    // 5. The reduced loss.
    let loss = match options.reduction {
        Reduction::Mean if denominator == 0.0 => 0.0,
        Reduction::Mean => loss_sum / denominator,
        Reduction::Sum | Reduction::None => loss_sum,
    };

    Ok(CrossEntropyOutput {
        loss: loss as f32,
        row_loss,
        lse: lse_out,
        grad,
    })
}

/// Cross-entropy with probability targets (PyTorch's `cross_entropy` with a float target of
/// the logits' shape), plus the same z-loss and soft-capping as [`cross_entropy`].
///
/// Per row, with smoothed targets `t'_j = (1 - eps) t_j + eps / C` and `T = sum_j w_j t'_j`:
/// - loss = `-sum_j w_j t'_j log p_j + s lse^2 = T lse - sum_j w_j t'_j z'_j + s lse^2`
/// - gradient `dL/dz'_j = k [(T + 2 s lse) p_j - w_j t'_j]`, times `1 - (z'_j / c)^2` with
///   soft-capping
///
/// `Mean` divides by `rows` (PyTorch's rule for probability targets, weights or not); `Sum`
/// and `None` use `k = 1`. `ignore_index` does not apply. The targets are not checked to be
/// distributions: any finite values work, as in PyTorch.
pub fn cross_entropy_probs(
    logits: &[f32],
    targets: &[f32],
    rows: usize,
    cols: usize,
    options: &CrossEntropyOptions,
) -> Result<CrossEntropyOutput> {
    let n = check_inputs(
        rows,
        cols,
        logits,
        ("targets", targets.len(), cols),
        options,
    )?;
    let (eps, s, c, num_classes, weight) = options_f64(options, cols);
    let scale = match options.reduction {
        Reduction::Mean => 1.0 / rows as f64,
        Reduction::Sum | Reduction::None => 1.0,
    };

    let mut row_loss = vec![0.0_f32; rows];
    let mut lse_out = vec![0.0_f32; rows];
    let mut grad = vec![0.0_f32; n];
    let mut loss_sum = 0.0_f64;
    for r in 0..rows {
        let z_row = &logits[r * cols..][..cols];
        let t_row = &targets[r * cols..][..cols];
        let (z, dz) = capped_row(z_row, c);
        let lse = log_sum_exp(&z);
        lse_out[r] = lse as f32;
        // w_j t'_j, the weight each class's log-probability gets.
        let wt: Vec<f64> = t_row
            .iter()
            .enumerate()
            .map(|(j, &t)| weight(j) * ((1.0 - eps) * f64::from(t) + eps / num_classes))
            .collect();
        let total: f64 = wt.iter().sum();
        // A -inf logit with target weight 0 gives 0 * inf = NaN here, as in PyTorch.
        let mut loss: f64 = wt.iter().zip(&z).map(|(w, zj)| w * (lse - zj)).sum();
        if s > 0.0 {
            loss += s * lse * lse;
        }
        row_loss[r] = loss as f32;
        loss_sum += loss;
        for j in 0..cols {
            let p = (z[j] - lse).exp();
            let mut g = total * p - wt[j];
            if s > 0.0 {
                g += 2.0 * s * lse * p;
            }
            grad[r * cols + j] = (scale * g * dz[j]) as f32;
        }
    }
    Ok(CrossEntropyOutput {
        loss: (loss_sum * scale) as f32,
        row_loss,
        lse: lse_out,
        grad,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::error::Error;
    use approx::{assert_relative_eq, relative_eq};

    // ------------------------------------------------------------------------------ helpers

    /// Runs the reference on valid input.
    fn ce(
        z: &[f32],
        y: &[i64],
        rows: usize,
        cols: usize,
        o: CrossEntropyOptions,
    ) -> CrossEntropyOutput {
        cross_entropy(z, y, rows, cols, &o).unwrap()
    }

    /// The default options changed by `f`.
    fn with(f: impl FnOnce(&mut CrossEntropyOptions)) -> CrossEntropyOptions {
        let mut o = CrossEntropyOptions::default();
        f(&mut o);
        o
    }

    /// One row of two classes, `z` with label `y`, under `o`: its output, whose loss is
    /// checked against `loss` (1e-6 relative).
    fn two_classes(z: [f32; 2], y: i64, o: CrossEntropyOptions, loss: f32) -> CrossEntropyOutput {
        let out = ce(&z, &[y], 1, 2, o);
        assert_relative_eq!(out.loss, loss, max_relative = 1e-6);
        out
    }

    /// Each of `got` within 1e-6 relative of `want`.
    fn assert_each_relative(got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert_relative_eq!(*g, *w, max_relative = 1e-6);
        }
    }

    /// Element-wise `got ≈ want` within 1e-6 relative; NaN matches NaN, `±inf` matches itself.
    fn assert_all_close(what: &str, got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (k, (&g, &w)) in got.iter().zip(want).enumerate() {
            let ok = if w.is_nan() {
                g.is_nan()
            } else {
                relative_eq!(g, w, epsilon = 0.0, max_relative = 1e-6)
            };
            assert!(
                ok,
                "{what}[{k}]: got {g:e}, want {w:e}\n got: {got:?}\nwant: {want:?}"
            );
        }
    }

    /// One case computed by PyTorch (see `torch_cases` below for how).
    #[derive(Default)]
    struct TorchCase {
        name: String,
        rows: usize,
        cols: usize,
        logits: Vec<f32>,
        labels: Vec<i64>,
        options: CrossEntropyOptions,
        loss: f32,
        row_loss: Vec<f32>,
        lse: Vec<f32>,
        grad: Vec<f32>,
    }

    impl TorchCase {
        /// What torch said, as an output that a test may patch where the reference differs
        /// on purpose.
        fn expected(&self) -> CrossEntropyOutput {
            CrossEntropyOutput {
                loss: self.loss,
                row_loss: self.row_loss.clone(),
                lse: self.lse.clone(),
                grad: self.grad.clone(),
            }
        }

        fn run(&self) -> CrossEntropyOutput {
            cross_entropy(
                &self.logits,
                &self.labels,
                self.rows,
                self.cols,
                &self.options,
            )
            .unwrap()
        }
    }

    fn assert_output(name: &str, got: &CrossEntropyOutput, want: &CrossEntropyOutput) {
        assert_all_close(&format!("{name}: loss"), &[got.loss], &[want.loss]);
        assert_all_close(&format!("{name}: row_loss"), &got.row_loss, &want.row_loss);
        assert_all_close(&format!("{name}: lse"), &got.lse, &want.lse);
        assert_all_close(&format!("{name}: grad"), &got.grad, &want.grad);
    }

    fn torch_case(name: &str) -> TorchCase {
        torch_cases()
            .into_iter()
            .find(|c| c.name == name)
            .expect("no such torch case")
    }

    /// The torch cases where the reference deliberately differs; each has its own test below.
    const DEVIATIONS: [&str; 6] = [
        "all_ignored_mean_3x5",
        "all_ignored_weights_smoothing_mean_3x5",
        "zero_target_weights_mean_3x5",
        "specials_mean_4x5",
        "specials_smoothing_sum_4x5",
        "specials_ignored_nan_row_mean_4x5",
    ];

    // ------------------------------------------------------------------ worked by hand

    /// The seed example. z = [1, 2, 3], label 1:
    /// lse = ln(e + e^2 + e^3) = 3.4076059, p = exp(z - lse) = [0.0900306, 0.2447285, 0.6652410],
    /// loss = -ln p_1 = lse - 2 = 1.4076059, grad = p - onehot(1) = [0.0900306, -0.7552715, 0.6652410].
    #[test]
    fn seed_example() {
        let z = [1.0, 2.0, 3.0];
        let p = softmax(&z, 1, 3).unwrap();
        for (got, want) in p.iter().zip([0.0900306, 0.2447285, 0.665_241]) {
            assert_relative_eq!(*got, want, max_relative = 1e-6);
        }
        let out = ce(&z, &[1], 1, 3, CrossEntropyOptions::default());
        assert_relative_eq!(out.loss, 1.4076059, max_relative = 1e-6);
        assert_relative_eq!(out.row_loss[0], 1.4076059, max_relative = 1e-6);
        assert_relative_eq!(out.lse[0], 3.407_606, max_relative = 1e-6);
        for (got, want) in out.grad.iter().zip([0.0900306, -0.7552715, 0.665_241]) {
            assert_relative_eq!(*got, want, max_relative = 1e-6);
        }
        let logp = log_softmax(&z, 1, 3).unwrap();
        assert_relative_eq!(logp[1], -1.4076059, max_relative = 1e-6);
    }

    /// Two classes, z = [0, 0], label 0, eps = 0.5:
    /// p = [1/2, 1/2], logp = [-ln 2, -ln 2];
    /// loss = (1 - 0.5) * ln 2 + (0.5 / 2) * (ln 2 + ln 2) = ln 2;
    /// grad = 0.5 * (p - [1, 0]) + 0.25 * (W p - w) = 0.5 * [-0.5, 0.5] + 0.25 * [0, 0]
    ///      = [-0.25, 0.25].
    #[test]
    fn hand_two_classes_smoothing_half() {
        let smoothing = with(|o| o.label_smoothing = 0.5);
        let out = two_classes([0.0, 0.0], 0, smoothing, std::f32::consts::LN_2);
        assert_each_relative(&out.grad, &[-0.25, 0.25]);
    }

    /// Two classes, z = [ln 3, 0] so p = [3/4, 1/4], label 0, eps = 0.5: the smoothed target
    /// (1 - eps) * [1, 0] + eps / 2 * [1, 1] = [3/4, 1/4] equals p, so the loss is the entropy
    /// of p, 3/4 ln(4/3) + 1/4 ln 4 = 0.5623351, and the gradient p - target is 0.
    #[test]
    fn hand_smoothing_target_equals_p() {
        let smoothing = with(|o| o.label_smoothing = 0.5);
        let out = two_classes([3.0_f32.ln(), 0.0], 0, smoothing, 0.5623351);
        assert!(out.grad.iter().all(|g| g.abs() < 1e-7), "{:?}", out.grad);
    }

    /// z-loss: z = [0, 0], label 0, s = 0.5: lse = ln 2, p = [1/2, 1/2];
    /// loss = ln 2 + 0.5 * ln^2 2 = 0.6931472 + 0.2402265 = 0.9333737;
    /// grad = (p - [1, 0]) + 2 * 0.5 * ln 2 * p = [-0.5 + 0.3465736, 0.5 + 0.3465736]
    ///      = [-0.1534264, 0.8465736].
    #[test]
    fn hand_z_loss() {
        let out = two_classes([0.0, 0.0], 0, with(|o| o.z_loss = 0.5), 0.9333737);
        assert_each_relative(&out.grad, &[-0.1534264, 0.8465736]);
    }

    /// Soft-capping, c = 2: z = [2 atanh(1/2), 0] = [ln 3, 0] is capped to z' = [1, 0];
    /// p = [e / (e + 1), 1 / (e + 1)] = [0.7310586, 0.2689414]; label 1:
    /// loss = ln(e + 1) = 1.3132617; g' = p - [0, 1] = [0.7310586, -0.7310586];
    /// d z'/d z = 1 - tanh^2 = [1 - 1/4, 1] so grad = [0.5482939, -0.7310586].
    #[test]
    fn hand_softcap() {
        let out = two_classes([3.0_f32.ln(), 0.0], 1, with(|o| o.softcap = 2.0), 1.3132617);
        assert_each_relative(&out.lse, &[1.3132617]);
        assert_each_relative(&out.grad, &[0.5482939, -0.7310586]);
    }

    /// Weighted mean: two rows of z = [0, 0], labels [0, 1], weights [1, 3]:
    /// row losses [ln 2, 3 ln 2], D = 1 + 3 = 4, loss = 4 ln 2 / 4 = ln 2;
    /// grad row 0 = 1/4 * 1 * ([1/2, 1/2] - [1, 0]) = [-0.125, 0.125],
    /// grad row 1 = 1/4 * 3 * ([1/2, 1/2] - [0, 1]) = [0.375, -0.375].
    #[test]
    fn hand_weighted_mean() {
        let o = CrossEntropyOptions {
            weight: Some(vec![1.0, 3.0]),
            ..Default::default()
        };
        let out = ce(&[0.0; 4], &[0, 1], 2, 2, o);
        let ln2 = std::f32::consts::LN_2;
        assert_relative_eq!(out.loss, ln2, max_relative = 1e-6);
        assert_all_close("row_loss", &out.row_loss, &[ln2, 3.0 * ln2]);
        assert_all_close("grad", &out.grad, &[-0.125, 0.125, 0.375, -0.375]);
    }

    /// A `+inf` logit with soft-capping is just the cap: z = [+inf, 0], c = 1 gives z' = [1, 0]
    /// (p = [0.7310586, 0.2689414]), and its gradient is 0 because tanh is flat there.
    #[test]
    fn softcap_tames_infinities() {
        let out = two_classes(
            [f32::INFINITY, 0.0],
            1,
            with(|o| o.softcap = 1.0),
            1.3132617,
        );
        assert_eq!(out.grad[0], 0.0);
        assert_relative_eq!(out.grad[1], -0.7310586, max_relative = 1e-6);
    }

    // ------------------------------------------------------------------ IEEE specials

    /// -inf is a mask: p = 0 exactly, finite loss and gradient (without smoothing).
    #[test]
    fn negative_infinity_is_a_mask() {
        let ninf = f32::NEG_INFINITY;
        let z = [ninf, 1.0, ninf, 2.0, 3.0];
        let p = softmax(&z, 1, 5).unwrap();
        assert_eq!((p[0], p[2]), (0.0, 0.0));
        let logp = log_softmax(&z, 1, 5).unwrap();
        assert_eq!((logp[0], logp[2]), (ninf, ninf));
        // Same as the seed example with the masked classes removed.
        let out = ce(&z, &[3], 1, 5, CrossEntropyOptions::default());
        assert_relative_eq!(out.loss, 1.4076059, max_relative = 1e-6);
        assert_all_close(
            "grad",
            &out.grad,
            &[0.0, 0.0900306, 0.0, -0.7552715, 0.665_241],
        );
    }

    /// A row of only -inf: lse = -inf; ignored it is harmless, not ignored it is NaN
    /// (PyTorch's log_softmax gives NaN there too) and leaves the other row alone.
    #[test]
    fn all_masked_row() {
        let ninf = f32::NEG_INFINITY;
        let z = [ninf, ninf, ninf, 1.0, 2.0, 3.0];
        let out = ce(&z, &[-100, 1], 2, 3, CrossEntropyOptions::default());
        assert_eq!(out.lse[0], ninf);
        assert_eq!(out.row_loss[0], 0.0);
        assert_eq!(&out.grad[..3], &[0.0; 3]);
        assert_relative_eq!(out.loss, 1.4076059, max_relative = 1e-6);

        let out = ce(&z, &[0, 1], 2, 3, CrossEntropyOptions::default());
        assert_eq!(out.lse[0], ninf);
        assert!(out.row_loss[0].is_nan() && out.loss.is_nan());
        assert!(out.grad[..3].iter().all(|g| g.is_nan()));
        // The mean divides by D = 2 rows, whatever row 0 holds.
        assert_all_close(
            "grad row 1",
            &out.grad[3..],
            &[0.0450153, -0.37763575, 0.3326205],
        );
        assert!(softmax(&z, 2, 3).unwrap()[..3].iter().all(|p| p.is_nan()));
    }

    /// NaN and +inf poison their own row only, in every reduction and with every option on.
    #[test]
    fn nan_and_inf_rows_do_not_leak() {
        let clean = [0.3, -1.2, 2.0, 0.7, -0.1, 1.5];
        let mut dirty = vec![f32::NAN, 0.0, 1.0];
        dirty.extend([0.0, f32::INFINITY, 1.0]);
        dirty.extend(clean);
        let labels = [0, 1, 2, 0];
        for reduction in [Reduction::Mean, Reduction::Sum, Reduction::None] {
            let o = CrossEntropyOptions {
                reduction,
                label_smoothing: 0.1,
                weight: Some(vec![0.5, 2.0, 1.0]),
                z_loss: 0.01,
                ..Default::default()
            };
            let out = cross_entropy(&dirty, &labels, 4, 3, &o).unwrap();
            assert!(out.loss.is_nan());
            assert!(out.row_loss[..2].iter().all(|l| l.is_nan()));
            assert!(out.lse[..2].iter().all(|l| l.is_nan()));
            assert!(out.grad[..6].iter().all(|g| g.is_nan()));
            assert!(
                out.row_loss[2..]
                    .iter()
                    .chain(&out.grad[6..])
                    .all(|v| v.is_finite())
            );
            // The clean rows' gradient is what it would be if the dirty rows were clean,
            // because D depends on labels and weights only.
            let mut fixed = vec![0.0, 0.0, 1.0, 0.0, 0.0, 1.0];
            fixed.extend(clean);
            let reference = cross_entropy(&fixed, &labels, 4, 3, &o).unwrap();
            assert_eq!(&out.grad[6..], &reference.grad[6..]);
            assert_eq!(&out.row_loss[2..], &reference.row_loss[2..]);
        }
    }

    /// `0 * inf` inside a term is NaN, as in PyTorch 2.15 (checked there with these inputs:
    /// `F.cross_entropy(z, y, weight=w, label_smoothing=eps, reduction='sum')` gave
    /// nan, nan, inf, nan).
    #[test]
    fn zero_times_infinity_like_torch() {
        let z = [f32::NEG_INFINITY, 0.0, 1.0];
        let w = || Some(vec![0.0, 1.0, 1.0]);
        let sum = |label, weight, label_smoothing| {
            let o = CrossEntropyOptions {
                reduction: Reduction::Sum,
                weight,
                label_smoothing,
                ..Default::default()
            };
            ce(&z, &[label], 1, 3, o).loss
        };
        assert!(sum(0, w(), 0.0).is_nan()); // weight 0 * (-logp = inf) on the target
        assert!(sum(0, None, 1.0).is_nan()); // (1 - eps = 0) * inf on the target
        assert_eq!(sum(1, None, 1.0), f32::INFINITY); // smoothing over a masked class
        assert!(sum(1, w(), 0.1).is_nan()); // weight 0 * inf in the smoothing sum
    }

    // -------------------------------------------------------------------- against torch

    #[test]
    fn softmax_and_log_softmax_match_torch() {
        let case = torch_case("default_3x5");
        let p = softmax(&case.logits, 3, 5).unwrap();
        assert_all_close("softmax", &p, TORCH_SOFTMAX_3X5);
        let logp = log_softmax(&case.logits, 3, 5).unwrap();
        assert_all_close("log_softmax", &logp, TORCH_LOG_SOFTMAX_3X5);
        for row in p.chunks(5) {
            assert_relative_eq!(row.iter().sum::<f32>(), 1.0, max_relative = 1e-6);
        }
    }

    /// Every torch case on which the reference agrees with PyTorch to 1e-6 relative.
    #[test]
    fn cross_entropy_matches_torch() {
        let mut checked = 0;
        for case in torch_cases() {
            if DEVIATIONS.contains(&case.name.as_str()) {
                continue;
            }
            assert_output(&case.name, &case.run(), &case.expected());
            checked += 1;
        }
        assert_eq!(checked + DEVIATIONS.len(), torch_cases().len());
    }

    /// All rows ignored under Mean: PyTorch returns NaN (0 / 0), the reference 0; the
    /// gradient is 0 in both.
    #[test]
    fn all_ignored_mean_is_zero_not_nan() {
        for name in [
            "all_ignored_mean_3x5",
            "all_ignored_weights_smoothing_mean_3x5",
        ] {
            let case = torch_case(name);
            let mut want = case.expected();
            assert!(want.loss.is_nan(), "torch gives NaN");
            want.loss = 0.0;
            assert_output(name, &case.run(), &want);
        }
    }

    /// Rows not ignored but all their target weights 0: D = 0. PyTorch: NaN loss and NaN
    /// gradient for those rows (-0 / 0); the reference: loss 0, gradient 0.
    #[test]
    fn zero_target_weights_mean_is_zero_not_nan() {
        let case = torch_case("zero_target_weights_mean_3x5");
        let mut want = case.expected();
        assert!(want.loss.is_nan() && want.grad[..10].iter().all(|g| g.is_nan()));
        want.loss = 0.0;
        want.grad = vec![0.0; 15];
        assert_output(&case.name, &case.run(), &want);
    }

    /// The lse of a row with a +inf is NaN here (the log-softmax normaliser, as torch's
    /// `log_softmax` has it) where `torch.logsumexp` says +inf. Everything else matches,
    /// including the masked rows and the +inf losses that smoothing gives them.
    #[test]
    fn specials_match_torch_except_lse_of_inf_row() {
        for name in ["specials_mean_4x5", "specials_smoothing_sum_4x5"] {
            let case = torch_case(name);
            let mut want = case.expected();
            assert_eq!(want.lse[2], f32::INFINITY);
            want.lse[2] = f32::NAN;
            assert_output(name, &case.run(), &want);
        }
    }

    /// Ignored rows holding NaN or +inf: the reference gives them a zero gradient row,
    /// PyTorch's autograd NaN (0 * NaN in the log-softmax backward). Loss and the other rows
    /// agree.
    #[test]
    fn ignored_poisoned_rows_get_zero_grad() {
        let case = torch_case("specials_ignored_nan_row_mean_4x5");
        let mut want = case.expected();
        assert!(want.grad[5..15].iter().all(|g| g.is_nan()));
        want.grad[5..15].fill(0.0);
        want.lse[2] = f32::NAN;
        assert_output(&case.name, &case.run(), &want);
    }

    // ------------------------------------------------------------------------- errors

    #[test]
    fn shape_errors() {
        let o = CrossEntropyOptions::default();
        assert_eq!(
            cross_entropy(&[], &[], 0, 3, &o),
            Err(Error::EmptyShape { rows: 0, cols: 3 })
        );
        assert_eq!(
            cross_entropy(&[], &[0], 1, 0, &o),
            Err(Error::EmptyShape { rows: 1, cols: 0 })
        );
        let huge = Error::ShapeOverflow {
            rows: usize::MAX,
            cols: 2,
        };
        assert_eq!(
            cross_entropy(&[], &[], usize::MAX, 2, &o),
            Err(huge.clone())
        );
        assert_eq!(
            softmax(&[], 0, 1),
            Err(Error::EmptyShape { rows: 0, cols: 1 })
        );
        assert_eq!(log_softmax(&[], usize::MAX, 2), Err(huge));
    }

    #[test]
    fn length_errors() {
        let o = CrossEntropyOptions::default();
        let logits = Error::LengthMismatch {
            what: "logits",
            expected: 6,
            actual: 5,
        };
        assert_eq!(
            cross_entropy(&[0.0; 5], &[0, 0], 2, 3, &o),
            Err(logits.clone())
        );
        // The logits are checked before the labels.
        assert_eq!(
            cross_entropy(&[0.0; 5], &[0], 2, 3, &o),
            Err(logits.clone())
        );
        assert_eq!(softmax(&[0.0; 5], 2, 3), Err(logits.clone()));
        assert_eq!(log_softmax(&[0.0; 5], 2, 3), Err(logits));
        assert_eq!(
            cross_entropy(&[0.0; 6], &[0, 0, 0], 2, 3, &o),
            Err(Error::LengthMismatch {
                what: "labels",
                expected: 2,
                actual: 3
            })
        );
        let o = CrossEntropyOptions {
            weight: Some(vec![1.0; 4]),
            ..Default::default()
        };
        assert_eq!(
            cross_entropy(&[0.0; 6], &[0, 0], 2, 3, &o),
            Err(Error::LengthMismatch {
                what: "weight",
                expected: 3,
                actual: 4
            })
        );
    }

    #[test]
    fn option_errors() {
        let bad = |o: CrossEntropyOptions| -> &'static str {
            match cross_entropy(&[0.0; 6], &[0, 1], 2, 3, &o) {
                Err(Error::InvalidOption { name, .. }) => name,
                other => panic!("expected InvalidOption, got {other:?}"),
            }
        };
        let d = CrossEntropyOptions::default;
        for eps in [-0.1, 1.5, f32::NAN, f32::INFINITY] {
            assert_eq!(
                bad(CrossEntropyOptions {
                    label_smoothing: eps,
                    ..d()
                }),
                "label_smoothing"
            );
        }
        for s in [-1.0, f32::NAN, f32::INFINITY] {
            assert_eq!(bad(CrossEntropyOptions { z_loss: s, ..d() }), "z_loss");
        }
        for c in [-1.0, f32::NAN, f32::INFINITY] {
            assert_eq!(bad(CrossEntropyOptions { softcap: c, ..d() }), "softcap");
        }
        // The domain edges are fine.
        for o in [
            CrossEntropyOptions {
                label_smoothing: 1.0,
                ..d()
            },
            CrossEntropyOptions {
                label_smoothing: 0.0,
                z_loss: 0.0,
                softcap: 0.0,
                ..d()
            },
            CrossEntropyOptions {
                weight: Some(vec![0.0; 3]),
                ..d()
            },
        ] {
            assert!(cross_entropy(&[0.0; 6], &[0, 1], 2, 3, &o).is_ok());
        }
    }

    #[test]
    fn weight_errors() {
        for (value, index) in [(-1.0, 1), (f32::NAN, 2), (f32::INFINITY, 0)] {
            let mut w = vec![1.0; 3];
            w[index] = value;
            let o = CrossEntropyOptions {
                weight: Some(w),
                ..Default::default()
            };
            match cross_entropy(&[0.0; 6], &[0, 1], 2, 3, &o) {
                Err(Error::InvalidWeight { index: i, value: v }) => {
                    assert_eq!(i, index);
                    assert!(v == value || (v.is_nan() && value.is_nan()));
                }
                other => panic!("expected InvalidWeight, got {other:?}"),
            }
        }
    }

    #[test]
    fn label_errors() {
        let o = CrossEntropyOptions::default();
        let out_of_range = |row, value| Error::LabelOutOfRange {
            row,
            value,
            cols: 3,
            ignore_index: -100,
        };
        assert_eq!(
            cross_entropy(&[0.0; 6], &[0, 3], 2, 3, &o),
            Err(out_of_range(1, 3))
        );
        assert_eq!(
            cross_entropy(&[0.0; 6], &[-1, 0], 2, 3, &o),
            Err(out_of_range(0, -1))
        );
        assert_eq!(
            cross_entropy(&[0.0; 6], &[0, i64::MIN], 2, 3, &o),
            Err(out_of_range(1, i64::MIN))
        );
        // -100 is ignored by default, and any other ignore index works, in range or not.
        assert!(cross_entropy(&[0.0; 6], &[-100, 2], 2, 3, &o).is_ok());
        let o = CrossEntropyOptions {
            ignore_index: 7,
            ..Default::default()
        };
        assert!(cross_entropy(&[0.0; 6], &[7, 2], 2, 3, &o).is_ok());
        assert_eq!(
            cross_entropy(&[0.0; 6], &[-100, 2], 2, 3, &o),
            Err(Error::LabelOutOfRange {
                row: 0,
                value: -100,
                cols: 3,
                ignore_index: 7
            })
        );
    }

    /// The options are validated before the labels.
    #[test]
    fn options_are_checked_before_labels() {
        let o = CrossEntropyOptions {
            z_loss: -1.0,
            ..Default::default()
        };
        assert!(matches!(
            cross_entropy(&[0.0; 6], &[5, 5], 2, 3, &o),
            Err(Error::InvalidOption { name: "z_loss", .. })
        ));
    }

    // ---------------------------------------------------------------- the torch numbers

    /// PyTorch's numbers for the cases above, printed by a small script (torch_reference.py,
    /// kept outside the repository) with torch 2.15.0 (the 2.15.0+cu132 wheel, run on the CPU),
    /// numpy 2.4.6, Python 3.11.7. The inputs are float32; torch computes in float64
    /// (`F.cross_entropy` with class-index targets; soft-capping and z-loss built by hand as
    /// `zc = c * tanh(z / c)` and `s * logsumexp(zc)^2` over non-ignored rows, divided by the
    /// same mean denominator) and the gradient is autograd's; all printed as float32.
    /// Logits are `numpy.random.default_rng(seed).standard_normal(shape) * scale`.
    /// The numbers are data, in `src/testdata/torch_cases.txt` (its header gives the
    /// format); every value parses exactly to the f32 torch printed.
    fn torch_cases() -> Vec<TorchCase> {
        fn list<T: std::str::FromStr>(values: &str) -> Vec<T> {
            values
                .split_whitespace()
                .map(|v| {
                    v.parse()
                        .unwrap_or_else(|_| panic!("torch_cases.txt: {v} is not a number"))
                })
                .collect()
        }
        let text = include_str!("testdata/torch_cases.txt");
        let mut cases: Vec<TorchCase> = Vec::new();
        for line in text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let (key, values) = line.split_once(' ').expect("a key and its values");
            if key == "case" {
                let (name, shape) = values.split_once(' ').expect("case NAME ROWSxCOLS");
                let (rows, cols) = shape.split_once('x').expect("ROWSxCOLS");
                cases.push(TorchCase {
                    name: name.to_string(),
                    rows: rows.parse().unwrap(),
                    cols: cols.parse().unwrap(),
                    ..Default::default()
                });
                continue;
            }
            let case = cases.last_mut().expect("a case line first");
            let o = &mut case.options;
            match key {
                "reduction" => {
                    o.reduction = match values {
                        "mean" => Reduction::Mean,
                        "sum" => Reduction::Sum,
                        "none" => Reduction::None,
                        _ => panic!("torch_cases.txt: reduction {values}"),
                    }
                }
                "ignore_index" => o.ignore_index = values.parse().unwrap(),
                "label_smoothing" => o.label_smoothing = values.parse().unwrap(),
                "weight" => o.weight = (values != "-").then(|| list(values)),
                "z_loss" => o.z_loss = values.parse().unwrap(),
                "softcap" => o.softcap = values.parse().unwrap(),
                "logits" => case.logits = list(values),
                "labels" => case.labels = list(values),
                "loss" => case.loss = values.parse().unwrap(),
                "row_loss" => case.row_loss = list(values),
                "lse" => case.lse = list(values),
                "grad" => case.grad = list(values),
                _ => panic!("torch_cases.txt: unknown key {key}"),
            }
        }
        assert_eq!(cases.len(), 24, "torch_cases.txt holds 24 cases");
        cases
    }

    /// `torch.softmax` of the `default_3x5` logits (float64, printed as float32).
    #[rustfmt::skip]
    const TORCH_SOFTMAX_3X5: &[f32] = &[0.17787176, 0.10620728, 0.49792412, 0.17061383, 0.047383007, 0.09117761, 0.6004139, 0.29405922, 0.010828145, 0.0035211097, 0.13615213, 0.5143859, 0.0045279087, 0.305741, 0.039193064];
    /// `torch.log_softmax` of the `default_3x5` logits (float64, printed as float32).
    #[rustfmt::skip]
    const TORCH_LOG_SOFTMAX_3X5: &[f32] = &[-1.7266924, -2.2423625, -0.6973076, -1.7683526, -3.0494916, -2.3949459, -0.510136, -1.2239741, -4.5256066, -5.648979, -1.9939824, -0.6647816, -5.3974953, -1.1850169, -3.2392554];
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod probability_tests {
    use super::*;
    use approx::assert_relative_eq;

    // Generated with torch 2.15.0 (float64 autograd on these float32 inputs):
    // F.cross_entropy(z, t, weight=w, reduction=..., label_smoothing=...), t float targets.
    const Z: [f32; 12] = [
        3.577_257,
        0.873_019_7,
        0.192_994_94,
        -3.726_985_5,
        -0.554_776_43,
        -0.709_517_96,
        -0.165_482_97,
        -1.254_001_4,
        -0.087_636_34,
        -0.954_436_06,
        -2.627_729_4,
        1.769_244_8,
    ];
    const T: [f32; 12] = [
        0.365_552_34,
        0.319_393_28,
        0.012_963_504,
        0.302_090_85,
        0.157_025_95,
        0.251_421_57,
        0.171_727_57,
        0.419_824_9,
        0.229_130_27,
        0.081_604_83,
        0.283_334_14,
        0.405_930_82,
    ];
    const W: [f32; 4] = [0.5, 1.0, 2.0, 0.25];

    fn check(options: CrossEntropyOptions, loss: &[f32], grad: &[f32]) {
        let out = cross_entropy_probs(&Z, &T, 3, 4, &options).unwrap();
        if options.reduction == Reduction::None {
            for (a, b) in out.row_loss.iter().zip(loss) {
                assert_relative_eq!(*a, *b, max_relative = 1e-6);
            }
        } else {
            assert_relative_eq!(out.loss, loss[0], max_relative = 1e-6);
        }
        for (a, b) in out.grad.iter().zip(grad) {
            assert_relative_eq!(*a, *b, max_relative = 1e-5, epsilon = 1e-8);
        }
    }

    #[test]
    fn plain_mean_matches_torch() {
        check(
            CrossEntropyOptions::default(),
            &[2.307_681_8],
            &[
                0.180_767_76,
                -0.086_212_78,
                0.005_938_404,
                -0.100_493_39,
                0.034_700_57,
                -0.009_243_357,
                0.071_226_86,
                -0.096_684_07,
                -0.034_198_07,
                -0.009_474_143,
                -0.091_118_54,
                0.134_790_76,
            ],
        );
    }

    #[test]
    fn weights_and_smoothing_mean_matches_torch() {
        check(
            CrossEntropyOptions {
                weight: Some(W.to_vec()),
                label_smoothing: 0.1,
                ..Default::default()
            },
            &[1.953_763_8],
            &[
                0.133_770_69,
                -0.091_250_87,
                -0.017_909_346,
                -0.024_610_475,
                0.041_413_974,
                -0.024_536_636,
                -0.017_664_95,
                0.000_787_611_06,
                -0.001_771_630_3,
                -0.017_362_835,
                -0.183_767_93,
                0.202_902_39,
            ],
        );
    }

    #[test]
    fn weights_and_smoothing_sum_matches_torch() {
        check(
            CrossEntropyOptions {
                weight: Some(W.to_vec()),
                label_smoothing: 0.2,
                reduction: Reduction::Sum,
                ..Default::default()
            },
            &[6.028_994],
            &[
                0.437_401_26,
                -0.264_784_8,
                -0.100_107_7,
                -0.072_508_76,
                0.123_749_17,
                -0.069_907_606,
                -0.062_515_41,
                0.008_673_841,
                -0.005_432_398_5,
                -0.068_538_84,
                -0.544_563_96,
                0.618_535_16,
            ],
        );
    }

    #[test]
    fn weights_none_matches_torch() {
        check(
            CrossEntropyOptions {
                weight: Some(W.to_vec()),
                reduction: Reduction::None,
                ..Default::default()
            },
            &[1.561_447, 1.023_709_3, 3.108_432_5],
            &[
                0.365_222_9,
                -0.282_720_45,
                -0.007_348_384,
                -0.075_154_09,
                0.124_734_67,
                -0.077_312_21,
                -0.043_474_29,
                -0.003_948_175,
                -0.005_197_383,
                -0.035_638_172,
                -0.558_043_66,
                0.598_879_2,
            ],
        );
    }

    #[test]
    fn one_hot_targets_equal_class_targets() {
        // A one-hot probability row is the class-index loss, also with smoothing, z-loss
        // and soft-capping (all rows counted: Sum avoids the differing Mean denominators).
        let labels = [0i64, 3, 1];
        let mut onehot = [0.0f32; 12];
        for (r, &y) in labels.iter().enumerate() {
            onehot[r * 4 + y as usize] = 1.0;
        }
        let options = CrossEntropyOptions {
            reduction: Reduction::Sum,
            label_smoothing: 0.3,
            z_loss: 0.01,
            softcap: 2.0,
            weight: None,
            ..Default::default()
        };
        let a = cross_entropy(&Z, &labels, 3, 4, &options).unwrap();
        let b = cross_entropy_probs(&Z, &onehot, 3, 4, &options).unwrap();
        assert_relative_eq!(a.loss, b.loss, max_relative = 1e-6);
        for (x, y) in a.grad.iter().zip(&b.grad) {
            assert_relative_eq!(*x, *y, max_relative = 1e-5, epsilon = 1e-7);
        }
    }

    #[test]
    fn a_target_array_of_the_wrong_shape_is_an_error() {
        let e = cross_entropy_probs(&Z, &T[..11], 3, 4, &CrossEntropyOptions::default());
        assert!(matches!(
            e,
            Err(crate::error::Error::LengthMismatch {
                what: "targets",
                expected: 12,
                actual: 11
            })
        ));
    }
}

/// A fixed batch for demos and benchmarks: `rows * cols` logits in about [-4, 4] and one
/// label per row, drawn from a xorshift64 generator started at `seed` (nonzero), so the same
/// arguments always give the same data. (Tests that want fresh data draw their own.)
///
/// ```
/// let (logits, labels) = ml_softmax::reference::sample_batch(2, 3, 7);
/// assert_eq!((logits.len(), labels.len()), (6, 2));
/// assert!(labels.iter().all(|&y| (0..3).contains(&y)));
/// assert_eq!(ml_softmax::reference::sample_batch(2, 3, 7).0, logits);
/// ```
pub fn sample_batch(rows: usize, cols: usize, seed: u64) -> (Vec<f32>, Vec<i64>) {
    let mut state = seed.max(1);
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let logits = (0..rows * cols)
        .map(|_| ((next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 8.0)
        .collect();
    let labels = (0..rows)
        .map(|_| (next() % cols.max(1) as u64) as i64)
        .collect();
    (logits, labels)
}
