// io_f32x8.wgsl for bf16 (read it for the layout): logits and output bound as 16-byte units
// of two 8-byte blocks (a vec2<u64>: 4 words of two bf16 each, low half first: bf16.wgsl in
// front of this file, words64.wgsl and io_pairs.wgsl behind it; needs
// Features::SHADER_INT64), for one lane per row on software adapters, so a step of 4 blocks
// is 2 accesses instead of 4. A lone block is stored as its 2 whole words through
// `out_words` (binding 9, atomics as in io_bf16x4.wgsl, whose loose-column stores this file
// shares): the unit's other block may be the next row's. No in-place variant (as
// io_bf16x4.wgsl). `load_logit8` / `store_out8` are io_f16x8.wgsl's, with bf16.wgsl's
// `unpack_block` / `pack_block` in place of f16.wgsl's.
// Defines: load_logit8, store_out8, store_out, store_out4 (load_logit4 / load_logit: io_pairs.wgsl).
// Needs: Pair (row_softmax.wgsl); bits16 / block16 (words64.wgsl); bf16_half and the bf16 packing
//   (bf16.wgsl); `logits: array<vec2<u64>>`, `out_words: array<atomic<u32>>`,
//   `store_unit(i, vec2<u64>)` (generated, src/kernels/source.rs).

// The unit at element `i` (a multiple of 8).
fn load_logit8(i: u32) -> Pair {
    let w = bits16(logits[i / 8u]);
    return Pair(unpack_block(w.xy), unpack_block(w.zw));
}

fn store_out8(i: u32, p: Pair) {
    store_unit(i / 8u, block16(vec4<u32>(pack_block(p.a), pack_block(p.b))));
}

fn store_out(i: u32, v: f32) {
    let half = bf16_half(i, v);
    atomicAnd(&out_words[i >> 1u], half.x);
    atomicOr(&out_words[i >> 1u], half.y);
}

fn store_out4(i: u32, v: vec4<f32>) {
    let w = pack_block(v);
    atomicStore(&out_words[i >> 1u], w.x);
    atomicStore(&out_words[(i >> 1u) + 1u], w.y);
}
