// Element storage of row_softmax.wgsl for one lane per row (`wg1`) on software adapters: f32
// logits in, a separate f32 output, bound as arrays of 32-byte units of two blocks (4 u64
// words: words64.wgsl's conversions, which the host puts behind this file with
// io_pairs.wgsl; needs Features::SHADER_INT64). PAIRS (io_pairs.wgsl) tells the row code to
// take its blocks two by two: a step of 4 blocks (row_softmax.wgsl, `load_step` /
// `store_step`) is then 2 accesses instead of 4.
// With one lane per row, a lane's blocks are consecutive, and `span_of` starts them at a
// whole unit, so a unit holds two blocks of the same row and is read and written whole by
// its lane. A block that goes alone (the last of an odd count) reads its whole unit and
// keeps its half; it is stored through `out_words` as 4 scalars, as the unit's other half
// may be the next row's, which another lane writes. The loose columns (up to 7 at the head,
// 3 at the tail) go through `out_words` too, as in io_f32x4.wgsl. In place as
// io_f32.wgsl (then `out_words` views the logits; a lone block's read of the next row's half
// may meet that row's lane writing it, and is discarded).
// Defines: load_logit8, store_out8, store_out, store_out4 (load_logit4 / load_logit: io_pairs.wgsl).
// Needs: Pair (row_softmax.wgsl); bits16 / block16 (words64.wgsl); `logits: array<vec4<u64>>`,
//   `out_words: array<f32>`, `store_unit(i, vec4<u64>)` (generated, src/kernels/source.rs).
//
// Why: on lavapipe a storage access costs a loop over the 8 SIMD lanes with a bounds check
// and a load per component; a unit of 4 u64 is one loop of 4 components where two blocks of
// 2 u64 were two (measured with one lane per row: BENCHMARKS.md, "What moved the kernel", the
// row on 32-byte units).

// The unit at element `i` (a multiple of 8).
fn load_logit8(i: u32) -> Pair {
    let u = logits[i / 8u];
    return Pair(bitcast<vec4<f32>>(bits16(u.xy)), bitcast<vec4<f32>>(bits16(u.zw)));
}

fn store_out8(i: u32, p: Pair) {
    store_unit(i / 8u, vec4<u64>(block16(bitcast<vec4<u32>>(p.a)), block16(bitcast<vec4<u32>>(p.b))));
}

fn store_out(i: u32, v: f32) {
    out_words[i] = v;
}

fn store_out4(i: u32, v: vec4<f32>) {
    out_words[i] = v.x;
    out_words[i + 1u] = v.y;
    out_words[i + 2u] = v.z;
    out_words[i + 3u] = v.w;
}
