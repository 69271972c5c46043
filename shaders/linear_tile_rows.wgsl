// What the two vec4 products (linear_tile.wgsl, linear_tile_subgroup.wgsl) share: thread
// (tx, ty)'s rows of A and columns of B in the 64 x 64 tile at (i0, j0), one vec4 of A or B
// at a given k, and the 4 x 4 fma step. (linear_tile_coop.wgsl takes none of it.)
//
// Ownership: thread (tx, ty) owns rows ty + 16 a and columns tx + 16 b (a, b = 0..3) of the
// tile; `tile_rows` / `tile_cols` give their element offsets in A and B, clamped to the last
// row and column (those outputs are computed, never written), so only the k bound is checked,
// once per vec4 loaded. No barriers and no workgroup memory here.
//
// Needs from linear_xent.wgsl: `P` (m, n, k and the strides), `load_a`, `load_b`. Gives the
// product files `tile_rows`, `tile_cols`, `load_a4`, `load_b4`, `fma_outer`. Core WGSL only.

// A's offsets of rows i0 + ty + 16 r (r = 0..3), clamped to the last row.
fn tile_rows(i0: u32, ty: u32) -> vec4<u32> {
    let last = max(P.m, 1u) - 1u;
    let rows = min(vec4<u32>(i0 + ty) + vec4<u32>(0u, 16u, 32u, 48u), vec4<u32>(last));
    return rows * P.a_si;
}

// B's offsets of columns j0 + tx + 16 r (r = 0..3), clamped to the last column.
fn tile_cols(j0: u32, tx: u32) -> vec4<u32> {
    let last = max(P.n, 1u) - 1u;
    let cols = min(vec4<u32>(j0 + tx) + vec4<u32>(0u, 16u, 32u, 48u), vec4<u32>(last));
    return cols * P.b_sj;
}

// A(rows, k) for the four rows `tile_rows` gave; 0 past k.
fn load_a4(rows: vec4<u32>, k: u32) -> vec4<f32> {
    if k >= P.k {
        return vec4<f32>(0.0);
    }
    let o = k * P.a_sk;
    return vec4<f32>(load_a(rows.x + o), load_a(rows.y + o), load_a(rows.z + o), load_a(rows.w + o));
}

// B(k, cols) for the four columns `tile_cols` gave; 0 past k.
fn load_b4(cols: vec4<u32>, k: u32) -> vec4<f32> {
    if k >= P.k {
        return vec4<f32>(0.0);
    }
    let o = k * P.b_sk;
    return vec4<f32>(load_b(cols.x + o), load_b(cols.y + o), load_b(cols.z + o), load_b(cols.w + o));
}

// One step along k of the 4 x 4 block: c[a] += A(row a, k) * B(k, columns), with fma.
fn fma_outer(c: array<vec4<f32>, 4>, av: vec4<f32>, bv: vec4<f32>) -> array<vec4<f32>, 4> {
    return array<vec4<f32>, 4>(
        fma(vec4<f32>(av.x), bv, c[0]),
        fma(vec4<f32>(av.y), bv, c[1]),
        fma(vec4<f32>(av.z), bv, c[2]),
        fma(vec4<f32>(av.w), bv, c[3]),
    );
}
