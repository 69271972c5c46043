// Element storage of row_softmax.wgsl: f32 logits in, a separate f32 output.
// The row code reads and writes only through these functions, so other storage formats are
// other io files with the same functions. The in-place variant is made from this text by the
// host (src/kernels/mod.rs, `in_place`): `logits` becomes read_write, the `out` binding goes
// and the stores write `logits`. That is safe without extra barriers: every element is read
// (pass 1, pass 2) and then written (pass 2) by the same lane, and the label's logit is
// captured in pass 1 by its own lane.

@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;

fn load_logit(i: u32) -> f32 {
    return logits[i];
}

fn load_logit4(i: u32) -> vec4<f32> {
    return vec4<f32>(logits[i], logits[i + 1u], logits[i + 2u], logits[i + 3u]);
}

fn store_out(i: u32, v: f32) {
    out[i] = v;
}

fn store_out4(i: u32, v: vec4<f32>) {
    out[i] = v.x;
    out[i + 1u] = v.y;
    out[i + 2u] = v.z;
    out[i + 3u] = v.w;
}
