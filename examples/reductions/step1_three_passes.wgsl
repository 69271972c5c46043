// Step 1: one thread per row, three passes over the row (docs/reductions.md).
//
// For row r, with z = logits[r * cols ..][0 .. cols] and label y = labels[r]:
//   m = max_j z_j                     (pass 1)
//   d = sum_j exp(z_j - m)            (pass 2; every term is at most 1, nothing overflows)
//   grad_j = exp(z_j - m) / d - [j == y]   = softmax(z)_j - onehot(y)_j   (pass 3)
//   loss[r] = m + log(d) - z_y        = -log softmax(z)_y
// Passes 1 and 2 are here; pass 3 (the gradient and the loss, from (m, d)) and the thread
// that owns row r are thread_row.wgsl's. The price of one thread per row: it walks the whole
// row three times, and neighbouring threads read addresses `cols` floats apart.
// Needs from thread_row.wgsl: logits (it calls row_stats from its main).
fn row_stats(base: u32, cols: u32) -> vec2<f32> {
    // Pass 1: the row max (-3.4e38 = -f32::MAX stands for -infinity: WGSL has no literal).
    var m = -3.402823e38;
    for (var j = 0u; j < cols; j++) {
        m = max(m, logits[base + j]);
    }
    // Pass 2: the sum of exp(z - m).
    var d = 0.0;
    for (var j = 0u; j < cols; j++) {
        d += exp(logits[base + j] - m);
    }
    return vec2(m, d);
}
