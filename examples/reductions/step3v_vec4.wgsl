// Step 3v: step 3 with vector loads: each lane reads 4 floats (16 bytes) at a time
// (docs/reductions.md). Needs cols % 4 == 0 (the host checks), so a row is cols / 4 whole
// vec4s and row r's vectors start at r * cols / 4.
//
// Same outputs as step 1. Workgroup r owns row r; lane i reads vectors i, i + 256, ... A
// vector is folded into the lane's (m, d) at once: its max, then one rescale of d, so 4
// columns cost 6 exp instead of 8. The tree and its barriers are step 3's.
struct Params { rows: u32, cols: u32, parts: u32, chunk: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> logits: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> labels: array<i32>;
@group(0) @binding(3) var<storage, read_write> grad: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> loss: array<f32>;

const LANES: u32 = 256u;
var<workgroup> partial: array<vec2<f32>, LANES>; // lane i's (m, d), then the tree's

fn merge(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
    let m = max(a.x, b.x);
    return vec2(m, a.y * exp(a.x - m) + b.y * exp(b.x - m));
}

// (m, d) of one vector: its max, and the sum of its exp(z - max).
fn stats4(z: vec4<f32>) -> vec2<f32> {
    let m = max(max(z.x, z.y), max(z.z, z.w));
    return vec2(m, dot(exp(z - m), vec4(1.0)));
}

@compute @workgroup_size(LANES)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let r = wg.x; // exactly `rows` workgroups: no lane returns early
    let n = params.cols / 4u; // vectors per row
    let base = r * n;
    var md = vec2(-3.402823e38, 0.0); // -f32::MAX stands for -infinity
    for (var k = lane; k < n; k += LANES) {
        md = merge(md, stats4(logits[base + k]));
    }
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
    let row = partial[0];
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
