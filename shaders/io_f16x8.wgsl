// io_f32x8.wgsl for f16 (read it for the layout): logits and output bound as 16-byte units
// of two 8-byte blocks (a vec2<u64>: 4 words of two halves each; words64.wgsl, f16.wgsl,
// io_half_units.wgsl and io_pairs.wgsl behind this file; needs Features::SHADER_INT64 and
// SHADER_F16), for one lane per row on software adapters, so a step of 4 blocks is 2
// accesses instead of 4. Halves are converted by f16.wgsl's `unpack_block` / `pack_block`,
// as in io_f16x4.wgsl. A lone block and the loose columns are stored through `out_words`
// (binding 9, as scalars): the unit's other block may be the next row's. In place as
// io_f32.wgsl.
// Defines: store_out, store_out4 (load_logit8 / store_out8: io_half_units.wgsl; load_logit4 /
//   load_logit: io_pairs.wgsl).
// Needs: `out_words: array<f16>` (generated, src/kernels/source.rs).

fn store_out(i: u32, v: f32) {
    out_words[i] = f16(v);
}

fn store_out4(i: u32, v: vec4<f32>) {
    out_words[i] = f16(v.x);
    out_words[i + 1u] = f16(v.y);
    out_words[i + 2u] = f16(v.z);
    out_words[i + 3u] = f16(v.w);
}
