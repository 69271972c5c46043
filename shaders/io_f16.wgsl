// Element storage of row_softmax.wgsl: f16 logits in, f16 output; all arithmetic in f32.
// Needs Features::SHADER_F16 (16-bit storage). Made in place like io_f32.wgsl.
enable f16;

@group(0) @binding(1) var<storage, read> logits: array<f16>;
@group(0) @binding(6) var<storage, read_write> out: array<f16>;

fn load_logit(i: u32) -> f32 {
    return f32(logits[i]);
}

fn load_logit4(i: u32) -> vec4<f32> {
    return vec4<f32>(vec4<f16>(logits[i], logits[i + 1u], logits[i + 2u], logits[i + 3u]));
}

fn store_out(i: u32, v: f32) {
    out[i] = f16(v);
}

fn store_out4(i: u32, v: vec4<f32>) {
    let h = vec4<f16>(v);
    out[i] = h.x;
    out[i + 1u] = h.y;
    out[i + 2u] = h.z;
    out[i + 3u] = h.w;
}
