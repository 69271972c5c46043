// thread_row.wgsl: the frame of the thread-per-row steps (1 and 2); the host puts it after
// common.wgsl, the step's file after it. Thread r owns row r: it alone reads row r and
// writes grad's row r and loss[r], so no thread waits for another and there is no barrier.
// Defines: the f32 bindings logits and grad, the entry point `main`, which takes the row's
// (m, d) from the step's `row_stats` and writes the gradient and the loss from it.
// Needs from common.wgsl: params, labels, loss; from the step's file:
//   fn row_stats(base: u32, cols: u32) -> vec2<f32>   (m, d) of logits[base .. base + cols]
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
    let md = row_stats(base, cols);
    let m = md.x;
    let d = md.y;
    // The last pass: the probabilities, minus the one-hot label.
    let y = u32(labels[r]);
    for (var j = 0u; j < cols; j++) {
        grad[base + j] = exp(logits[base + j] - m) / d - select(0.0, 1.0, j == y);
    }
    loss[r] = m + log(d) - logits[base + y];
}
