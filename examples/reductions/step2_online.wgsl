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
// Who owns what: thread r alone reads row r and writes grad's row r and loss[r]; no barrier.
// Needs from common.wgsl (in front): params, labels, loss.
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(3) var<storage, read_write> grad: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let r = id.x;
    if r >= params.rows {
        return; // the last workgroup may reach past the last row
    }
    let cols = params.cols;
    let base = r * cols;
    // Pass 1: max and sum together (-3.4e38 = -f32::MAX: exp(-3.4e38 - m) is 0).
    var m = -3.402823e38;
    var d = 0.0;
    for (var j = 0u; j < cols; j++) {
        let z = logits[base + j];
        let m_new = max(m, z);
        d = d * exp(m - m_new) + exp(z - m_new);
        m = m_new;
    }
    // Pass 2: the gradient, from the finished (m, d).
    let y = u32(labels[r]);
    for (var j = 0u; j < cols; j++) {
        grad[base + j] = exp(logits[base + j] - m) / d - select(0.0, 1.0, j == y);
    }
    loss[r] = m + log(d) - logits[base + y];
}
