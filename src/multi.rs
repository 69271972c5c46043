//! Several adapters in one process: a batch's rows split across every usable adapter, each
//! part computed on its own adapter at the same time (one thread each) and the results
//! gathered in row order.
//!
//! Each adapter takes a contiguous share of the rows (as equal as whole rows allow), and
//! its host call splits that share into chunks by its own limits (its largest storage
//! binding). Only adapters that can run the call take part: f16 storage needs
//! `Features::SHADER_F16`, the subgroup strategy a usable subgroup size. The `Mean`
//! denominator is counted once over the whole batch (the same hook as [`crate::stream`]),
//! so every part's gradient is scaled for the whole batch; the reduced loss is the sum of
//! the parts' shares, in row order.
//!
//! Results equal one context's within the single-context tests' tolerances, but not bit for
//! bit: each adapter compiles the kernels its own way (and under `Strategy::Auto` may pick
//! another strategy), and the loss is summed per part, then across parts.
//!
//! ```no_run
//! use ml_softmax::multi::MultiContext;
//! use ml_softmax::{BackendChoice, ContextOptions, CrossEntropyOptions, Strategy, Targets};
//!
//! let multi = MultiContext::new(BackendChoice::Auto, &ContextOptions::default())?;
//! let (rows, cols) = (2, 3);
//! let logits = [1.0f32, 2.0, 3.0, 0.5, 0.5, 4.0];
//! let out = multi.cross_entropy_targets(&logits, Targets::Classes(&[1, 2]), rows, cols,
//!     &CrossEntropyOptions::default(), Strategy::Auto)?;
//! println!("{} on {} adapters", out.loss, multi.contexts().len());
//! # Ok::<(), ml_softmax::Error>(())
//! ```

use crate::context::{BackendChoice, Context, ContextOptions, keep_opened};
use crate::error::{Error, Result};
use crate::kernels::{Precision, Strategy};
use crate::ops::{BatchPart, HalfCrossEntropy, HostCall, HostJob, Targets, class_denominator};
use crate::options::{CrossEntropyOptions, check_labels, check_len, check_shape};
use crate::reference::CrossEntropyOutput;

/// One context per adapter; see the [module docs](self).
#[derive(Debug)]
pub struct MultiContext {
    contexts: Vec<Context>,
}

impl MultiContext {
    /// A context on every adapter of `backend` that opens a device (those that do not are
    /// left out).
    ///
    /// # Errors
    ///
    /// [`Error::NoAdapter`] when no adapter opens one.
    pub fn new(backend: BackendChoice, options: &ContextOptions) -> Result<Self> {
        let (contexts, _skipped) = keep_opened(Context::each_adapter(backend, options))?;
        Self::from_contexts(contexts)
    }

    /// The given contexts, in the order their parts of a batch take.
    ///
    /// # Errors
    ///
    /// [`Error::NoAdapter`] for an empty list.
    pub fn from_contexts(contexts: Vec<Context>) -> Result<Self> {
        if contexts.is_empty() {
            return Err(Error::NoAdapter {
                tried: "an empty list of contexts".into(),
                hint: "give MultiContext::from_contexts at least one Context",
            });
        }
        Ok(Self { contexts })
    }

    /// Every context, usable or not for a given call.
    pub fn contexts(&self) -> &[Context] {
        &self.contexts
    }

    /// The contexts that can run a call storing data as `precision` with `strategy`.
    pub fn usable(&self, precision: Precision, strategy: Strategy) -> Vec<&Context> {
        self.contexts
            .iter()
            .filter(|ctx| {
                let f16 = precision != Precision::F16
                    || ctx.features.contains(wgpu::Features::SHADER_F16);
                let subgroups = strategy != Strategy::Subgroup || ctx.has_subgroups();
                f16 && subgroups
            })
            .collect()
    }

    /// [`Context::cross_entropy_targets`] with the rows split across the usable adapters.
    ///
    /// # Errors
    ///
    /// Those of [`Context::cross_entropy_targets`] (the first part's to fail), and
    /// [`Error::Unsupported`] when no adapter can run the call.
    pub fn cross_entropy_targets(
        &self,
        logits: &[f32],
        targets: Targets<'_>,
        rows: usize,
        cols: usize,
        options: &CrossEntropyOptions,
        strategy: Strategy,
    ) -> Result<CrossEntropyOutput> {
        let n = check_shape(rows, cols)?;
        check_len("logits", n, logits.len())?;
        let bytes = bytemuck::cast_slice(logits);
        let out = self.split(
            bytes,
            Precision::F32,
            targets,
            rows,
            cols,
            options,
            strategy,
        )?;
        Ok(out.map_grad(|bytes| bytemuck::pod_collect_to_vec(&bytes)))
    }

    /// [`Context::cross_entropy_half`] with the rows split across the usable adapters (for
    /// `F16`, those with `SHADER_F16`).
    ///
    /// # Errors
    ///
    /// As [`MultiContext::cross_entropy_targets`], and [`Error::InvalidOption`] for `F32`.
    pub fn cross_entropy_half(
        &self,
        request: &HalfCrossEntropy<'_>,
    ) -> Result<CrossEntropyOutput<u16>> {
        let HalfCrossEntropy {
            precision,
            targets,
            rows,
            cols,
            options,
            strategy,
            ..
        } = *request;
        let bytes = bytemuck::cast_slice(request.checked_logits()?);
        let out = self.split(bytes, precision, targets, rows, cols, options, strategy)?;
        Ok(out.map_grad(|bytes| bytemuck::pod_collect_to_vec(&bytes)))
    }

    /// Splits the rows, runs each part on its adapter in its own thread, gathers in order.
    #[allow(clippy::too_many_arguments)]
    fn split(
        &self,
        logits: &[u8],
        precision: Precision,
        targets: Targets<'_>,
        rows: usize,
        cols: usize,
        options: &CrossEntropyOptions,
        strategy: Strategy,
    ) -> Result<CrossEntropyOutput<u8>> {
        options.validate(cols)?;
        // The whole batch's denominator, counted once, before anything runs.
        let denominator = match targets {
            Targets::Classes(labels) => {
                check_len("labels", rows, labels.len())?;
                check_labels(labels, cols, options.ignore_index)?;
                class_denominator(labels, options)
            }
            Targets::Probabilities(t) => {
                check_len("targets", rows * cols, t.len())?;
                rows as f64
            }
        };
        let usable = self.usable(precision, strategy);
        if usable.is_empty() {
            return Err(Error::Unsupported {
                adapter: self.names(),
                what: format!("none of these adapters runs {precision:?} storage with {strategy}"),
            });
        }
        let share = rows.div_ceil(usable.len());
        let eb = precision.bytes() as usize;
        let part = BatchPart {
            denominator: Some(denominator),
            loss_before: 0.0,
        };
        let results: Vec<Result<CrossEntropyOutput<u8>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = usable
                .iter()
                .zip((0..rows).step_by(share))
                .map(|(ctx, first)| {
                    let count = share.min(rows - first);
                    let part_targets = match targets {
                        Targets::Classes(l) => Targets::Classes(&l[first..][..count]),
                        Targets::Probabilities(t) => {
                            Targets::Probabilities(&t[first * cols..][..count * cols])
                        }
                    };
                    let part_logits = &logits[first * cols * eb..][..count * cols * eb];
                    scope.spawn(move || {
                        ctx.host_rows(HostCall {
                            logits: part_logits,
                            precision,
                            job: HostJob::CrossEntropy {
                                targets: part_targets,
                                options,
                            },
                            rows: count,
                            cols,
                            strategy,
                            part,
                        })
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(Error::Validation(
                            "a multi-adapter worker thread panicked".into(),
                        ))
                    })
                })
                .collect()
        });
        let mut out = CrossEntropyOutput {
            loss: 0.0,
            row_loss: Vec::with_capacity(rows),
            lse: Vec::with_capacity(rows),
            grad: Vec::with_capacity(logits.len()),
        };
        for result in results {
            let part = result?;
            out.loss += part.loss;
            out.row_loss.extend_from_slice(&part.row_loss);
            out.lse.extend_from_slice(&part.lse);
            out.grad.extend_from_slice(&part.grad);
        }
        Ok(out)
    }

    fn names(&self) -> String {
        let names: Vec<String> = self.contexts.iter().map(Context::describe).collect();
        names.join("; ")
    }
}
