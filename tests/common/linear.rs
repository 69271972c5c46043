//! The f64 reference of the fused linear cross-entropy, shared by tests/linear.rs and
//! tests/cli.rs: logits `hidden @ classifier^T + bias` in f64, rounded to f32 (the input
//! the reference takes), the reference cross-entropy on them, then
//! `d_hidden = G C`, `d_classifier = G^T H`, `d_bias = colsum(G)` in f64.
#![allow(dead_code)]

use ml_softmax::{CrossEntropyOptions, LinearCrossEntropy, Matrix, reference};

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

/// The f64 reference and, per gradient element, the sum of the absolute products it adds up
/// (the scale of its rounding error).
pub struct Expected {
    pub out: ml_softmax::CrossEntropyOutput,
    pub grad_hidden: Vec<f32>,
    pub grad_hidden_scale: Vec<f64>,
    pub grad_classifier: Vec<f32>,
    pub grad_classifier_scale: Vec<f64>,
    pub grad_bias: Vec<f32>,
    pub grad_bias_scale: Vec<f64>,
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
    let (mut gh, mut ghs) = (vec![0f32; n * d], vec![0f64; n * d]);
    for r in 0..n {
        for k in 0..d {
            let (mut s, mut a) = (0.0, 0.0);
            for j in 0..v {
                let t = g(r, j) * f64::from(case.classifier[j * d + k]);
                s += t;
                a += t.abs();
            }
            gh[r * d + k] = s as f32;
            ghs[r * d + k] = a;
        }
    }
    let (mut gc, mut gcs) = (vec![0f32; v * d], vec![0f64; v * d]);
    let (mut gb, mut gbs) = (vec![0f32; v], vec![0f64; v]);
    for j in 0..v {
        for k in 0..d {
            let (mut s, mut a) = (0.0, 0.0);
            for r in 0..n {
                let t = g(r, j) * f64::from(case.hidden[r * d + k]);
                s += t;
                a += t.abs();
            }
            gc[j * d + k] = s as f32;
            gcs[j * d + k] = a;
        }
        gb[j] = (0..n).map(|r| g(r, j)).sum::<f64>() as f32;
        gbs[j] = (0..n).map(|r| g(r, j).abs()).sum::<f64>();
    }
    Expected {
        out,
        grad_hidden: gh,
        grad_hidden_scale: ghs,
        grad_classifier: gc,
        grad_classifier_scale: gcs,
        grad_bias: gb,
        grad_bias_scale: gbs,
    }
}
