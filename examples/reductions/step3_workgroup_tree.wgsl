// Step 3: a workgroup of 256 threads per row, a tree reduction in workgroup memory
// (docs/reductions.md).
//
// Same outputs as step 1. Workgroup r owns row r. Lane i reads columns i, i + 256, i + 512,
// ...: at each turn the 256 lanes read 256 neighbouring floats (coalesced), and each keeps
// its own online (m, d) (step 2). Then the 256 pairs are merged pairwise, 8 rounds of a tree
// in workgroup memory, with the merge rule of step 2:
//   (m, d) (+) (m2, d2) = (M, d * exp(m - M) + d2 * exp(m2 - M)),   M = max(m, m2).
// Every lane then writes its columns of the gradient from the row's (m, d).
// Needs from common.wgsl: params, labels, loss, merge; from tree.wgsl: LANES,
// workgroup_merge (the tree, with its barriers).
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(3) var<storage, read_write> grad: array<f32>;

@compute @workgroup_size(LANES)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let r = wg.x; // the host dispatches exactly `rows` workgroups: no lane returns early
    let cols = params.cols;
    let base = r * cols;
    // This lane's (m, d) over its columns (-3.4e38 = -f32::MAX stands for -infinity).
    var md = vec2(-3.402823e38, 0.0);
    for (var j = lane; j < cols; j += LANES) {
        md = merge(md, vec2(logits[base + j], 1.0));
    }
    let row = workgroup_merge(lane, md); // (max, sum of exp(z - max)) of the whole row
    let y = u32(labels[r]);
    for (var j = lane; j < cols; j += LANES) {
        grad[base + j] = exp(logits[base + j] - row.x) / row.y - select(0.0, 1.0, j == y);
    }
    if lane == 0u {
        loss[r] = row.x + log(row.y) - logits[base + y];
    }
}
