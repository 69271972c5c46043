//! What the caller asks for: the loss options, mirroring `torch.nn.functional.cross_entropy`.

use crate::error::{Error, Result};

/// How per-row losses are combined into the returned loss, and how the gradient is scaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reduction {
    /// Weighted mean over the rows that are not ignored (PyTorch's default).
    #[default]
    Mean,
    /// Sum over rows.
    Sum,
    /// No reduction: one loss per row; the gradient is that of the sum of the row losses.
    None,
}

/// Options of the cross-entropy loss with class-index targets.
///
/// The defaults are PyTorch's: `reduction = Mean`, `ignore_index = -100`, no smoothing, no
/// class weights, and the large-vocabulary extras (z-loss, soft-capping) off.
#[derive(Debug, Clone, PartialEq)]
pub struct CrossEntropyOptions {
    /// See [`Reduction`].
    pub reduction: Reduction,
    /// Rows whose label equals this value contribute no loss and a zero gradient row.
    pub ignore_index: i64,
    /// Label smoothing `eps` in `[0, 1]`, PyTorch's formula.
    pub label_smoothing: f32,
    /// One non-negative weight per class, or `None` for all ones.
    pub weight: Option<Vec<f32>>,
    /// z-loss scale `s >= 0`: adds `s * lse^2` to each non-ignored row's loss.
    pub z_loss: f32,
    /// Logit soft-capping `c >= 0` (0 = off): the loss sees `c * tanh(z / c)` in place of `z`.
    pub softcap: f32,
}

impl Default for CrossEntropyOptions {
    fn default() -> Self {
        Self {
            reduction: Reduction::Mean,
            ignore_index: -100,
            label_smoothing: 0.0,
            weight: None,
            z_loss: 0.0,
            softcap: 0.0,
        }
    }
}

impl CrossEntropyOptions {
    /// Checks every option against its domain and `weight` against the number of classes.
    pub fn validate(&self, cols: usize) -> Result<()> {
        let eps = self.label_smoothing;
        if !(0.0..=1.0).contains(&eps) {
            return Err(Error::InvalidOption {
                name: "label_smoothing",
                value: eps.to_string(),
                reason: "must be in [0, 1]",
            });
        }
        if !(self.z_loss.is_finite() && self.z_loss >= 0.0) {
            return Err(Error::InvalidOption {
                name: "z_loss",
                value: self.z_loss.to_string(),
                reason: "must be finite and >= 0",
            });
        }
        if !(self.softcap.is_finite() && self.softcap >= 0.0) {
            return Err(Error::InvalidOption {
                name: "softcap",
                value: self.softcap.to_string(),
                reason: "must be finite and >= 0 (0 turns it off)",
            });
        }
        if let Some(w) = &self.weight {
            if w.len() != cols {
                return Err(Error::LengthMismatch {
                    what: "weight",
                    expected: cols,
                    actual: w.len(),
                });
            }
            if let Some((index, &value)) = w
                .iter()
                .enumerate()
                .find(|(_, v)| !(v.is_finite() && **v >= 0.0))
            {
                return Err(Error::InvalidWeight { index, value });
            }
        }
        Ok(())
    }

    /// Checks class-index labels: each in `0..cols` or equal to `ignore_index`.
    pub fn check_labels(&self, labels: &[i64], cols: usize) -> Result<()> {
        check_labels(labels, cols, self.ignore_index)
    }
}

/// Checks a shape and returns `rows * cols`.
pub(crate) fn check_shape(rows: usize, cols: usize) -> Result<usize> {
    if rows == 0 || cols == 0 {
        return Err(Error::EmptyShape { rows, cols });
    }
    rows.checked_mul(cols)
        .filter(|n| u64::try_from(*n).is_ok())
        .ok_or(Error::ShapeOverflow { rows, cols })
}

/// Checks that `len` equals `expected`, naming the input.
pub(crate) fn check_len(what: &'static str, expected: usize, len: usize) -> Result<()> {
    if expected == len {
        Ok(())
    } else {
        Err(Error::LengthMismatch {
            what,
            expected,
            actual: len,
        })
    }
}

/// Checks that `u16` logits are declared `F16` or `Bf16`; `reason` names the f32 call to
/// use instead.
pub(crate) fn check_half(precision: crate::kernels::Precision, reason: &'static str) -> Result<()> {
    if precision == crate::kernels::Precision::F32 {
        return Err(Error::InvalidOption {
            name: "precision",
            value: "F32".into(),
            reason,
        });
    }
    Ok(())
}

/// Checks class-index labels: each in `0..cols` or equal to `ignore_index`.
pub(crate) fn check_labels(labels: &[i64], cols: usize, ignore_index: i64) -> Result<()> {
    for (row, &value) in labels.iter().enumerate() {
        let in_range = value >= 0 && (value as u64) < cols as u64;
        if !in_range && value != ignore_index {
            return Err(Error::LabelOutOfRange {
                row,
                value,
                cols,
                ignore_index,
            });
        }
    }
    Ok(())
}
