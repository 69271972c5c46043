// Step 3v: step 3 with vector loads: each lane reads 4 floats (16 bytes) at a time
// (docs/reductions.md). Needs cols % 4 == 0 (the host checks), so a row is cols / 4 whole
// vec4s and row r's vectors start at r * cols / 4.
//
// Same outputs as step 1. Workgroup r owns row r; lane i reads vectors i, i + 256, ... A
// vector is folded into the lane's (m, d) at once: its max, then one rescale of d, so 4
// columns cost 6 exp instead of 8. The tree and its barriers are step 3's.
// Needs from common.wgsl: params, labels, loss, merge, stats4; from tree.wgsl: LANES,
// workgroup_merge.
@group(0) @binding(1) var<storage, read> logits: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> grad: array<vec4<f32>>;

@compute @workgroup_size(LANES)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let r = wg.x; // exactly `rows` workgroups: no lane returns early
    let n = params.cols / 4u; // vectors per row
    let base = r * n;
    var md = vec2(-3.402823e38, 0.0); // -f32::MAX stands for -infinity
    for (var k = lane; k < n; k += LANES) {
        md = merge(md, stats4(logits[base + k]));
    }
    let row = workgroup_merge(lane, md);
    let y = u32(labels[r]);
    for (var k = lane; k < n; k += LANES) {
        let j = 4u * k + vec4(0u, 1u, 2u, 3u); // the vector's 4 column numbers
        let onehot = select(vec4(0.0), vec4(1.0), j == vec4(y));
        grad[base + k] = exp(logits[base + k] - row.x) / row.y - onehot;
    }
    if lane == 0u {
        let zy = logits[base + y / 4u][y % 4u];
        loss[r] = row.x + log(row.y) - zy;
    }
}
