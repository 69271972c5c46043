// The speed-of-light reference for the benchmark: out[i] = in[i], one f32 read and one f32
// write per element, the least traffic any softmax or cross-entropy kernel can have.
// Elements move as vec4<f32>, the widest access the row kernels use (io_f32x4.wgsl): on
// lavapipe that is 1.6x faster than a scalar copy, so the reference is the fast one.
// Layout: lane g of the grid copies vectors g, g + stride, ... (stride = all lanes of the
// grid), so every lane reads consecutive addresses in step with its neighbours. The host
// binds buffers of a whole number of vectors (`len` rounded up to a multiple of 4).

override WORKGROUP_SIZE: u32 = 256u;

struct Params {
    vectors: u32, // vec4s to copy: ceil(len / 4)
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<f32>>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn copy_main(@builtin(global_invocation_id) gid: vec3<u32>,
             @builtin(num_workgroups) count: vec3<u32>) {
    let lanes = count.x * count.y * WORKGROUP_SIZE;
    let lane = gid.x + gid.y * count.x * WORKGROUP_SIZE;
    for (var i = lane; i < params.vectors; i += lanes) {
        dst[i] = src[i];
    }
}
