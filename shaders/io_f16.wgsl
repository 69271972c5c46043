// Element storage of row_softmax.wgsl: f16 logits in, f16 output; all arithmetic in f32.
// Needs Features::SHADER_F16 (16-bit storage). In place as io_f32.wgsl.
// Defines: load_logit, load_logit4, store_out, store_out4.
// Needs: `logits: array<f16>`, `store_unit(i, f16)` (generated, src/kernels/source.rs, with
//   `enable f16;`).

fn load_logit(i: u32) -> f32 {
    return f32(logits[i]);
}

fn load_logit4(i: u32) -> vec4<f32> {
    return vec4<f32>(vec4<f16>(logits[i], logits[i + 1u], logits[i + 2u], logits[i + 3u]));
}

fn store_out(i: u32, v: f32) {
    store_unit(i, f16(v));
}

fn store_out4(i: u32, v: vec4<f32>) {
    let h = vec4<f16>(v);
    store_unit(i, h.x);
    store_unit(i + 1u, h.y);
    store_unit(i + 2u, h.z);
    store_unit(i + 3u, h.w);
}
