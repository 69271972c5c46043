// Element storage of row_softmax.wgsl: f32 logits in, f32 output, one scalar per access.
// Defines: load_logit, load_logit4, store_out, store_out4.
// Needs: `logits: array<f32>`, `store_unit(i, f32)` (the storage declarations that
//   src/kernels/source.rs generates for the variant).
// The row code reads and writes only through these functions, so other storage formats are
// other io files with the same functions. Every io file writes through `store_unit`, which
// the generated declarations point at `out` or, in place, at `logits` (then read_write): so
// one text serves both. In place is safe without extra barriers: every element is read
// (pass 1, pass 2) and then written (pass 2) by the same lane, and the label's logit is
// captured in pass 1 by its own lane.

fn load_logit(i: u32) -> f32 {
    return logits[i];
}

fn load_logit4(i: u32) -> vec4<f32> {
    return vec4<f32>(logits[i], logits[i + 1u], logits[i + 2u], logits[i + 3u]);
}

fn store_out(i: u32, v: f32) {
    store_unit(i, v);
}

fn store_out4(i: u32, v: vec4<f32>) {
    store_unit(i, v.x);
    store_unit(i + 1u, v.y);
    store_unit(i + 2u, v.z);
    store_unit(i + 3u, v.w);
}
