// The product of linear_xent.wgsl with subgroup shuffles (src/linear.rs:
// LinearProduct::Subgroup; software adapters with SUBGROUP, i.e. lavapipe): `tile_product(i0,
// j0, inv)` is thread (tx, ty)'s 4 x 4 block of the 64 x 64 tile out(i0 + i, j0 + j) =
// sum_k A(i0 + i, k) B(k, j0 + j), the same values as linear_tile.wgsl's (same fma order
// along k), read through load_a / load_b (any storage kind).
//
// Ownership: as linear_tile.wgsl, thread (tx, ty) = (index % 16, index / 16) of the 256
// owns rows ty + 16 a and columns tx + 16 b (a, b = 0..3) in four vec4 accumulators. The g =
// min(subgroup size, 16) consecutive lanes of a subgroup that share ty form a group: per step
// of g along k, lane tx % g of the group loads A's four rows at k0 + tx % g once, and every
// lane gets the group's values for each k by subgroupShuffle from lane (first lane of the
// group) + kk; B's four columns at k are read straight from storage by each thread. Rows and
// columns past the matrices are clamped to the last one (computed, never written); elements
// past k are 0. This assumes subgroups of consecutive local invocation indices, aligned to
// their power-of-two size (how lavapipe forms them; the host takes this path only on
// software adapters, and the GPU tests run it at every emulated subgroup size).
//
// Barriers: none, and no workgroup memory: on lavapipe a barrier switches every invocation
// of the workgroup (coroutines), which is what this product avoids; it was measured faster
// at 8-lane subgroups and no slower at 16-64 (BENCHMARKS.md). subgroupShuffle runs in
// control flow uniform within the subgroup (the loop bounds are P.k and the subgroup size).
//
// Needs from linear_xent.wgsl: `P`; from linear_tile_rows.wgsl: `tile_rows`, `tile_cols`,
// `load_a4`, `load_b4`, `fma_outer`. Gives linear_xent.wgsl `Invocation` and `tile_product`.
// Needs the subgroup builtins and subgroupShuffle (Features::SUBGROUP).

struct Invocation {
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) index: u32,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_size) sg_size: u32,
}

fn tile_product(i0: u32, j0: u32, inv: Invocation) -> array<vec4<f32>, 4> {
    let tx = inv.index % 16u;
    let ty = inv.index / 16u;
    let g = min(inv.sg_size, 16u);
    let lane0 = inv.lane - tx % g;
    let a = tile_rows(i0, ty);
    let b = tile_cols(j0, tx);
    var c = array<vec4<f32>, 4>();
    for (var k0 = 0u; k0 < P.k; k0 += g) {
        let va = load_a4(a, k0 + tx % g);
        for (var kk = 0u; kk < g; kk++) {
            let av = subgroupShuffle(va, lane0 + kk);
            c = fma_outer(c, av, load_b4(b, k0 + kk));
        }
    }
    return c;
}
