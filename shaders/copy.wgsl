// The speed-of-light reference for the benchmark: out[i] = in[i], one f32 read and one f32
// write per element, the least traffic any softmax or cross-entropy kernel can have.
// Elements move in 16-byte blocks (Block16: words32.wgsl or words64.wgsl, which the host puts
// in front; the same words as the row kernels' io_f32x4.wgsl): on lavapipe a vec4 of 32-bit
// words is 1.6x faster than a scalar copy, and two 64-bit words 1.2-1.6x faster again, so the
// reference is the fastest copy measured.
// Layout: lane g of the grid copies blocks g, g + stride, ... (stride = all lanes of the
// grid), so every lane reads consecutive addresses in step with its neighbours. The host
// binds buffers of a whole number of blocks (`len` rounded up to a multiple of 4).

override WORKGROUP_SIZE: u32 = 256u;

struct Params {
    vectors: u32, // blocks to copy: ceil(len / 4)
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> src: array<Block16>;
@group(0) @binding(2) var<storage, read_write> dst: array<Block16>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn copy_main(@builtin(global_invocation_id) gid: vec3<u32>,
             @builtin(num_workgroups) count: vec3<u32>) {
    let lanes = count.x * count.y * WORKGROUP_SIZE;
    let lane = gid.x + gid.y * count.x * WORKGROUP_SIZE;
    for (var i = lane; i < params.vectors; i += lanes) {
        dst[i] = src[i];
    }
}
