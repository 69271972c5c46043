// Element storage of row_softmax.wgsl: bf16 logits in, bf16 output, a block of 4 columns
// being one 8-byte Block8 (words32.wgsl or words64.wgsl) of two u32 words of two bf16 each,
// low half first (bf16.wgsl in front of this file, the words file behind it); all arithmetic
// in f32. Blocks are whole blocks of the binding
// (the row code aligns them, see io_f32x4.wgsl), so a block's two words belong to one lane
// and are stored plainly. The loose columns at the row ends can share a word with the
// neighbouring row's, which another lane writes, so they go through `out_words` (binding 9,
// the same range as `out`) with atomicAnd / atomicOr on their half (bf16_half), as
// io_bf16.wgsl does for every element. A word is either inside a block or holds no block
// column, so no word is written both ways.
// No in-place variant (the logits would be read while a neighbour's atomics change the
// other half of a loose word).
// Defines: load_logit, load_logit4, store_out, store_out4.
// Needs: Block8 / bits8 / block8 (words32.wgsl or words64.wgsl); unpack_block / pack_block /
//   bf16_half (bf16.wgsl); `logits: array<Block8>`, `out_words: array<atomic<u32>>`,
//   `store_unit(i, Block8)` (generated, src/kernels/source.rs; never in place).
//
// Why: io_bf16.wgsl, two atomics per element, ran at a small fraction of the copy kernel's
// speed on lavapipe (BENCHMARKS.md, "Figures moved from code comments").

fn load_logit(i: u32) -> f32 {
    return load_logit4(i - i % 4u)[i % 4u];
}

fn load_logit4(i: u32) -> vec4<f32> {
    return unpack_block(bits8(logits[i / 4u]));
}

fn store_out(i: u32, v: f32) {
    let half = bf16_half(i, v);
    atomicAnd(&out_words[i >> 1u], half.x);
    atomicOr(&out_words[i >> 1u], half.y);
}

fn store_out4(i: u32, v: vec4<f32>) {
    store_unit(i / 4u, block8(pack_block(v)));
}
