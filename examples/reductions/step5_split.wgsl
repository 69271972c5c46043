// Step 5: a row split over several workgroups, their partial (m, d) merged (docs/reductions.md).
//
// Same outputs as step 1, vector loads as in step 3v (cols % 4 == 0). Workgroup (g, r) owns
// chunk g of row r, columns g * chunk .. (g + 1) * chunk (the last may be shorter; chunk is a
// multiple of 4; `parts` chunks per row). Two dispatches: `stats` reduces each chunk to its
// (m_g, d_g) and stores it in partials[r * parts + g]; `write_grad` merges a row's partials
// with step 2's rule, (m, d) (+) (m2, d2) = (M, d * exp(m - M) + d2 * exp(m2 - M)), then
// writes its chunk of the gradient (chunk 0 also loss[r]). The boundary between the two
// dispatches is the barrier: every partial is stored before any workgroup reads one.
// Needs from common.wgsl: params, labels, loss, merge, stats4; from tree.wgsl: LANES,
// workgroup_merge (step 3's tree).
@group(0) @binding(1) var<storage, read> logits: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> grad: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> partials: array<vec2<f32>>;

// Vectors [first, end) of row r's chunk g.
fn span(r: u32, g: u32) -> vec2<u32> {
    let n = params.cols / 4u;
    let c = params.chunk / 4u;
    return vec2(r * n + g * c, r * n + min((g + 1u) * c, n));
}

@compute @workgroup_size(LANES)
fn stats(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let s = span(wg.y, wg.x);
    var md = vec2(-3.402823e38, 0.0); // -f32::MAX stands for -infinity
    for (var k = s.x + lane; k < s.y; k += LANES) {
        md = merge(md, stats4(logits[k]));
    }
    let chunk = workgroup_merge(lane, md);
    if lane == 0u {
        partials[wg.y * params.parts + wg.x] = chunk;
    }
}

@compute @workgroup_size(LANES)
fn write_grad(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let r = wg.y;
    var md = vec2(-3.402823e38, 0.0);
    for (var g = lane; g < params.parts; g += LANES) {
        md = merge(md, partials[r * params.parts + g]);
    }
    let row = workgroup_merge(lane, md);
    let s = span(r, wg.x);
    let y = u32(labels[r]);
    let row_start = r * (params.cols / 4u);
    for (var k = s.x + lane; k < s.y; k += LANES) {
        let j = 4u * (k - row_start) + vec4(0u, 1u, 2u, 3u);
        let onehot = select(vec4(0.0), vec4(1.0), j == vec4(y));
        grad[k] = exp(logits[k] - row.x) / row.y - onehot;
    }
    if wg.x == 0u && lane == 0u {
        loss[r] = row.x + log(row.y) - logits[row_start + y / 4u][y % 4u];
    }
}
