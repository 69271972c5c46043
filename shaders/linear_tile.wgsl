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
// Needs from linear_xent.wgsl: `P` (m, n, k and the strides); from linear_tile_rows.wgsl:
// `tile_rows`, `tile_cols`, `load_a4`, `load_b4` (which read through linear_xent.wgsl's
// `load_a`, `load_b`) and `fma_outer`. Gives linear_xent.wgsl `Invocation` (the entry
// points' builtins) and `tile_product`. Core WGSL only.

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
    let a = tile_rows(i0, ty);
    let b = tile_cols(j0, tx);
    var c = array<vec4<f32>, 4>();
    for (var k0 = 0u; k0 < P.k; k0 += STEP) {
        // Thread (tx, ty) stages column k0 + tx of A's rows ty + 16 r, and row k0 + ty of
        // B's columns tx + 16 r; past k they are 0.
        tile_a[tx][ty] = load_a4(a, k0 + tx);
        tile_b[ty][tx] = load_b4(b, k0 + ty);
        workgroupBarrier(); // the staged tiles are complete
        for (var kk = 0u; kk < STEP; kk++) {
            c = fma_outer(c, tile_a[kk][ty], tile_b[kk][tx]);
        }
        workgroupBarrier(); // every thread has read the tiles before the next step overwrites them
    }
    return c;
}
