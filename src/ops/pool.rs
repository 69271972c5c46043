//! The device buffers of host calls: one set per call, sized for one chunk of rows and
//! reused for each chunk, then kept in the context's pool for the next call of the same
//! layout.

use super::padded;
use crate::context::Context;
use crate::error::Result;
use crate::kernels::batch_sum::STATS_LEN;
use crate::kernels::row_softmax::RowBuffers;
use crate::kernels::{Precision, Slice};

impl Context {
    /// Device buffers for a host call: a pooled set of the same layout when one is free
    /// (so a stream of small calls allocates nothing), else new ones. They go back to the
    /// pool when the call's [`Pooled`] guard drops.
    pub(super) fn host_buffers(
        &self,
        layout: HostLayout,
        stats: &[f32; STATS_LEN],
    ) -> Result<Pooled<'_>> {
        let reused = self
            .host_pool
            .lock()
            .ok()
            .and_then(|mut pool| pool.take(layout));
        let bufs = match reused {
            Some(bufs) => {
                self.queue
                    .write_buffer(&bufs.scales, 0, bytemuck::cast_slice(stats));
                bufs
            }
            None => self.scoped(|| HostBuffers::new(self, layout, stats))?,
        };
        Ok(Pooled {
            ctx: self,
            bufs: Some(bufs),
        })
    }
}

/// What the device buffers of a host call hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct HostLayout {
    /// Rows per chunk.
    pub(super) chunk_rows: usize,
    pub(super) cols: usize,
    /// Per-row inputs and outputs (labels, losses, lse); softmax has none.
    pub(super) per_row: bool,
    /// Probability targets, `chunk_rows * cols`.
    pub(super) targets: bool,
    /// The storage format of logits and output.
    pub(super) precision: Precision,
    /// Floats of split-layout partials after the stats in `scales`.
    pub(super) partials: usize,
}

/// The device buffers of one host call, sized for one chunk and reused for each chunk.
pub(crate) struct HostBuffers {
    layout: HostLayout,
    logits: wgpu::Buffer,
    pub(super) out: wgpu::Buffer,
    labels: wgpu::Buffer,
    targets: wgpu::Buffer,
    row_loss: wgpu::Buffer,
    lse: wgpu::Buffer,
    pub(super) scales: wgpu::Buffer,
    pub(super) staging: wgpu::Buffer,
    poison: bool,
}

impl HostBuffers {
    fn new(ctx: &Context, layout: HostLayout, stats: &[f32; STATS_LEN]) -> Result<Self> {
        use wgpu::BufferUsages as U;
        let elems = (layout.chunk_rows * layout.cols) as u64;
        // Whole 16-byte vectors, so that rows of any length and format take the vector io files.
        let elem_bytes = (elems * layout.precision.bytes()).next_multiple_of(16);
        let rows = if layout.per_row {
            layout.chunk_rows as u64
        } else {
            1
        };
        let buffer = |label, bytes: u64, usage| {
            ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes,
                usage,
                mapped_at_creation: false,
            })
        };
        Ok(Self {
            layout,
            logits: buffer("logits", elem_bytes, U::STORAGE | U::COPY_DST),
            out: buffer("out", elem_bytes, U::STORAGE | U::COPY_SRC | U::COPY_DST),
            labels: buffer("labels", rows * 4, U::STORAGE | U::COPY_DST),
            targets: buffer(
                "targets",
                if layout.targets { elems * 4 } else { 4 },
                U::STORAGE | U::COPY_DST,
            ),
            row_loss: buffer("row_loss", rows * 4, U::STORAGE | U::COPY_SRC | U::COPY_DST),
            lse: buffer("lse", rows * 4, U::STORAGE | U::COPY_SRC | U::COPY_DST),
            scales: {
                let mut init = vec![0.0f32; STATS_LEN + layout.partials];
                init[..STATS_LEN].copy_from_slice(stats);
                ctx.scales_buffer(&init)
            },
            staging: buffer(
                "staging",
                elem_bytes + (2 * rows + STATS_LEN as u64) * 4,
                U::MAP_READ | U::COPY_DST,
            ),
            poison: ctx.poison_outputs,
        })
    }

    /// Writes one chunk of `elems` logits, given as bytes (and, when poisoning, NaN into the
    /// outputs so that an element the kernel fails to write shows up).
    pub(super) fn upload(&self, ctx: &Context, logits: &[u8], elems: usize) {
        ctx.write_words(&self.logits, logits);
        if self.poison {
            // All-ones bits are a NaN in f32, f16 and bf16 alike.
            let nan = vec![0xffu8; padded(logits.len())];
            ctx.queue.write_buffer(&self.out, 0, &nan);
            if self.layout.per_row {
                let rows = elems / self.layout.cols;
                let nan = vec![0xffu8; rows * 4];
                ctx.queue.write_buffer(&self.row_loss, 0, &nan);
                ctx.queue.write_buffer(&self.lse, 0, &nan);
            }
        }
    }

    pub(super) fn upload_labels(&self, ctx: &Context, labels: &[i32]) {
        ctx.queue
            .write_buffer(&self.labels, 0, bytemuck::cast_slice(labels));
    }

    pub(super) fn upload_targets(&self, ctx: &Context, targets: &[f32]) {
        ctx.queue
            .write_buffer(&self.targets, 0, bytemuck::cast_slice(targets));
    }

    pub(super) fn row_buffers<'a>(
        &'a self,
        elems: usize,
        rows: usize,
        weights: &'a wgpu::Buffer,
    ) -> RowBuffers<'a> {
        // Without per-row outputs (softmax) the row buffers hold one element.
        let rows = if self.layout.per_row { rows } else { 1 };
        let targets = if self.layout.targets { elems } else { 1 };
        let words = |buffer, len: usize| Slice::words(buffer, 0, len as u64);
        let data = |buffer| Slice {
            buffer,
            start: 0,
            len: elems as u64,
            elem_bytes: self.layout.precision.bytes(),
        };
        RowBuffers {
            logits: data(&self.logits),
            out: Some(data(&self.out)),
            precision: self.layout.precision,
            labels: words(&self.labels, rows),
            targets: words(&self.targets, targets),
            row_loss: words(&self.row_loss, rows),
            lse: words(&self.lse, rows),
            weights,
            scales: &self.scales,
        }
    }

    /// Staging layout: the output (padded to whole words), then with per-row outputs the row
    /// losses, lse, stats. Returns the bytes to read back.
    pub(super) fn copy_to_staging(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        elems: usize,
        rows: usize,
    ) -> usize {
        let e = padded(elems * self.layout.precision.bytes() as usize) as u64;
        let r = (rows * 4) as u64;
        encoder.copy_buffer_to_buffer(&self.out, 0, &self.staging, 0, e);
        if !self.layout.per_row {
            return e as usize;
        }
        encoder.copy_buffer_to_buffer(&self.row_loss, 0, &self.staging, e, r);
        encoder.copy_buffer_to_buffer(&self.lse, 0, &self.staging, e + r, r);
        encoder.copy_buffer_to_buffer(
            &self.scales,
            0,
            &self.staging,
            e + 2 * r,
            (STATS_LEN * 4) as u64,
        );
        (e + 2 * r) as usize + STATS_LEN * 4
    }
}

/// Free host-call buffer sets, kept for reuse. Only sets up to [`HostPool::MAX_BYTES`] are
/// kept, at most [`HostPool::MAX_SETS`] of them: small calls (where allocation is a large
/// share of the time) reuse, huge ones (where it is not) give their memory back.
#[derive(Default)]
pub(crate) struct HostPool {
    free: Vec<HostBuffers>,
}

impl HostPool {
    const MAX_SETS: usize = 4;
    const MAX_BYTES: u64 = 16 << 20;

    fn take(&mut self, layout: HostLayout) -> Option<HostBuffers> {
        let i = self.free.iter().position(|b| b.layout == layout)?;
        Some(self.free.swap_remove(i))
    }

    fn give(&mut self, bufs: HostBuffers) {
        if bufs.staging.size() <= Self::MAX_BYTES {
            if self.free.len() == Self::MAX_SETS {
                self.free.remove(0);
            }
            self.free.push(bufs);
        }
    }
}

/// A host call's buffer set, returned to the context's pool when dropped.
pub(super) struct Pooled<'a> {
    ctx: &'a Context,
    bufs: Option<HostBuffers>,
}

impl std::ops::Deref for Pooled<'_> {
    type Target = HostBuffers;

    fn deref(&self) -> &HostBuffers {
        // Always `Some` until `drop`.
        self.bufs.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let (Some(bufs), Ok(mut pool)) = (self.bufs.take(), self.ctx.host_pool.lock()) {
            pool.give(bufs);
        }
    }
}
