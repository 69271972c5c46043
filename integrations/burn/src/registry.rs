//! Which ml-softmax [`Context`] serves which burn wgpu device.
//!
//! burn gives no way back from a device to its `wgpu::Device` and `Queue` once the runtime is
//! up (cubecl keeps them inside its server), so the handles are taken when the device is
//! opened ([`crate::device`]) or registered ([`crate::register`]) and kept here.

use std::sync::{Arc, Mutex};

use burn::backend::wgpu::{WgpuDevice, WgpuSetup};
use ml_softmax::{Context, ContextOptions};

/// What a registered device has: the context on its device and queue, and whether outputs
/// are filled with NaN before the kernel writes them (`ContextOptions::poison_outputs`, for
/// tests: an element the kernel leaves unwritten then fails the comparison).
#[derive(Clone)]
pub(crate) struct Entry {
    pub ctx: Arc<Context>,
    pub poison: bool,
}

static CONTEXTS: Mutex<Vec<(WgpuDevice, Entry)>> = Mutex::new(Vec::new());

/// Wraps the setup's device and queue in a context for `device` (replacing an older one).
pub(crate) fn insert(
    device: WgpuDevice,
    setup: &WgpuSetup,
    options: &ContextOptions,
) -> ml_softmax::Result<()> {
    let ctx = Context::from_device(setup.device.clone(), setup.queue.clone(), options)?;
    let entry = Entry {
        ctx: Arc::new(ctx),
        poison: options.poison_outputs,
    };
    let mut contexts = CONTEXTS.lock().unwrap_or_else(|e| e.into_inner());
    contexts.retain(|(d, _)| *d != device);
    contexts.push((device, entry));
    Ok(())
}

/// What is registered for `device`.
pub(crate) fn get(device: &WgpuDevice) -> Option<Entry> {
    let contexts = CONTEXTS.lock().unwrap_or_else(|e| e.into_inner());
    contexts
        .iter()
        .find(|(d, _)| d == device)
        .map(|(_, entry)| entry.clone())
}
