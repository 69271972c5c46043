// Step 2: online softmax, one thread per row (docs/reductions.md).
//
// Same outputs as step 1 (grad = softmax(z) - onehot(y), loss = m + log d - z_y), but the
// max and the sum come from ONE pass: the thread keeps (m, d) = (max so far, sum so far of
// exp(z_j - m)) and, when a larger z arrives, rescales d to the new max:
//   (m, d) + z  ->  (m', d * exp(m - m') + exp(z - m')),   m' = max(m, z).
// This is the merge rule (m, d) (+) (m2, d2) = (M, d * exp(m - M) + d2 * exp(m2 - M)),
// M = max(m, m2), applied to (m2, d2) = (z, 1). It is exact (in real numbers): both sides
// equal sum_j exp(z_j - M). Milakov & Gimelshein, "Online normalizer calculation for
// softmax", 2018. The second pass writes the gradient, as in step 1.
// The thread that owns row r and the second pass are thread_row.wgsl's, as for step 1.
// Needs from thread_row.wgsl: logits (it calls row_stats from its main).
fn row_stats(base: u32, cols: u32) -> vec2<f32> {
    // Pass 1: max and sum together (-3.4e38 = -f32::MAX: exp(-3.4e38 - m) is 0).
    var m = -3.402823e38;
    var d = 0.0;
    for (var j = 0u; j < cols; j++) {
        let z = logits[base + j];
        let m_new = max(m, z);
        d = d * exp(m - m_new) + exp(z - m_new);
        m = m_new;
    }
    return vec2(m, d);
}
