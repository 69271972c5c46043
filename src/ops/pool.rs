//! The device buffers of host calls: sized for one chunk of rows and reused for each chunk,
//! then kept in the context's pool for the next call of the same layout. A call of one chunk
//! has one set; a call of several has two, used in turn, each with its own upload staging
//! (mapped, written in place) and readback staging, so that the host's copies in and out
//! overlap the GPU's work on the other set. Memory: two chunks' worth of logits, output and
//! both stagings (with probability targets, their buffer too), against one set's logits,
//! output and readback staging plus `queue.write_buffer`'s own staging of a chunk before.
//!
//! A call dropped mid-way (its future dropped) can leave a staging buffer mapped or with a
//! mapping pending: the set's guard undoes that ([`HostBuffers::settle`]) before the set goes
//! back to the pool, so the next call finds every buffer usable.

use super::padded;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::batch_sum::STATS_LEN;
use crate::kernels::row_softmax::RowBuffers;
use crate::kernels::{Precision, Slice};
use crate::platform::MapRead;

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
    /// Chunk sets: 1, or 2 for a call of several chunks, which alternates between them so
    /// that one chunk's upload and readback overlap the next one's kernel ([`SETS`]).
    pub(super) sets: usize,
}

/// Chunk sets of a call of several chunks: chunk `k` uses set `k % 2`, so the host writes
/// chunk `k + 1` into one set's upload staging and copies chunk `k - 1` out of the other's
/// readback staging while the GPU runs chunk `k`. Two is enough: the host's two copies run
/// one after the other on one thread, and a third set would only add a chunk of memory.
pub(super) const SETS: usize = 2;

/// Logits bytes of one chunk of a host call larger than this: such a call is cut into
/// chunks of about this size even where the binding limit would take it whole, so that its
/// upload, kernel and readback overlap ([`SETS`]); a call up to this size stays one chunk,
/// one set, no pipeline. It also bounds a pipelined call's buffers (two sets of logits,
/// output, upload and readback staging: 8 chunks' worth, 512 MiB) whatever the adapter's
/// binding limit (2 GiB on the H200, where `demo`'s 4096x32000 host call was one chunk and
/// so not pipelined). Only the reduced loss depends on chunking (it is summed per chunk), by
/// an ulp or so; every element and row output is the same. Why 64 MiB: BENCHMARKS.md,
/// "The host path against the transfer rates".
pub(super) const PIPELINE_CHUNK_BYTES: usize = 64 << 20;

/// Whether a call of several chunks uploads through its own mapped staging buffers
/// (`MAP_WRITE | COPY_SRC`, written in place, then `copy_buffer_to_buffer`) rather than
/// `queue.write_buffer`. Native: yes; the staging is reused chunk after chunk and its
/// mapping for the next chunk is requested as soon as the copy is submitted. In a browser
/// (wasm32) mapped ranges are JavaScript copies and `writeBuffer` is the fast path, so
/// every upload goes through the queue there. The one place where the two differ.
pub(super) const MAPPED_UPLOAD: bool = cfg!(not(target_arch = "wasm32"));

/// The device buffers of one host call, sized for one chunk and reused for each chunk: one
/// [`ChunkBuffers`] per set, and `scales` (stats, loss sum, split partials), which every
/// chunk shares so that the loss is summed chunk after chunk in the order of one queue.
pub(crate) struct HostBuffers {
    layout: HostLayout,
    pub(super) scales: wgpu::Buffer,
    sets: Vec<ChunkBuffers>,
    poison: bool,
}

/// One chunk's buffers: inputs and outputs on the device, and the host-visible staging the
/// chunk is uploaded through (several chunks only) and read back through.
struct ChunkBuffers {
    logits: wgpu::Buffer,
    out: wgpu::Buffer,
    labels: wgpu::Buffer,
    targets: wgpu::Buffer,
    row_loss: wgpu::Buffer,
    lse: wgpu::Buffer,
    /// `MAP_WRITE | COPY_SRC`, the size of `logits` (with [`MAPPED_UPLOAD`] and two sets).
    upload: Option<wgpu::Buffer>,
    upload_state: Mapping,
    /// `MAP_READ | COPY_DST`: the output, then the row losses, lse and stats.
    staging: wgpu::Buffer,
    /// A mapping of `staging` was requested and not yet undone by `unmap`.
    staging_mapped: bool,
}

/// Where a staging buffer's mapping stands.
enum Mapping {
    /// Mapped and writable (created mapped, or its mapping awaited).
    Ready,
    /// A mapping was requested (after the copy that reads the buffer was submitted); the
    /// future to await, or `None` while a call awaits it.
    Pending(Option<MapRead>),
    /// Not mapped: map it before writing.
    Unmapped,
}

impl HostBuffers {
    fn new(ctx: &Context, layout: HostLayout, stats: &[f32; STATS_LEN]) -> Result<Self> {
        let mut init = vec![0.0f32; STATS_LEN + layout.partials];
        init[..STATS_LEN].copy_from_slice(stats);
        Ok(Self {
            layout,
            scales: ctx.scales_buffer(&init),
            sets: (0..layout.sets)
                .map(|_| ChunkBuffers::new(ctx, layout))
                .collect(),
            poison: ctx.poison_outputs,
        })
    }

    /// Writes one chunk of `elems` logits, given as bytes, into set `set` (and, when
    /// poisoning, NaN into its outputs so that an element the kernel fails to write shows
    /// up). Through the set's mapped upload staging where it has one: awaits its mapping
    /// (requested when its previous chunk's copy was submitted), writes the bytes in place
    /// and unmaps it; [`HostBuffers::record_upload`] then records the copy. Else through
    /// the queue.
    pub(super) async fn upload(
        &mut self,
        ctx: &Context,
        set: usize,
        logits: &[u8],
        elems: usize,
    ) -> Result<()> {
        let (poison, layout) = (self.poison, self.layout);
        let bufs = &mut self.sets[set];
        if poison {
            // All-ones bits are a NaN in f32, f16 and bf16 alike.
            let nan = vec![0xffu8; padded(logits.len())];
            ctx.queue.write_buffer(&bufs.out, 0, &nan);
            if layout.per_row {
                let rows = elems / layout.cols;
                let nan = vec![0xffu8; rows * 4];
                ctx.queue.write_buffer(&bufs.row_loss, 0, &nan);
                ctx.queue.write_buffer(&bufs.lse, 0, &nan);
            }
        }
        let Some(upload) = &bufs.upload else {
            ctx.write_words(&bufs.logits, logits);
            return Ok(());
        };
        let len = padded(logits.len());
        // While the mapping is awaited the state says "pending", so that a call dropped
        // here leaves the set to `settle`, which aborts the mapping.
        let pending = match std::mem::replace(&mut bufs.upload_state, Mapping::Pending(None)) {
            Mapping::Ready => None,
            Mapping::Pending(Some(future)) => Some(future),
            Mapping::Pending(None) | Mapping::Unmapped => {
                let range = 0..upload.size();
                Some(crate::platform::map(
                    &ctx.device,
                    upload,
                    wgpu::MapMode::Write,
                    range,
                ))
            }
        };
        if let Some(future) = pending {
            let waited = future.await;
            if let Err(e) = waited {
                // A failed mapping leaves the buffer unmapped.
                bufs.upload_state = Mapping::Unmapped;
                ctx.check_alive()?;
                return Err(Error::Wait(format!("mapping the upload buffer: {e}")));
            }
        }
        // Mapped from here until the unmap below.
        bufs.upload_state = Mapping::Ready;
        {
            let mut view = upload
                .get_mapped_range_mut(0..len as u64)
                .map_err(|e| Error::Wait(format!("writing the mapped buffer: {e}")))?;
            let mut range = view.slice(..);
            range.slice(..logits.len()).copy_from_slice(logits);
            range.slice(logits.len()..).fill(0);
        }
        upload.unmap();
        bufs.upload_state = Mapping::Unmapped;
        Ok(())
    }

    /// Records the copy of an upload staged by [`HostBuffers::upload`] into the logits (none
    /// when it went through the queue).
    pub(super) fn record_upload(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        set: usize,
        bytes: usize,
    ) {
        let bufs = &self.sets[set];
        if let Some(upload) = &bufs.upload {
            encoder.copy_buffer_to_buffer(upload, 0, &bufs.logits, 0, padded(bytes) as u64);
        }
    }

    /// After the submission that reads set `set`'s upload staging: requests its mapping
    /// for the set's next chunk, so that it is ready by the time the host gets there.
    pub(super) fn remap_upload(&mut self, ctx: &Context, set: usize) {
        let bufs = &mut self.sets[set];
        if let Some(upload) = &bufs.upload {
            let range = 0..upload.size();
            let future = crate::platform::map(&ctx.device, upload, wgpu::MapMode::Write, range);
            bufs.upload_state = Mapping::Pending(Some(future));
        }
    }

    pub(super) fn upload_labels(&self, ctx: &Context, set: usize, labels: &[i32]) {
        ctx.queue
            .write_buffer(&self.sets[set].labels, 0, bytemuck::cast_slice(labels));
    }

    pub(super) fn upload_targets(&self, ctx: &Context, set: usize, targets: &[f32]) {
        ctx.queue
            .write_buffer(&self.sets[set].targets, 0, bytemuck::cast_slice(targets));
    }

    pub(super) fn row_buffers<'a>(
        &'a self,
        set: usize,
        elems: usize,
        rows: usize,
        weights: &'a wgpu::Buffer,
    ) -> RowBuffers<'a> {
        let bufs = &self.sets[set];
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
            logits: data(&bufs.logits),
            out: Some(data(&bufs.out)),
            precision: self.layout.precision,
            labels: words(&bufs.labels, rows),
            targets: words(&bufs.targets, targets),
            row_loss: words(&bufs.row_loss, rows),
            lse: words(&bufs.lse, rows),
            weights,
            scales: &self.scales,
        }
    }

    /// Staging layout: the output (padded to whole words), then with per-row outputs the row
    /// losses, lse, stats. Returns the bytes to read back.
    pub(super) fn copy_to_staging(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        set: usize,
        elems: usize,
        rows: usize,
    ) -> usize {
        let bufs = &self.sets[set];
        let e = padded(elems * self.layout.precision.bytes() as usize) as u64;
        let r = (rows * 4) as u64;
        encoder.copy_buffer_to_buffer(&bufs.out, 0, &bufs.staging, 0, e);
        if !self.layout.per_row {
            return e as usize;
        }
        encoder.copy_buffer_to_buffer(&bufs.row_loss, 0, &bufs.staging, e, r);
        encoder.copy_buffer_to_buffer(&bufs.lse, 0, &bufs.staging, e + r, r);
        encoder.copy_buffer_to_buffer(
            &self.scales,
            0,
            &bufs.staging,
            e + 2 * r,
            (STATS_LEN * 4) as u64,
        );
        (e + 2 * r) as usize + STATS_LEN * 4
    }

    /// Maps set `set`'s readback staging (after the submission that fills it) and hands
    /// its first `len` bytes to `take` (which copies them where they belong: one copy out of
    /// the mapping), then unmaps it.
    pub(super) async fn read_back<T>(
        &mut self,
        ctx: &Context,
        set: usize,
        len: usize,
        take: impl FnOnce(&[u8]) -> T,
    ) -> Result<T> {
        let bufs = &mut self.sets[set];
        let bytes = len as u64;
        // Set while a mapping is pending or held, so that a call dropped meanwhile leaves
        // the set to `settle`, which unmaps it.
        bufs.staging_mapped = true;
        let mapped =
            crate::platform::map(&ctx.device, &bufs.staging, wgpu::MapMode::Read, 0..bytes).await;
        if let Err(e) = mapped {
            // A failed mapping leaves the buffer unmapped.
            bufs.staging_mapped = false;
            ctx.check_alive()?;
            return Err(Error::Wait(format!("mapping the readback buffer: {e}")));
        }
        ctx.check_alive()?;
        let out = {
            let view = bufs
                .staging
                .get_mapped_range(0..bytes)
                .map_err(|e| Error::Wait(format!("reading the mapped buffer: {e}")))?;
            take(&view)
        };
        bufs.staging.unmap();
        bufs.staging_mapped = false;
        Ok(out)
    }

    /// Undoes the mappings a call left behind (a future dropped mid-call, or an error
    /// between a mapping and its unmap), so that the set goes back to the pool with every
    /// staging buffer unmapped and no mapping pending: a pending mapping is aborted by
    /// `unmap` (its callback gets an error nobody waits for). Upload staging is left mapped
    /// when ready (the next call writes it at once), else unmapped.
    fn settle(&mut self) {
        for bufs in &mut self.sets {
            if bufs.staging_mapped {
                bufs.staging.unmap();
                bufs.staging_mapped = false;
            }
            if let (Some(upload), Mapping::Pending(_)) = (&bufs.upload, &bufs.upload_state) {
                upload.unmap();
                bufs.upload_state = Mapping::Unmapped;
            }
        }
    }
}

impl ChunkBuffers {
    fn new(ctx: &Context, layout: HostLayout) -> Self {
        use wgpu::BufferUsages as U;
        let elems = (layout.chunk_rows * layout.cols) as u64;
        // Whole 16-byte vectors, so that rows of any length and format take the vector io files.
        let elem_bytes = (elems * layout.precision.bytes()).next_multiple_of(16);
        let rows = if layout.per_row {
            layout.chunk_rows as u64
        } else {
            1
        };
        let buffer = |label, bytes: u64, usage, mapped_at_creation| {
            ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes,
                usage,
                mapped_at_creation,
            })
        };
        let mapped_upload = MAPPED_UPLOAD && layout.sets > 1;
        Self {
            logits: buffer("logits", elem_bytes, U::STORAGE | U::COPY_DST, false),
            out: buffer(
                "out",
                elem_bytes,
                U::STORAGE | U::COPY_SRC | U::COPY_DST,
                false,
            ),
            labels: buffer("labels", rows * 4, U::STORAGE | U::COPY_DST, false),
            targets: buffer(
                "targets",
                if layout.targets { elems * 4 } else { 4 },
                U::STORAGE | U::COPY_DST,
                false,
            ),
            row_loss: buffer(
                "row_loss",
                rows * 4,
                U::STORAGE | U::COPY_SRC | U::COPY_DST,
                false,
            ),
            lse: buffer(
                "lse",
                rows * 4,
                U::STORAGE | U::COPY_SRC | U::COPY_DST,
                false,
            ),
            // Created mapped: the first chunk is written into it at once.
            upload: mapped_upload
                .then(|| buffer("upload", elem_bytes, U::MAP_WRITE | U::COPY_SRC, true)),
            upload_state: Mapping::Ready,
            staging: buffer(
                "staging",
                elem_bytes + (2 * rows + STATS_LEN as u64) * 4,
                U::MAP_READ | U::COPY_DST,
                false,
            ),
            staging_mapped: false,
        }
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
        if bufs.sets[0].staging.size() <= Self::MAX_BYTES {
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

impl std::ops::DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut HostBuffers {
        self.bufs.as_mut().unwrap_or_else(|| unreachable!())
    }
}

impl Drop for Pooled<'_> {
    /// Back to the pool, with the mappings a dropped call left behind undone.
    fn drop(&mut self) {
        if let Some(mut bufs) = self.bufs.take() {
            bufs.settle();
            if let Ok(mut pool) = self.ctx.host_pool.lock() {
                pool.give(bufs);
            }
        }
    }
}
