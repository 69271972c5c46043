//! The f64 reference of the fused linear cross-entropy, shared by tests/linear.rs and
//! tests/cli.rs: logits `hidden @ classifier^T + bias` in f64, rounded to f32 (the input
//! the reference takes), the reference cross-entropy on them, then
//! `d_hidden = G C`, `d_classifier = G^T H`, `d_bias = colsum(G)` in f64.
#![allow(dead_code)]

use ml_softmax::{CrossEntropyOptions, LinearCrossEntropy, Matrix, Reduction, reference};

/// One problem: inputs as the exact f32 values the GPU sees.
pub struct Case {
    pub rows: usize,
    pub dim: usize,
    pub vocab: usize,
    pub hidden: Vec<f32>,
    pub classifier: Vec<f32>,
    pub bias: Option<Vec<f32>>,
    pub labels: Vec<i64>,
}

impl Case {
    pub fn call<'a>(&'a self, options: &'a CrossEntropyOptions) -> LinearCrossEntropy<'a> {
        LinearCrossEntropy {
            hidden: Matrix::F32(&self.hidden),
            classifier: Matrix::F32(&self.classifier),
            bias: self.bias.as_deref(),
            labels: &self.labels,
            rows: self.rows,
            dim: self.dim,
            vocab: self.vocab,
            options,
        }
    }
}

/// Relative error allowed on the GPU's sums of products (about `dim` ulps of the sum of
/// absolute terms, with room).
const SUM_ERROR: f64 = 1e-4;
/// Relative error allowed on each probability: WGSL's `exp` may be off by 3 + 2|x| ulps
/// (llvmpipe's wide vectors use that room), i.e. about 1e-6 at |x| ~ 3, and a probability
/// takes two (the sum-exp and `exp(z - lse)`). It matters where the gradient cancels:
/// `p_y - 1` with `p_y` near 1 is small while its error stays `p_y` times this (seed
/// 8053282 at LP_NATIVE_VECTOR_WIDTH=2048: 1.3e-6 off where the sum term allowed 9.6e-7).
const PROBABILITY_ERROR: f64 = 4e-6;

/// The f64 reference and, per gradient element, its tolerance:
/// `SUM_ERROR * sum |products| + PROBABILITY_ERROR * sum (c_r p_rj) |operand| + 1e-7`, where
/// `c_r p_rj` bounds the probability part of `dL/dz_rj` (`c_r`: the reduction's scale times
/// the largest class weight plus the z-loss term).
pub struct Expected {
    pub out: ml_softmax::CrossEntropyOutput,
    pub grad_hidden: Vec<f32>,
    pub grad_hidden_tol: Vec<f64>,
    pub grad_classifier: Vec<f32>,
    pub grad_classifier_tol: Vec<f64>,
    pub grad_bias: Vec<f32>,
    pub grad_bias_tol: Vec<f64>,
}

pub fn expected(case: &Case, options: &CrossEntropyOptions) -> Expected {
    let (n, d, v) = (case.rows, case.dim, case.vocab);
    let mut logits = vec![0f32; n * v];
    for r in 0..n {
        for j in 0..v {
            let mut z: f64 = (0..d)
                .map(|k| f64::from(case.hidden[r * d + k]) * f64::from(case.classifier[j * d + k]))
                .sum();
            if let Some(b) = &case.bias {
                z += f64::from(b[j]);
            }
            logits[r * v + j] = z as f32;
        }
    }
    let out = reference::cross_entropy(&logits, &case.labels, n, v, options).unwrap();
    let g = |r: usize, j: usize| f64::from(out.grad[r * v + j]);
    // The probability part of dL/dz_rj, bounded: c_r p_rj.
    let weight = |j: usize| options.weight.as_ref().map_or(1.0, |w| f64::from(w[j]));
    let ignored = |r: usize| case.labels[r] == options.ignore_index;
    let denominator: f64 = (0..n)
        .filter(|&r| !ignored(r))
        .map(|r| weight(case.labels[r] as usize))
        .sum();
    let k = match options.reduction {
        Reduction::Mean if denominator > 0.0 => 1.0 / denominator,
        Reduction::Mean => 0.0,
        Reduction::Sum | Reduction::None => 1.0,
    };
    let w_max = (0..v).map(weight).fold(1.0, f64::max);
    let cap = f64::from(options.softcap);
    let prob = |r: usize, j: usize| {
        if ignored(r) {
            return 0.0;
        }
        let lse = f64::from(out.lse[r]);
        let z = f64::from(logits[r * v + j]);
        let z = if cap > 0.0 { cap * (z / cap).tanh() } else { z };
        let c = k * (w_max + 2.0 * f64::from(options.z_loss) * lse.abs());
        c * (z - lse).exp()
    };
    let tol =
        |sum_abs: f64, prob_abs: f64| SUM_ERROR * sum_abs + PROBABILITY_ERROR * prob_abs + 1e-7;
    // One element of a gradient product: the sum of its terms `g x` in f64 (in order), and
    // its tolerance from `sum |g x|` and `sum p |x|`, with `p` the bound on `|g|`'s
    // probability part (`prob`).
    let element = |terms: &mut dyn Iterator<Item = (f64, f64, f64)>| {
        let (mut s, mut a, mut pa) = (0.0, 0.0, 0.0);
        for (g, p, x) in terms {
            s += g * x;
            a += (g * x).abs();
            pa += p * x.abs();
        }
        (s as f32, tol(a, pa))
    };
    let (mut gh, mut ght) = (vec![0f32; n * d], vec![0f64; n * d]);
    for r in 0..n {
        for kk in 0..d {
            let c = |j: usize| f64::from(case.classifier[j * d + kk]);
            (gh[r * d + kk], ght[r * d + kk]) =
                element(&mut (0..v).map(|j| (g(r, j), prob(r, j), c(j))));
        }
    }
    let (mut gc, mut gct) = (vec![0f32; v * d], vec![0f64; v * d]);
    let (mut gb, mut gbt) = (vec![0f32; v], vec![0f64; v]);
    for j in 0..v {
        for kk in 0..d {
            let h = |r: usize| f64::from(case.hidden[r * d + kk]);
            (gc[j * d + kk], gct[j * d + kk]) =
                element(&mut (0..n).map(|r| (g(r, j), prob(r, j), h(r))));
        }
        gb[j] = (0..n).map(|r| g(r, j)).sum::<f64>() as f32;
        gbt[j] = tol(
            (0..n).map(|r| g(r, j).abs()).sum::<f64>(),
            (0..n).map(|r| prob(r, j)).sum::<f64>(),
        );
    }
    Expected {
        out,
        grad_hidden: gh,
        grad_hidden_tol: ght,
        grad_classifier: gc,
        grad_classifier_tol: gct,
        grad_bias: gb,
        grad_bias_tol: gbt,
    }
}
