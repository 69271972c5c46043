// Element storage of row_softmax.wgsl: f16 logits in, f16 output, bound as arrays of
// vec4<f16>, so each block of 4 columns is one 8-byte access; all arithmetic in f32. Needs
// Features::SHADER_F16 (16-bit storage). The f16 twin of io_f32x4.wgsl (read it for the
// layout): blocks are whole vec4s of the binding, the loose columns at the row ends are stored
// through `out_words` (binding 9, the same range as `out`, as scalars). Made in place like
// io_f32.wgsl (then `out_words` views the logits).
//
// Why: the scalar f16 file (io_f16.wgsl) ran at 18% of the copy kernel on lavapipe (8192x1000:
// 19.9 ms, against 9.6 ms for f32 moving twice the bytes): every element was its own access.
enable f16;

@group(0) @binding(1) var<storage, read> logits: array<vec4<f16>>;
@group(0) @binding(6) var<storage, read_write> out: array<vec4<f16>>;
@group(0) @binding(9) var<storage, read_write> out_words: array<f16>;

fn load_logit(i: u32) -> f32 {
    return f32(logits[i / 4u][i % 4u]);
}

fn load_logit4(i: u32) -> vec4<f32> {
    return vec4<f32>(logits[i / 4u]);
}

fn store_out(i: u32, v: f32) {
    out_words[i] = f16(v);
}

fn store_out4(i: u32, v: vec4<f32>) {
    out[i / 4u] = vec4<f16>(v);
}
