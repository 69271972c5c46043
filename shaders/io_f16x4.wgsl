// Element storage of row_softmax.wgsl: f16 logits in, f16 output, bound as arrays of 8-byte
// blocks (Block8: words32.wgsl or words64.wgsl, put behind, with f16.wgsl), so each block of
// 4 columns is one 8-byte access, converted by f16.wgsl's `unpack_block` / `pack_block`
// (unpack2x16float, or bit operations with F16_BITS); all arithmetic in f32. Needs Features::SHADER_F16 (16-bit storage,
// for the loose columns' `out_words`). The f16 twin of io_f32x4.wgsl (read it for the
// layout): blocks are whole blocks of the binding, the loose columns at the row ends are
// stored through `out_words` (binding 9, the same range as `out`, as scalars). In place
// as io_f32.wgsl (then `out_words` views the logits).
// Defines: load_logit, load_logit4, store_out, store_out4.
// Needs: Block8 / bits8 / block8 (words32.wgsl or words64.wgsl); unpack_block / pack_block
//   (f16.wgsl); `logits: array<Block8>`, `out_words: array<f16>`, `store_unit(i, Block8)`
//   (generated, src/kernels/source.rs, with `enable f16;`).
//
// Why: in the scalar f16 file (io_f16.wgsl) every element is its own access, which llvmpipe
// pays for per access. Why u32 words and unpack2x16float rather than vec4<f16>: on lavapipe
// a block is then one access of 2 components (1 with words64.wgsl) instead of 4, which the
// driver pays for per component. Both measured: BENCHMARKS.md, "Figures moved from code
// comments".

fn load_logit(i: u32) -> f32 {
    return load_logit4(i - i % 4u)[i % 4u];
}

fn load_logit4(i: u32) -> vec4<f32> {
    return unpack_block(bits8(logits[i / 4u]));
}

fn store_out(i: u32, v: f32) {
    out_words[i] = f16(v);
}

fn store_out4(i: u32, v: vec4<f32>) {
    store_unit(i / 4u, block8(pack_block(v)));
}
