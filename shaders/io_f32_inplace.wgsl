// Element storage of row_softmax.wgsl: f32 logits, overwritten by the output (in place).
// Safe without extra barriers: every element is read (pass 1, pass 2) and then written
// (pass 2) by the same lane, and the label's logit is captured in pass 1 by its own lane.
// `out_base` must equal `logits_base`.

@group(0) @binding(1) var<storage, read_write> logits: array<f32>;

fn load_logit(i: u32) -> f32 {
    return logits[i];
}

fn load_logit4(i: u32) -> vec4<f32> {
    return vec4<f32>(logits[i], logits[i + 1u], logits[i + 2u], logits[i + 3u]);
}

fn store_out(i: u32, v: f32) {
    logits[i] = v;
}

fn store_out4(i: u32, v: vec4<f32>) {
    logits[i] = v.x;
    logits[i + 1u] = v.y;
    logits[i + 2u] = v.z;
    logits[i + 3u] = v.w;
}
