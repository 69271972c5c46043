// Element storage of row_softmax.wgsl: f32 logits in, f32 output, bound as arrays of 16-byte
// blocks, so each block of 4 columns the row code reads or writes is one 16-byte access.
// Defines: load_logit, load_logit4, store_out, store_out4.
// Needs: Block16 / bits16 / block16 (words32.wgsl or words64.wgsl); `logits: array<Block16>`,
//   `out_words: array<f32>`, `store_unit(i, Block16)` (generated, src/kernels/source.rs).
// The row code aligns its blocks to the binding (row_softmax.wgsl, `Span`), and the host binds
// logits and output at the same offset modulo 4 elements, so `load_logit4` / `store_out4` only
// see i % 4 == 0, whatever the row length.
//
// The loose columns (up to 3 before a row's first block and after its last) share a block
// with the neighbouring row, which another lane writes. WGSL lets a store to one component of
// a vector write the whole vector, so those columns are stored through `out_words`: the same
// buffer and range as `out`, bound a second time (binding 9) as scalars. A block that holds a
// loose column is never stored whole, so the two views never write the same element.
// A load of one column (`load_logit`) reads its whole block, which is only read. In place
// as io_f32.wgsl (then `out_words` views the logits).
//
// Why vectors at all: on lavapipe every storage access runs a loop over the 8 lanes of the
// SIMD vector; one vec4 access pays that loop once for 4 elements (measured, kernel and copy:
// BENCHMARKS.md, "What moved the kernel", the vec4 rows).

fn load_logit(i: u32) -> f32 {
    return load_logit4(i - i % 4u)[i % 4u];
}

fn load_logit4(i: u32) -> vec4<f32> {
    return bitcast<vec4<f32>>(bits16(logits[i / 4u]));
}

fn store_out(i: u32, v: f32) {
    out_words[i] = v;
}

fn store_out4(i: u32, v: vec4<f32>) {
    store_unit(i / 4u, block16(bitcast<vec4<u32>>(v)));
}
