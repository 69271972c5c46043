//! The copy kernel (`shaders/copy.wgsl`): the benchmark's speed-of-light reference.

use bytemuck::{Pod, Zeroable};

use super::layouts::whole;
use super::{Binding, ModuleKey, PipelineKey, WORKGROUP_LANES, grid};
use crate::context::Context;
use crate::error::{Error, Result};

/// Bindings of copy.wgsl, by number.
pub const BINDINGS: &[Binding] = &[Binding::Uniform, Binding::Read, Binding::ReadWrite];

/// Lanes' share of the copy: each lane copies about this many units, so the grid stays
/// small enough for one dispatch.
const UNITS_PER_LANE: u64 = 4;

/// `struct Params` of copy.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct Params {
    /// Units to copy.
    pub units: u32,
    /// Padding to 16 bytes.
    pub _pad: [u32; 3],
}

/// f32 elements per unit the kernel moves: 32 bytes of 64-bit words or 16 bytes of 32-bit.
pub fn unit_elements(words64: bool) -> u32 {
    if words64 { 8 } else { 4 }
}

/// Records `dst[i] = src[i]` for `len` f32 elements into `encoder`. The kernel moves whole
/// units (see [`unit_elements`]): four 64-bit words when `words64` (the device must have
/// `Features::SHADER_INT64`), else four 32-bit words; both buffers must hold `len` rounded
/// up to whole units.
pub fn record(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    src: &wgpu::Buffer,
    dst: &wgpu::Buffer,
    len: u32,
    words64: bool,
) -> Result<()> {
    if words64 && !ctx.features.contains(wgpu::Features::SHADER_INT64) {
        return Err(Error::Unsupported {
            adapter: ctx.adapter_info().name.clone(),
            what: "a copy in 64-bit words needs Features::SHADER_INT64".into(),
        });
    }
    let key = PipelineKey::plain(ModuleKey::Copy { words64 }, 0);
    let per_unit = u64::from(unit_elements(words64));
    let units = u64::from(len).div_ceil(per_unit);
    let bytes = units * per_unit * 4;
    if src.size() < bytes || dst.size() < bytes {
        return Err(Error::Validation(format!(
            "copy of {len} elements needs buffers of {bytes} bytes (whole {}-byte units)",
            per_unit * 4
        )));
    }
    let pipeline = ctx.pipeline(key)?;
    let params = ctx.buffer_with(
        "copy params",
        bytemuck::bytes_of(&Params {
            units: units as u32,
            _pad: [0; 3],
        }),
        wgpu::BufferUsages::UNIFORM,
    );
    let bind_group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("copy"),
        layout: ctx.layouts.bind_group_layout(key.module),
        entries: &[whole(0, &params), whole(1, src), whole(2, dst)],
    });
    let lanes = units.div_ceil(UNITS_PER_LANE);
    let (x, y) = grid(lanes.div_ceil(u64::from(WORKGROUP_LANES)))?;
    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: Some("copy"),
        timestamp_writes: None,
    });
    pass.set_pipeline(&pipeline);
    pass.set_bind_group(0, &bind_group, &[]);
    pass.dispatch_workgroups(x, y, 1);
    Ok(())
}
