// The units of the half-precision pair files (io_f16x8.wgsl, io_bf16x8.wgsl; read
// io_f32x8.wgsl for the layout): a unit is a vec2<u64>, two blocks of 4 halves, converted by
// the precision's `unpack_block` / `pack_block` (f16.wgsl or bf16.wgsl). The host puts this
// behind either pair file. No barriers, no shared state: each lane reads and writes its own
// units.
// Defines: load_logit8, store_out8.
// Needs: Pair (row_softmax.wgsl); bits16 / block16 (words64.wgsl); unpack_block / pack_block
//   (f16.wgsl or bf16.wgsl); `logits: array<vec2<u64>>`, `store_unit(i, vec2<u64>)`
//   (generated, src/kernels/source.rs).

// The unit at element `i` (a multiple of 8).
fn load_logit8(i: u32) -> Pair {
    let w = bits16(logits[i / 8u]);
    return Pair(unpack_block(w.xy), unpack_block(w.zw));
}

fn store_out8(i: u32, p: Pair) {
    store_unit(i / 8u, block16(vec4<u32>(pack_block(p.a), pack_block(p.b))));
}
