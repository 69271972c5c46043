// Step 4: one subgroup per row, the reduction in registers (docs/reductions.md).
//
// Same outputs as step 1, vector loads as in step 3v (cols % 4 == 0). A subgroup is the
// group of lanes the hardware runs in lockstep (4 to 64 of them, set by the GPU; lavapipe:
// 8 by default). subgroupMax / subgroupAdd combine a value across them without workgroup
// memory and without a barrier. The workgroup is ONE subgroup: the host sets SG to the
// adapter's subgroup size, and only where that size is fixed and is the size run
// (ml_softmax::Context::subgroup_size; see context::usable_subgroup_size). Where there are
// no subgroups (llvmpipe GL, some DX12 and GL drivers) this step cannot run: the workgroup
// tree of step 3 serves there.
//
// Workgroup r owns row r; lane i reads vectors i, i + SG, ... and keeps its (m, d). Then:
//   M = subgroupMax(m);  D = subgroupAdd(d * exp(m - M))   (step 2's merge, all lanes at once)
// Needs from common.wgsl: params, labels, loss, merge, stats4.
@group(0) @binding(1) var<storage, read> logits: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> grad: array<vec4<f32>>;

override SG: u32 = 32u; // lanes per workgroup = the subgroup size (set by the host)

@compute @workgroup_size(SG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(subgroup_invocation_id) lane: u32) {
    let r = wg.x; // exactly `rows` workgroups; every lane stays active for the subgroup ops
    let n = params.cols / 4u;
    let base = r * n;
    var md = vec2(-3.402823e38, 0.0); // -f32::MAX stands for -infinity
    for (var k = lane; k < n; k += SG) {
        md = merge(md, stats4(logits[base + k]));
    }
    let m = subgroupMax(md.x);
    let d = subgroupAdd(md.y * exp(md.x - m));
    let y = u32(labels[r]);
    for (var k = lane; k < n; k += SG) {
        let j = 4u * k + vec4(0u, 1u, 2u, 3u);
        let onehot = select(vec4(0.0), vec4(1.0), j == vec4(y));
        grad[base + k] = exp(logits[base + k] - m) / d - onehot;
    }
    if lane == 0u {
        loss[r] = m + log(d) - logits[base + y / 4u][y % 4u];
    }
}
