// Step 1: one thread per row, three passes over the row (docs/reductions.md).
//
// For row r, with z = logits[r * cols ..][0 .. cols] and label y = labels[r]:
//   m = max_j z_j                     (pass 1)
//   d = sum_j exp(z_j - m)            (pass 2; every term is at most 1, nothing overflows)
//   grad_j = exp(z_j - m) / d - [j == y]   = softmax(z)_j - onehot(y)_j   (pass 3)
//   loss[r] = m + log(d) - z_y        = -log softmax(z)_y
// Who owns what: thread r alone reads row r and writes grad's row r and loss[r], so no
// thread waits for another and there is no barrier. The price: one thread walks the whole
// row three times, and neighbouring threads read addresses `cols` floats apart.
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
    // Pass 3: the probabilities, minus the one-hot label.
    let y = u32(labels[r]);
    for (var j = 0u; j < cols; j++) {
        grad[base + j] = exp(logits[base + j] - m) / d - select(0.0, 1.0, j == y);
    }
    loss[r] = m + log(d) - logits[base + y];
}
