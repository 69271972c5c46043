// The product of linear_xent.wgsl on every adapter (src/linear.rs: LinearProduct::Tiled):
// `tile_product(i0, j0, inv)` is thread (tx, ty)'s 4 x 4 block of the 64 x 64 tile
// out(i0 + i, j0 + j) = sum_k A(i0 + i, k) B(k, j0 + j), with A, B strided as `Params` says
// and read through load_a / load_b (any storage kind), in f32 with fma.
//
// Ownership: a workgroup of 256 threads owns the 64 x 64 tile; thread (tx, ty) = (index %
// 16, index / 16) owns rows
// ty + 16 a and columns tx + 16 b (a, b = 0..3), held in four vec4 accumulators. Per step of
// 16 along k, every thread stages one vec4 of A (column k0 + tx of its rows ty + 16 r) and
// one of B (row k0 + ty of its columns tx + 16 r) in workgroup memory, so the inner loop
// reads two vec4s and does four vec4 fmas per k. Rows and columns past the matrices are
// clamped to the last one (computed, never written); elements past k load as 0. (The earlier
// layout, scalar tiles read into private arrays with a bounds check per staged element, ran
// 1.4x slower on lavapipe; see BENCHMARKS.md.)
//
// Barriers: the first in each step makes the staged tiles visible to every thread; the
// second keeps the next step's staging from overwriting them while a thread still reads.
// Both are in uniform control flow (the loop bound P.k is a uniform).
//
// Needs from linear_xent.wgsl: `P` (m, n, k and the strides), `load_a`, `load_b`. Gives it
// `Invocation` (the entry points' builtins) and `tile_product`. Core WGSL only.

struct Invocation {
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) index: u32,
}

const STEP: u32 = 16u;

// Staged tiles, one vec4 per thread and k: tile_a[kk][ty] holds A's rows ty + 16 r (r = 0..3)
// at column k0 + kk, tile_b[kk][tx] holds B's columns tx + 16 r at row k0 + kk, so the inner
// loop reads two vec4s per k and does four vec4 fmas.
var<workgroup> tile_a: array<array<vec4<f32>, 16>, 16>;
var<workgroup> tile_b: array<array<vec4<f32>, 16>, 16>;

// The 4 x 4 outputs of thread (tx, ty) of the tile at (i0, j0): acc[a][b] = out(i0 + ty + 16a, j0 + tx + 16b).
// Rows and columns past the matrices are clamped to the last one (their outputs are computed
// but never written), so only the k bound is checked, once per staged element.
fn tile_product(i0: u32, j0: u32, inv: Invocation) -> array<vec4<f32>, 4> {
    let tx = inv.index % 16u;
    let ty = inv.index / 16u;
    var c0 = vec4<f32>(0.0);
    var c1 = vec4<f32>(0.0);
    var c2 = vec4<f32>(0.0);
    var c3 = vec4<f32>(0.0);
    let im = max(P.m, 1u) - 1u;
    let jm = max(P.n, 1u) - 1u;
    let a0 = min(i0 + ty, im) * P.a_si;
    let a1 = min(i0 + ty + 16u, im) * P.a_si;
    let a2 = min(i0 + ty + 32u, im) * P.a_si;
    let a3 = min(i0 + ty + 48u, im) * P.a_si;
    let b0 = min(j0 + tx, jm) * P.b_sj;
    let b1 = min(j0 + tx + 16u, jm) * P.b_sj;
    let b2 = min(j0 + tx + 32u, jm) * P.b_sj;
    let b3 = min(j0 + tx + 48u, jm) * P.b_sj;
    for (var k0 = 0u; k0 < P.k; k0 += STEP) {
        // Thread (tx, ty) stages column k0 + tx of A's rows ty + 16 r, and row k0 + ty of
        // B's columns tx + 16 r; past k they are 0.
        let ka = k0 + tx;
        var va = vec4<f32>(0.0);
        if ka < P.k {
            let o = ka * P.a_sk;
            va = vec4<f32>(load_a(a0 + o), load_a(a1 + o), load_a(a2 + o), load_a(a3 + o));
        }
        tile_a[tx][ty] = va;
        let kb = k0 + ty;
        var vb = vec4<f32>(0.0);
        if kb < P.k {
            let o = kb * P.b_sk;
            vb = vec4<f32>(load_b(b0 + o), load_b(b1 + o), load_b(b2 + o), load_b(b3 + o));
        }
        tile_b[ty][tx] = vb;
        workgroupBarrier(); // the staged tiles are complete
        for (var kk = 0u; kk < STEP; kk++) {
            let av = tile_a[kk][ty];
            let bv = tile_b[kk][tx];
            c0 = fma(vec4<f32>(av.x), bv, c0);
            c1 = fma(vec4<f32>(av.y), bv, c1);
            c2 = fma(vec4<f32>(av.z), bv, c2);
            c3 = fma(vec4<f32>(av.w), bv, c3);
        }
        workgroupBarrier(); // every thread has read the tiles before the next step overwrites them
    }
    return array<vec4<f32>, 4>(c0, c1, c2, c3);
}
