// Element storage of row_softmax.wgsl: f32 logits in, a separate f32 output, both bound as
// arrays of vec4<f32>, so a block of 4 columns is one 16-byte load or store.
// The host picks this file only when every row starts at a multiple of 4 elements of its
// binding (the rows have a multiple of 4 columns and the bindings' base offsets are
// multiples of 4), so `load_logit4` / `store_out4` are only called with i % 4 == 0 and no
// row has a scalar tail; `load_logit` / `store_out` (one component of a vec4) stay for the
// shared row code. Otherwise io_f32.wgsl (scalar bindings) is used. Made in place like
// io_f32.wgsl.
//
// Why a second f32 file: on lavapipe every storage access runs a loop over the 8 lanes of
// the SIMD vector; one vec4 access pays that loop once for 4 elements. Measured at 8192x1000
// (subgroup strategy): 16.5 ms with scalar bindings, 12.5 ms with vec4 bindings; and the copy
// kernel went from 13.4 ms to 8.3 ms the same way (copy.wgsl).

@group(0) @binding(1) var<storage, read> logits: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> out: array<vec4<f32>>;

fn load_logit(i: u32) -> f32 {
    return logits[i / 4u][i % 4u];
}

fn load_logit4(i: u32) -> vec4<f32> {
    return logits[i / 4u];
}

fn store_out(i: u32, v: f32) {
    out[i / 4u][i % 4u] = v;
}

fn store_out4(i: u32, v: vec4<f32>) {
    out[i / 4u] = v;
}
