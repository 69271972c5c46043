//! How the library waits for the GPU, natively and in a browser: the one place where the
//! two differ.
//!
//! The library's waits are async at heart (`Context::new_async`, `read_back_async`, the host
//! calls' `*_async`): nothing in them blocks a thread. The blocking API wraps them:
//! - **native**: [`Context::block_on_gpu`] polls the future and, while it is pending, blocks
//!   in wgpu's `device.poll(Wait)` (bounded by [`ContextOptions::wait_timeout`]) until the GPU
//!   has finished what was submitted; adapter and device requests, and error scopes, whose
//!   futures are ready at once on native backends, go through `pollster`.
//! - **wasm32** (WebGPU in a browser): a page's thread must never block, and the browser
//!   settles buffer mappings, adapter requests and error scopes only between tasks. Blocking
//!   calls therefore give [`Error::Unsupported`] when they would have to wait (use the async
//!   ones); error scopes that sync code pops are kept and settled by the next async call.
//!
//! On native, an async call's future runs a non-blocking `device.poll` each time it is polled
//! while waiting and then wakes itself, so any executor (pollster, tokio, a hand-written loop)
//! drives it to the end without help; it spins a core while the GPU works. The blocking
//! calls do not spin: they wait in `device.poll`, for the submission the future named where
//! it did ([`wait_first_for`]: the host path's pipelined chunks), else for all submitted work.
//!
//! [`ContextOptions::wait_timeout`]: crate::ContextOptions::wait_timeout

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{self, Poll, Waker};

use crate::context::Context;
use crate::error::{Error, Result};

/// Whether one dispatch may bind a buffer twice where one binding writes it (the vector io
/// files' scalar view of the output, kernels::row_softmax). Native backends allow it;
/// WebGPU refuses it ("writable storage buffer binding aliasing"), so in a browser the
/// kernels take the scalar io files.
pub(crate) const WRITABLE_ALIASES: bool = cfg!(not(target_arch = "wasm32"));

/// The boxed future of a popped error scope: what the scope caught.
pub(crate) type ScopeFuture = Pin<Box<dyn Future<Output = Result<()>>>>;

/// Runs a future that needs no GPU work to finish (an adapter or device request) to its end.
/// Native: blocks until it is ready (it is at once on wgpu's native backends). wasm32:
/// [`Error::Unsupported`] unless it is ready at once.
pub(crate) fn block_on<T>(future: impl Future<Output = T>) -> Result<T> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        Ok(pollster::block_on(future))
    }
    #[cfg(target_arch = "wasm32")]
    {
        let mut future = std::pin::pin!(future);
        match future
            .as_mut()
            .poll(&mut task::Context::from_waker(Waker::noop()))
        {
            Poll::Ready(value) => Ok(value),
            Poll::Pending => Err(must_not_block("the browser")),
        }
    }
}

/// The error of a blocking call on the web, where the page's thread may not wait.
#[cfg(target_arch = "wasm32")]
fn must_not_block(adapter: &str) -> Error {
    Error::Unsupported {
        adapter: adapter.to_string(),
        what: "a blocking call in a browser (it would wait for the GPU on the page's thread): \
               use the async API (Context::new_async, cross_entropy_async, \
               cross_entropy_targets_async, softmax_with_async, read_back_async)"
            .into(),
    }
}

impl Context {
    /// The blocking form of one of the library's async GPU waits: polls `future`, and while it
    /// is pending waits in `device.poll` for the GPU to finish what was submitted (native).
    /// An error if the GPU stays idle for `wait_timeout` while no readback completes and the
    /// future still waits (a mapping that never completes), or, on wasm32, as soon as it
    /// would wait.
    pub(crate) fn block_on_gpu<T>(&self, future: impl Future<Output = Result<T>>) -> Result<T> {
        let mut future = std::pin::pin!(future);
        let mut cx = task::Context::from_waker(Waker::noop());
        let (mut idle, mut maps_seen) = (0, MAPS_COMPLETED.load(Ordering::SeqCst));
        // A hint left by an earlier call (one whose readback needed no wait, or an async call
        // driven by another executor) may name another device's submission: only this
        // call's future sets the hint this wait takes.
        WAIT_FIRST_FOR.with(|w| w.set(None));
        loop {
            if let Poll::Ready(value) = future.as_mut().poll(&mut cx) {
                return value;
            }
            let maps = MAPS_COMPLETED.load(Ordering::SeqCst);
            if maps != maps_seen {
                // A readback completed: the call moved on (to its next chunk).
                (idle, maps_seen) = (0, maps);
            }
            self.wait_for_gpu(&mut idle)?;
        }
    }

    /// Blocks until the GPU has finished what was submitted; `idle` counts the waits in a
    /// row (1 ms each) that found nothing to wait for while no readback completed.
    /// Waits for the submission the future named ([`wait_first_for`]) where it did, so that
    /// the work submitted after it keeps the GPU busy meanwhile.
    #[cfg(not(target_arch = "wasm32"))]
    fn wait_for_gpu(&self, idle: &mut u32) -> Result<()> {
        let status = self
            .device
            .poll(wgpu::PollType::Wait {
                submission_index: WAIT_FIRST_FOR.with(std::cell::Cell::take),
                timeout: Some(self.wait_timeout),
            })
            .map_err(|e| Error::Wait(e.to_string()))?;
        if !status.is_queue_empty() {
            *idle = 0;
            return Ok(());
        }
        // The queue is empty but the mapping's callback has not reached this call yet: with
        // several threads on one device, another thread's poll may have taken the callback
        // and not run it yet (seen under load: a few idle polls in a row are not a lost
        // mapping). Wait in 1 ms steps, and give up only after `wait_timeout` of them, as
        // a blocking wait for the callback would.
        *idle += 1;
        self.check_alive()?;
        if u128::from(*idle) > self.wait_timeout.as_millis() {
            return Err(Error::Wait(
                "the GPU is idle but the readback buffer was never mapped".into(),
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
        Ok(())
    }

    /// A browser's page may not block.
    #[cfg(target_arch = "wasm32")]
    fn wait_for_gpu(&self, _idle: &mut u32) -> Result<()> {
        Err(must_not_block(&self.adapter_info().name))
    }

    /// Settles a popped error scope from sync code. Native: now (its future is ready at
    /// once). wasm32: kept, to be settled by the next async call ([`Context::settle_deferred`]),
    /// since the browser answers only after the page's task ends.
    pub(crate) fn settle_scope(&self, scope: ScopeFuture) -> Result<()> {
        #[cfg(not(target_arch = "wasm32"))]
        {
            pollster::block_on(scope)
        }
        #[cfg(target_arch = "wasm32")]
        {
            self.deferred_scopes.keep(scope);
            Ok(())
        }
    }

    /// Awaits the error scopes that sync code popped since the last async call (wasm32; none
    /// on native) and returns the first error they caught.
    pub(crate) async fn settle_deferred(&self) -> Result<()> {
        let mut first = Ok(());
        for scope in self.deferred_scopes.take() {
            let caught = scope.await;
            if first.is_ok() {
                first = caught;
            }
        }
        first
    }
}

/// Error scopes popped by sync code, waiting for the next async call (wasm32 only; always
/// empty on native, where they are settled at once).
#[derive(Default)]
pub(crate) struct DeferredScopes {
    #[cfg(target_arch = "wasm32")]
    scopes: std::cell::RefCell<Vec<ScopeFuture>>,
}

impl DeferredScopes {
    #[cfg(target_arch = "wasm32")]
    fn keep(&self, scope: ScopeFuture) {
        self.scopes.borrow_mut().push(scope);
    }

    fn take(&self) -> Vec<ScopeFuture> {
        #[cfg(target_arch = "wasm32")]
        {
            std::mem::take(&mut *self.scopes.borrow_mut())
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            Vec::new()
        }
    }
}

thread_local! {
    /// The submission whose end the future being driven on this thread waits for next (the
    /// host path's readback of a chunk, while later chunks are submitted): the blocking
    /// wrapper waits for that one instead of for everything submitted. Taken by the wait;
    /// cleared when a blocking call begins, so no other call, on another device, takes it.
    static WAIT_FIRST_FOR: std::cell::Cell<Option<wgpu::SubmissionIndex>> =
        const { std::cell::Cell::new(None) };
}

/// Tells the blocking wrapper, if it drives the caller, that the caller's next wait ends
/// with submission `index` (a hint: a stale one only makes that wait return early).
pub(crate) fn wait_first_for(index: wgpu::SubmissionIndex) {
    WAIT_FIRST_FOR.with(|w| w.set(Some(index)));
}

/// How many buffer mappings of [`map_read`] have completed in this process: the blocking
/// wrapper's sign that a call is making progress.
static MAPS_COMPLETED: AtomicU64 = AtomicU64::new(0);

/// What a buffer mapping's callback sends, and who waits for it.
type MapSlot = Arc<
    Mutex<(
        Option<std::result::Result<(), wgpu::BufferAsyncError>>,
        Option<Waker>,
    )>,
>;

/// Maps `buffer[range]` for reading; the future resolves when the mapping is done (or has
/// failed). It never blocks: see the module docs for who drives it.
pub(crate) fn map_read(
    device: &wgpu::Device,
    buffer: &wgpu::Buffer,
    range: std::ops::Range<u64>,
) -> MapRead {
    map(device, buffer, wgpu::MapMode::Read, range)
}

/// [`map_read`] in either mode (the host path's upload staging maps for writing).
#[cfg_attr(target_arch = "wasm32", allow(unused_variables))]
pub(crate) fn map(
    device: &wgpu::Device,
    buffer: &wgpu::Buffer,
    mode: wgpu::MapMode,
    range: std::ops::Range<u64>,
) -> MapRead {
    let slot: MapSlot = Arc::default();
    let sender = Arc::clone(&slot);
    buffer.map_async(mode, range, move |result| {
        MAPS_COMPLETED.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut s) = sender.lock() {
            s.0 = Some(result);
            if let Some(waker) = s.1.take() {
                waker.wake();
            }
        }
    });
    MapRead {
        slot,
        #[cfg(not(target_arch = "wasm32"))]
        device: device.clone(),
    }
}

/// The future of [`map_read`] and [`map`].
pub(crate) struct MapRead {
    slot: MapSlot,
    /// The device to poll (native; a browser polls its own).
    #[cfg(not(target_arch = "wasm32"))]
    device: wgpu::Device,
}

impl MapRead {
    fn take(
        &self,
        cx: &task::Context<'_>,
    ) -> Option<std::result::Result<(), wgpu::BufferAsyncError>> {
        let mut s = self.slot.lock().ok()?;
        let result = s.0.take();
        if result.is_none() {
            s.1 = Some(cx.waker().clone());
        }
        result
    }
}

impl Future for MapRead {
    type Output = std::result::Result<(), wgpu::BufferAsyncError>;

    fn poll(self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<Self::Output> {
        if let Some(result) = self.take(cx) {
            return Poll::Ready(result);
        }
        // Native: run wgpu's callbacks without blocking, then ask to be polled again. (A
        // browser runs them itself and wakes the waker stored above.)
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = self.device.poll(wgpu::PollType::Poll);
            if let Some(result) = self.take(cx) {
                return Poll::Ready(result);
            }
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }
}
