// The product of linear_xent.wgsl with cooperative matrices (src/linear.rs:
// LinearProduct::CooperativeMatrix; only on a device opened with wgpu's experimental
// EXPERIMENTAL_COOPERATIVE_MATRIX and SUBGROUP features): `tile_product(i0, j0, inv)` is
// thread (tx, ty)'s 4 x 4 block of the 64 x 64 tile out(i0 + i, j0 + j) = sum_k A(i0 + i, k)
// B(k, j0 + j), the same values as linear_tile.wgsl's up to the order of the f32 sums, with
// the 8 x 8 x 8 f32 multiply-adds done by coopMultiplyAdd (Apple's simdgroup matrices,
// VK_KHR_cooperative_matrix). wgpu 30 offers 8 x 8 f32 matrices only.
//
// Ownership: the workgroup (256 threads, as linear_tile.wgsl, so the host's dispatch and
// the epilogue are the same) owns the 64 x 64 tile, kept in workgroup memory (`coop_c`) as
// 8 x 8 sub-tiles. Subgroup s of the workgroup's `ns` owns the sub-tiles s, s + ns, ... (64 / ns
// of them: ns = 256 / subgroup size is a power of two <= 64 because the host takes this path
// only for power-of-two subgroup sizes >= 4, so the 64 sub-tiles split evenly and every
// subgroup runs the same number of cooperative operations). Per step of 8 along k, thread t
// (its local index) stages A(i0 + t / 8 + 32 h, k0 + t % 8) and B(k0 + t / 64 + 4 h, j0 + t % 64)
// (h = 0, 1) as f32 through load_a / load_b (any storage kind), rows and columns past the
// matrices clamped to the last one, elements past k as 0 (as linear_tile.wgsl). At the end
// thread (tx, ty) reads its 4 x 4 outputs back from `coop_c`.
//
// Barriers: workgroupUniformLoad (a barrier) publishes the sub-tile count and the zeroed
// `coop_c`; the first barrier of a step makes the staged blocks visible to every subgroup;
// the second keeps the next step's staging from overwriting them while a subgroup still
// loads, and makes every sub-tile's store visible before the threads read `coop_c` back.
// Cooperative operations must run in uniform control flow: the loops' bounds are uniforms
// (P.k, and the sub-tile count read with workgroupUniformLoad); only the pointers differ
// between subgroups.
//
// Why `coop_c` is in workgroup memory rather than in cooperative-matrix registers: the
// number of sub-tiles per subgroup depends on the subgroup size, known only when the shader
// runs, and WGSL has no arrays of cooperative matrices to hold a variable number. 20 KiB of
// workgroup memory in all (the host checks the device's limit).
//
// Needs from linear_xent.wgsl: `P`, `load_a`, `load_b`. Gives it `Invocation` and
// `tile_product`. Needs naga's `wgpu_cooperative_matrix` extension and the subgroup builtins.

enable wgpu_cooperative_matrix;

struct Invocation {
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) index: u32,
    @builtin(subgroup_id) subgroup: u32,
    @builtin(num_subgroups) subgroups: u32,
}

const COOP_STEP: u32 = 8u;

var<workgroup> coop_a: array<f32, 512>;  // A block [64 rows][8 k], row-major
var<workgroup> coop_b: array<f32, 512>;  // B block [8 k][64 columns], row-major
var<workgroup> coop_c: array<f32, 4096>; // the output tile [64][64], row-major
var<workgroup> coop_rounds: u32;         // sub-tiles per subgroup: 64 / num_subgroups

fn tile_product(i0: u32, j0: u32, inv: Invocation) -> array<vec4<f32>, 4> {
    let tx = inv.index % 16u;
    let ty = inv.index / 16u;
    for (var a = 0u; a < 4u; a++) {
        for (var b = 0u; b < 4u; b++) {
            coop_c[(ty + 16u * a) * 64u + tx + 16u * b] = 0.0;
        }
    }
    if inv.index == 0u {
        coop_rounds = 64u / inv.subgroups;
    }
    let rounds = workgroupUniformLoad(&coop_rounds);

    let t = inv.index;
    let im = max(P.m, 1u) - 1u;
    let jm = max(P.n, 1u) - 1u;
    let a0 = min(i0 + t / 8u, im) * P.a_si;       // coop_a[t]: row t / 8, k t % 8
    let a1 = min(i0 + t / 8u + 32u, im) * P.a_si; // coop_a[t + 256]: row t / 8 + 32
    let b0 = min(j0 + t % 64u, jm) * P.b_sj;      // coop_b[t], coop_b[t + 256]: column t % 64
    for (var k0 = 0u; k0 < P.k; k0 += COOP_STEP) {
        let ka = k0 + t % 8u;
        var x0 = 0.0;
        var x1 = 0.0;
        if ka < P.k {
            x0 = load_a(a0 + ka * P.a_sk);
            x1 = load_a(a1 + ka * P.a_sk);
        }
        coop_a[t] = x0;
        coop_a[t + 256u] = x1;
        let kb = k0 + t / 64u; // and kb + 4 for coop_b[t + 256]
        var y0 = 0.0;
        var y1 = 0.0;
        if kb < P.k {
            y0 = load_b(b0 + kb * P.b_sk);
        }
        if kb + 4u < P.k {
            y1 = load_b(b0 + (kb + 4u) * P.b_sk);
        }
        coop_b[t] = y0;
        coop_b[t + 256u] = y1;
        workgroupBarrier(); // the staged blocks are complete
        for (var r = 0u; r < rounds; r++) {
            let tile = inv.subgroup + r * inv.subgroups; // 0..63: sub-tile row tile / 8, column tile % 8
            let ti = tile / 8u;
            let tj = tile % 8u;
            let at = ti * 512u + tj * 8u;
            let ma = coopLoadT<coop_mat8x8<f32, A>>(&coop_a[ti * 64u], 8u);
            let mb = coopLoadT<coop_mat8x8<f32, B>>(&coop_b[tj * 8u], 64u);
            let mc = coopLoadT<coop_mat8x8<f32, C>>(&coop_c[at], 64u);
            coopStoreT(coopMultiplyAdd(ma, mb, mc), &coop_c[at], 64u);
        }
        workgroupBarrier(); // blocks read and sub-tiles stored before the next step / the read-back
    }

    var acc: array<vec4<f32>, 4>;
    for (var a = 0u; a < 4u; a++) {
        let row = (ty + 16u * a) * 64u + tx;
        acc[a] = vec4<f32>(coop_c[row], coop_c[row + 16u], coop_c[row + 32u], coop_c[row + 48u]);
    }
    return acc;
}
