//! The host API's async calls: the same work as the blocking ones (`host.rs`), awaiting the
//! GPU instead of waiting for it. These are the calls a web page makes (wasm32, WebGPU),
//! where the page's thread may never block; natively they run under any executor (see
//! `src/platform.rs` for who polls the device).

use super::host::HostJob;
use super::{SoftmaxKind, Targets};
use crate::context::Context;
use crate::error::Result;
use crate::kernels::{Precision, Strategy};
use crate::options::CrossEntropyOptions;
use crate::reference::CrossEntropyOutput;

impl Context {
    /// [`Context::cross_entropy`] without blocking.
    ///
    /// ```no_run
    /// # async fn page(ctx: &ml_softmax::Context) -> ml_softmax::Result<()> {
    /// let out = ctx.cross_entropy_async(&[1.0, 2.0, 3.0], &[1], 1, 3, &Default::default()).await?;
    /// assert!((out.loss - 1.4076).abs() < 1e-4);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn cross_entropy_async(
        &self,
        logits: &[f32],
        labels: &[i64],
        rows: usize,
        cols: usize,
        options: &CrossEntropyOptions,
    ) -> Result<CrossEntropyOutput> {
        let targets = Targets::Classes(labels);
        self.cross_entropy_targets_async(logits, targets, rows, cols, options, Strategy::Auto)
            .await
    }

    /// [`Context::cross_entropy_targets`] (either kind of targets, an explicit strategy)
    /// without blocking.
    pub async fn cross_entropy_targets_async(
        &self,
        logits: &[f32],
        targets: Targets<'_>,
        rows: usize,
        cols: usize,
        options: &CrossEntropyOptions,
        strategy: Strategy,
    ) -> Result<CrossEntropyOutput> {
        let job = HostJob::CrossEntropy { targets, options };
        self.host_elements_async(logits, Precision::F32, job, rows, cols, strategy)
            .await
    }

    /// [`Context::softmax_with`] (softmax or log-softmax, by `kind`) without blocking.
    pub async fn softmax_with_async(
        &self,
        logits: &[f32],
        rows: usize,
        cols: usize,
        kind: SoftmaxKind,
        strategy: Strategy,
    ) -> Result<Vec<f32>> {
        let job = HostJob::Softmax { kind };
        let out = self
            .host_elements_async(logits, Precision::F32, job, rows, cols, strategy)
            .await?;
        Ok(out.grad)
    }
}
