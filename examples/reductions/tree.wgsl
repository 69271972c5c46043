// tree.wgsl: step 3's tree reduction in workgroup memory, for the workgroup steps (3, 3v,
// 5); the host puts it after common.wgsl. Defines: LANES (256 lanes per workgroup),
// `workgroup_merge`. Needs from common.wgsl: `merge`.
const LANES: u32 = 256u;
var<workgroup> partial: array<vec2<f32>, LANES>; // lane i's (m, d), then the tree's

// Merges the workgroup's 256 pairs, 8 rounds of a tree; every lane gets the result. Every
// lane must call it (uniform control flow: a barrier waits for all of them).
fn workgroup_merge(lane: u32, md: vec2<f32>) -> vec2<f32> {
    partial[lane] = md;
    // Protects: every lane's (m, d) is in `partial` before any lane reads another's.
    workgroupBarrier();
    for (var half = LANES / 2u; half > 0u; half /= 2u) {
        if lane < half {
            partial[lane] = merge(partial[lane], partial[lane + half]);
        }
        // Protects: this round's merges are written before the next round reads them, and
        // read before the next round overwrites them.
        workgroupBarrier();
    }
    let result = partial[0]; // (max, sum of exp(z - max)) of all 256 lanes' columns
    // Protects: every lane has read the result before any lane can store again (so that a
    // kernel may call it more than once).
    workgroupBarrier();
    return result;
}
