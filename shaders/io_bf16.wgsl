// Element storage of row_softmax.wgsl: bf16 logits in, bf16 output; all arithmetic in f32.
// The words and the conversions are bf16.wgsl's, which the host puts in front of this file.
// Defines: load_logit, load_logit4, store_out, store_out4.
// Needs: unpack_bf16 / bf16_half (bf16.wgsl); `logits: array<u32>`, `out: array<atomic<u32>>`
//   (generated, src/kernels/source.rs; never in place).
//
// Two lanes can own the two halves of one word (at the end of a row, or where an odd row
// length puts a row boundary inside a word), so the output words are atomics and each half
// is written with atomicAnd (clear it) then atomicOr (set it): the other half is never
// touched, whatever the timing. No in-place variant: the logits would have to be atomics too.
// Used where the buffers cannot be bound as whole vectors (else io_bf16x4.wgsl).

fn load_logit(i: u32) -> f32 {
    return unpack_bf16(logits[i >> 1u])[i & 1u];
}

fn load_logit4(i: u32) -> vec4<f32> {
    return vec4<f32>(load_logit(i), load_logit(i + 1u), load_logit(i + 2u), load_logit(i + 3u));
}

fn store_out(i: u32, v: f32) {
    let half = bf16_half(i, v);
    atomicAnd(&out[i >> 1u], half.x);
    atomicOr(&out[i >> 1u], half.y);
}

fn store_out4(i: u32, v: vec4<f32>) {
    store_out(i, v.x);
    store_out(i + 1u, v.y);
    store_out(i + 2u, v.z);
    store_out(i + 3u, v.w);
}
