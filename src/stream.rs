//! Batches past memory: cross-entropy over a stream of row chunks that the caller feeds one
//! at a time, with each chunk's results returned at once and the reduced loss of the whole
//! stream at the end.
//!
//! The `Mean` denominator `D` is fixed before the first chunk ([`Denominator`]: counted from
//! every label, which are small, or given by the caller), so each chunk's gradient, scaled
//! by `1 / D`, is final when it comes back and the caller can write it out and drop it. The
//! reduced loss is accumulated exactly as one call accumulates its own chunks
//! (`loss += (1 / D) * sum of the chunk's row losses`), so a stream fed the chunks that one
//! call would make (see [`crate::ContextOptions::max_chunk_bytes`]) gives that call's results
//! bit for bit.
//!
//! ```no_run
//! use ml_softmax::stream::{CrossEntropyStream, Denominator};
//! use ml_softmax::{Context, CrossEntropyOptions, Strategy, Targets};
//!
//! let ctx = Context::new()?;
//! let (rows, cols) = (4, 3);
//! let logits = [1.0f32, 2.0, 3.0, 0.5, 0.5, 4.0, 0.0, 0.0, 0.0, 3.0, 2.0, 1.0];
//! let labels = [1i64, 2, -100, 0];
//! let options = CrossEntropyOptions::default();
//! let mut stream = CrossEntropyStream::new(
//!     &ctx, cols, &options, Denominator::Labels(&labels), Strategy::Auto)?;
//! for first in (0..rows).step_by(2) {
//!     let chunk = &logits[first * cols..][..2 * cols];
//!     let out = stream.push(chunk, Targets::Classes(&labels[first..][..2]))?;
//!     println!("rows {first}..: grad {:?}", out.grad); // final: scaled by 1 / D of all rows
//! }
//! println!("mean loss {}", stream.finish()?); // over the 3 rows not ignored
//! # Ok::<(), ml_softmax::Error>(())
//! ```

use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::{Precision, Strategy};
use crate::ops::{BatchPart, HostCall, HostJob, Targets, class_denominator};
use crate::options::{CrossEntropyOptions, Reduction, check_half, check_len, check_shape};
use crate::reference::CrossEntropyOutput;

/// Where the `Mean` denominator of a stream comes from. It is ignored by `Sum` and `None`.
#[derive(Debug, Clone, Copy)]
pub enum Denominator<'a> {
    /// Class-index labels of the whole stream, `[rows]`: `D` is the sum of the target weights
    /// of the rows not ignored (PyTorch's rule). The stream then holds exactly these rows, and
    /// each chunk must be pushed with its slice of these labels.
    Labels(&'a [i64]),
    /// The stream's number of rows, for probability targets (PyTorch divides their mean by
    /// the rows). The stream then holds exactly this many rows.
    Rows(usize),
    /// `D` as the caller counted it (finite, `>= 0`; 0 gives loss 0 and a zero gradient).
    /// The stream's length is then not known in advance.
    Given(f64),
}

/// Cross-entropy over a stream of row chunks; see the [module docs](self).
///
/// Each [`push`](Self::push) runs one host call on its chunk (the call splits it further
/// when it is larger than one storage binding) and returns the chunk's gradient, row losses
/// and lse, and in `loss` the stream's reduced loss so far; [`finish`](Self::finish) checks
/// that every row came and returns the reduced loss.
#[derive(Debug)]
pub struct CrossEntropyStream<'a> {
    ctx: &'a Context,
    cols: usize,
    options: CrossEntropyOptions,
    /// `D`; for `Sum` and `None` unused.
    denominator: f64,
    /// The labels `D` was counted from, to check the pushed chunks against.
    labels: Option<&'a [i64]>,
    /// Rows of the whole stream, where known.
    batch_rows: Option<usize>,
    /// The strategy, resolved once (for `Auto`: from the stream's rows where known, else from
    /// the first chunk's) so that every chunk runs the same kernel.
    strategy: Strategy,
    rows_done: usize,
    loss: f32,
}

impl<'a> CrossEntropyStream<'a> {
    /// A stream of rows of `cols` classes on `ctx`, with `options` and the mean's
    /// `denominator`.
    ///
    /// # Errors
    ///
    /// Invalid `options` (as [`CrossEntropyOptions::validate`]); labels out of range
    /// ([`Error::LabelOutOfRange`]); `Rows(0)` or `Labels(&[])` ([`Error::EmptyShape`]); a
    /// given denominator that is negative or not finite ([`Error::InvalidOption`]).
    pub fn new(
        ctx: &'a Context,
        cols: usize,
        options: &CrossEntropyOptions,
        denominator: Denominator<'a>,
        strategy: Strategy,
    ) -> Result<Self> {
        options.validate(cols)?;
        let (d, labels, batch_rows) = match denominator {
            Denominator::Labels(labels) => {
                check_shape(labels.len(), cols)?;
                options.check_labels(labels, cols)?;
                (
                    class_denominator(labels, options),
                    Some(labels),
                    Some(labels.len()),
                )
            }
            Denominator::Rows(rows) => {
                check_shape(rows, cols)?;
                (rows as f64, None, Some(rows))
            }
            Denominator::Given(d) if d.is_finite() && d >= 0.0 => (d, None, None),
            Denominator::Given(d) => {
                return Err(Error::InvalidOption {
                    name: "denominator",
                    value: d.to_string(),
                    reason: "a stream's mean denominator must be finite and >= 0",
                });
            }
        };
        let strategy = match batch_rows {
            Some(rows) => ctx.resolve_strategy(strategy, rows, cols),
            None => strategy,
        };
        Ok(Self {
            ctx,
            cols,
            options: options.clone(),
            denominator: d,
            labels,
            batch_rows,
            strategy,
            rows_done: 0,
            loss: 0.0,
        })
    }

    /// The next chunk: f32 logits `[chunk_rows, cols]` (the rows follow on from the previous
    /// chunk) and its targets. Returns the chunk's gradient (scaled for the whole stream),
    /// row losses and lse; `loss` is the stream's reduced loss up to and including it.
    ///
    /// # Errors
    ///
    /// The errors of [`Context::cross_entropy_targets`] for the chunk; more rows than the
    /// stream holds, or labels other than those of [`Denominator::Labels`]
    /// ([`Error::LengthMismatch`], [`Error::InvalidOption`]). A failed push changes nothing:
    /// the chunk may be pushed again.
    pub fn push(&mut self, logits: &[f32], targets: Targets<'_>) -> Result<CrossEntropyOutput> {
        let out = self.push_bytes(bytemuck::cast_slice(logits), Precision::F32, targets)?;
        Ok(out.map_grad(|bytes| bytemuck::pod_collect_to_vec(&bytes)))
    }

    /// [`push`](Self::push) for half-precision logits (`F16` or `Bf16` bits); the gradient
    /// comes back in the same format.
    ///
    /// # Errors
    ///
    /// As [`push`](Self::push), and [`Error::InvalidOption`] for `Precision::F32`.
    pub fn push_half(
        &mut self,
        logits: &[u16],
        precision: Precision,
        targets: Targets<'_>,
    ) -> Result<CrossEntropyOutput<u16>> {
        check_half(precision, "u16 logits are F16 or Bf16; use push for f32")?;
        let out = self.push_bytes(bytemuck::cast_slice(logits), precision, targets)?;
        Ok(out.map_grad(|bytes| bytemuck::pod_collect_to_vec(&bytes)))
    }

    fn push_bytes(
        &mut self,
        logits: &[u8],
        precision: Precision,
        targets: Targets<'_>,
    ) -> Result<CrossEntropyOutput<u8>> {
        let cols = self.cols;
        let elems = logits.len() / precision.bytes() as usize;
        let rows = elems / cols;
        check_len("logits", rows * cols, elems)?;
        check_shape(rows, cols)?;
        if let Some(total) = self.batch_rows {
            if self.rows_done + rows > total {
                return Err(Error::LengthMismatch {
                    what: "stream rows",
                    expected: total,
                    actual: self.rows_done + rows,
                });
            }
        }
        if let (Some(all), Targets::Classes(labels)) = (self.labels, targets) {
            if all.get(self.rows_done..self.rows_done + labels.len()) != Some(labels) {
                return Err(Error::InvalidOption {
                    name: "targets",
                    value: format!("labels of rows {}..", self.rows_done),
                    reason: "differ from the labels the stream's denominator was counted from",
                });
            }
        }
        if self.labels.is_some() && matches!(targets, Targets::Probabilities(_)) {
            return Err(Error::InvalidOption {
                name: "targets",
                value: "probabilities".into(),
                reason: "the stream's denominator was counted from class labels",
            });
        }
        let strategy = self.ctx.resolve_strategy(self.strategy, rows, cols);
        let part = BatchPart {
            denominator: Some(self.denominator),
            loss_before: self.loss,
        };
        let out = self.ctx.host_rows(HostCall {
            logits,
            precision,
            job: HostJob::CrossEntropy {
                targets,
                options: &self.options,
            },
            rows,
            cols,
            strategy,
            part,
        })?;
        self.strategy = strategy;
        self.rows_done += rows;
        self.loss = out.loss;
        Ok(out)
    }

    /// Rows pushed so far.
    pub fn rows(&self) -> usize {
        self.rows_done
    }

    /// The reduced loss so far: for `Mean`, the rows pushed so far over the whole stream's
    /// denominator.
    pub fn loss(&self) -> f32 {
        self.loss
    }

    /// The reduction the stream computes.
    pub fn reduction(&self) -> Reduction {
        self.options.reduction
    }

    /// Ends the stream and returns its reduced loss (for `None`, the sum of the row losses).
    ///
    /// # Errors
    ///
    /// [`Error::LengthMismatch`] when the stream's length is known and fewer rows came.
    pub fn finish(self) -> Result<f32> {
        if let Some(total) = self.batch_rows {
            check_len("stream rows", total, self.rows_done)?;
        }
        Ok(self.loss)
    }
}
