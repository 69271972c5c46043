// io_f32x8.wgsl for bf16 (read it for the layout): logits and output bound as 16-byte units
// of two 8-byte blocks (a vec2<u64>: 4 words of two bf16 each, low half first: bf16.wgsl in
// front of this file, words64.wgsl, io_half_units.wgsl and io_pairs.wgsl behind it; needs
// Features::SHADER_INT64), for one lane per row on software adapters, so a step of 4 blocks
// is 2 accesses instead of 4. A lone block is stored as its 2 whole words through
// `out_words` (binding 9, atomics as in io_bf16x4.wgsl, whose loose-column stores this file
// shares): the unit's other block may be the next row's. No in-place variant (as
// io_bf16x4.wgsl). `load_logit8` / `store_out8` are io_half_units.wgsl's, as for f16, with
// bf16.wgsl's `unpack_block` / `pack_block` in place of f16.wgsl's.
// Defines: store_out, store_out4 (load_logit8 / store_out8: io_half_units.wgsl; load_logit4 /
//   load_logit: io_pairs.wgsl).
// Needs: bf16_half and pack_block (bf16.wgsl); `out_words: array<atomic<u32>>` (generated,
//   src/kernels/source.rs).

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
