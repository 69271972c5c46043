// The speed-of-light reference for the benchmark: out[i] = in[i], one f32 read and one f32
// write per element, the least traffic any softmax or cross-entropy kernel can have.
// Elements move in units of the widest access the row kernels make, `Unit`, which the host
// defines in front of this file: 16 bytes as vec4<u32> (io_f32x4.wgsl with words32.wgsl), or
// where the kernels use 64-bit words (software adapters), 32 bytes as vec4<u64>
// (io_f32x8.wgsl). Wider units copied faster on lavapipe, and the 32-byte unit was the fastest
// copy measured, so the reference is never a slow copy (figures: BENCHMARKS.md, "Figures
// moved from code comments").
// Layout: lane g of the grid copies units g, g + stride, ... (stride = all lanes of the
// grid), so every lane reads consecutive addresses in step with its neighbours. The host
// binds buffers of a whole number of units (`len` rounded up).

override WORKGROUP_SIZE: u32 = 256u;

struct Params {
    units: u32, // units to copy: ceil(len / elements per unit)
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> src: array<Unit>;
@group(0) @binding(2) var<storage, read_write> dst: array<Unit>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn copy_main(@builtin(global_invocation_id) gid: vec3<u32>,
             @builtin(num_workgroups) count: vec3<u32>) {
    let lanes = count.x * count.y * WORKGROUP_SIZE;
    let lane = gid.x + gid.y * count.x * WORKGROUP_SIZE;
    for (var i = lane; i < params.units; i += lanes) {
        dst[i] = src[i];
    }
}
