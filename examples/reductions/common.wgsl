// common.wgsl: what every step of docs/reductions.md shares; the host (steps.rs) puts it in
// front of each step file. Defines: `Params` and the bindings every step reads or writes but
// logits and grad (whose element type, f32 or vec4<f32>, is the step's own): params,
// labels, loss; `merge` (step 2's rule, on (m, d) pairs) and `stats4` (step 3v's (m, d) of
// one vector). Needs nothing.
struct Params { rows: u32, cols: u32, parts: u32, chunk: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> labels: array<i32>;
@group(0) @binding(4) var<storage, read_write> loss: array<f32>;

// (m, d) (+) (m2, d2) = (M, d * exp(m - M) + d2 * exp(m2 - M)),   M = max(m, m2).
fn merge(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
    let m = max(a.x, b.x);
    return vec2(m, a.y * exp(a.x - m) + b.y * exp(b.x - m));
}

// (m, d) of one vector: its max, and the sum of its exp(z - max).
fn stats4(z: vec4<f32>) -> vec2<f32> {
    let m = max(max(z.x, z.y), max(z.z, z.w));
    return vec2(m, dot(exp(z - m), vec4(1.0)));
}
