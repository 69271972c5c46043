// Fused linear + cross-entropy (src/linear.rs): the loss and the gradients of
// `z = hidden @ classifier^T + bias` without the [rows, vocab] logits ever existing whole.
// The host walks the vocabulary in blocks of `vb` columns and the rows in chunks of `nc`; one
// block of one chunk lives in `out` (scratch, [nc, vb] f32), so device memory beyond inputs
// and outputs is bounded by the block size, not by the vocabulary.
//
// Entry points, in the order the host dispatches them per block:
// - block_logits: the [nc, vb] block of z' = softcap(H C^T + b) (mode 0), or of the gradient
//   dL/dz (mode 1): g = (k_r * p - [j = y] * a_r - e_r * w_j) * softcap'(z), with
//   p = exp(z' - lse_r) and the per-row constants (lse_r, k_r, a_r, e_r) the host derived
//   from block_stats' sums (see src/linear.rs: row_coefficients). Ignored rows (label < 0) get 0.
// - block_stats: merges one block into each row's running (max m, sum-exp s, z'_y, sum w_j z'_j),
//   rescaling to the larger max as `merge` in row_softmax.wgsl does. One thread owns one row
//   and walks its block in column order, blocks in vocabulary order: bit-reproducible.
// - matmul: out = [out +] A B for strided A (m x k) and B (k x n): the two gradient products
//   d_hidden += G C_block and d_classifier_block [+]= G^T H_chunk, accumulated in a fixed
//   order (blocks, then chunks) so results are bit-reproducible.
// - bias_grad: d_bias_block [+]= column sums of G, one thread per column, rows in order.
//
// Matmul tiling (block_logits and matmul): a workgroup of 16 x 16 threads owns a 64 x 64 output
// tile, each thread 4 x 4 outputs (rows ty + 16 a, columns tx + 16 b) held in four vec4
// accumulators. Per step of 16 along k, the workgroup stages A and B in workgroup memory as one
// vec4 per thread and k (A's rows ty + 16 a, B's columns tx + 16 b), so the inner loop reads
// two vec4s and does four vec4 fmas per k; the first barrier makes the staged tiles visible,
// the second keeps the next step from overwriting them while a thread still reads. Rows and
// columns past the matrices are clamped to the last one (computed, never written); elements
// past k load as 0. (The earlier layout, scalar tiles read into private arrays with a bounds
// check per staged element, ran 1.4x slower on lavapipe; see BENCHMARKS.md.)
//
// Storage formats: A and B are u32 words holding f32 (kind 0), f16 pairs (kind 1, unpacked
// with unpack2x16float, which needs no SHADER_F16) or bf16 pairs (kind 2, see bf16.wgsl);
// element i of a pair buffer is the low half of word i / 2 when i is even. Everything else is
// f32, and all arithmetic is f32. Needs nothing from other files.

// Storage format of A (binding 1) and B (binding 2): 0 f32, 1 f16, 2 bf16.
override A_KIND: u32 = 0u;
override B_KIND: u32 = 0u;

struct Params {
    m: u32,          // output rows (block_logits: chunk rows nc)
    n: u32,          // output columns (block_logits: block width vb)
    k: u32,          // reduction length
    a_si: u32,       // A(i, k) is element i * a_si + k * a_sk of binding 1
    a_sk: u32,
    b_sk: u32,       // B(k, j) is element k * b_sk + j * b_sj of binding 2
    b_sj: u32,
    ldo: u32,        // out(i, j) is element i * ldo + j of binding 7
    accumulate: u32, // matmul, bias_grad: 1 adds to out, 0 overwrites it; block_stats: 0 starts the rows' sums
    v0: u32,         // first vocabulary column of the block (labels are global columns)
    mode: u32,       // block_logits: 0 writes z', 1 writes the gradient
    has_bias: u32,   // block_logits: add bias[j]
    softcap: f32,    // c > 0 caps z' = c tanh(z / c); 0 = off
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> a_words: array<u32>;      // A, A_KIND
@group(0) @binding(2) var<storage, read> b_words: array<u32>;      // B, B_KIND
@group(0) @binding(3) var<storage, read> bias: array<f32>;         // [vb] this block's bias
@group(0) @binding(4) var<storage, read> weight: array<f32>;       // [vb] this block's class weights
@group(0) @binding(5) var<storage, read> labels: array<i32>;       // [nc] block-independent: global column, -1 = ignored
@group(0) @binding(6) var<storage, read> rowinfo: array<vec4<f32>>; // [nc] (lse, k, a, e) for mode 1
@group(0) @binding(7) var<storage, read_write> out: array<f32>;    // see each entry point
@group(0) @binding(8) var<storage, read_write> stats: array<vec4<f32>>; // [nc] (m, s, z'_y, sum w z')

fn unpack_kind(kind: u32, word: u32, odd: bool) -> f32 {
    if kind == 1u {
        let pair = unpack2x16float(word);
        return select(pair.x, pair.y, odd);
    }
    // bf16: the top 16 bits of an f32.
    return bitcast<f32>(select(word << 16u, word & 0xffff0000u, odd));
}

fn load_a(i: u32) -> f32 {
    if A_KIND == 0u {
        return bitcast<f32>(a_words[i]);
    }
    return unpack_kind(A_KIND, a_words[i >> 1u], (i & 1u) == 1u);
}

fn load_b(i: u32) -> f32 {
    if B_KIND == 0u {
        return bitcast<f32>(b_words[i]);
    }
    return unpack_kind(B_KIND, b_words[i >> 1u], (i & 1u) == 1u);
}

const TILE: u32 = 64u;
const STEP: u32 = 16u;

// Staged tiles, one vec4 per thread and k: tile_a[kk][ty] holds A's rows ty + 16 r (r = 0..3)
// at column k0 + kk, tile_b[kk][tx] holds B's columns tx + 16 r at row k0 + kk, so the inner
// loop reads two vec4s per k and does four vec4 fmas.
var<workgroup> tile_a: array<array<vec4<f32>, 16>, 16>;
var<workgroup> tile_b: array<array<vec4<f32>, 16>, 16>;

// The 4 x 4 outputs of thread (tx, ty) of the tile at (i0, j0): acc[a][b] = out(i0 + ty + 16a, j0 + tx + 16b).
// Rows and columns past the matrices are clamped to the last one (their outputs are computed
// but never written), so only the k bound is checked, once per staged element.
fn tile_product(i0: u32, j0: u32, tx: u32, ty: u32) -> array<vec4<f32>, 4> {
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

fn capped(z: f32) -> f32 {
    if P.softcap > 0.0 {
        return P.softcap * tanh(z / P.softcap);
    }
    return z;
}

// dL/dz of one logit from its capped value (mode 1).
fn logit_grad(i: u32, j: u32, zc: f32) -> f32 {
    let label = labels[i];
    if label < 0 {
        return 0.0;
    }
    let c = rowinfo[i]; // (lse, k, a, e)
    let p = exp(zc - c.x);
    var g = c.y * p - c.w * weight[j];
    if u32(label) == P.v0 + j {
        g -= c.z;
    }
    if P.softcap > 0.0 {
        let t = zc / P.softcap;
        g *= 1.0 - t * t;
    }
    return g;
}

@compute @workgroup_size(16, 16)
fn block_logits(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i0 = wg.y * TILE;
    let j0 = wg.x * TILE;
    let acc = tile_product(i0, j0, lid.x, lid.y);
    for (var x = 0u; x < 4u; x++) {
        let i = i0 + lid.y + 16u * x;
        for (var y = 0u; y < 4u; y++) {
            let j = j0 + lid.x + 16u * y;
            if i < P.m && j < P.n {
                var z = acc[x][y];
                if P.has_bias == 1u {
                    z += bias[j];
                }
                let zc = capped(z);
                var v = zc;
                if P.mode == 1u {
                    v = logit_grad(i, j, zc);
                }
                out[i * P.ldo + j] = v;
            }
        }
    }
}

@compute @workgroup_size(16, 16)
fn matmul(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i0 = wg.y * TILE;
    let j0 = wg.x * TILE;
    let acc = tile_product(i0, j0, lid.x, lid.y);
    for (var x = 0u; x < 4u; x++) {
        let i = i0 + lid.y + 16u * x;
        for (var y = 0u; y < 4u; y++) {
            let j = j0 + lid.x + 16u * y;
            if i < P.m && j < P.n {
                let o = i * P.ldo + j;
                var v = acc[x][y];
                if P.accumulate == 1u {
                    v += out[o];
                }
                out[o] = v;
            }
        }
    }
}

// One thread per row of the block in `out` ([m, n], row stride ldo): merges it into stats[row].
@compute @workgroup_size(64)
fn block_stats(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if i >= P.m {
        return;
    }
    let row = i * P.ldo;
    var block_max = -bitcast<f32>(0x7f800000u);
    for (var j = 0u; j < P.n; j++) {
        block_max = max(block_max, out[row + j]);
    }
    var st = vec4<f32>(-bitcast<f32>(0x7f800000u), 0.0, 0.0, 0.0);
    if P.accumulate == 1u {
        st = stats[i];
    }
    let m = max(st.x, block_max);
    var s = 0.0;
    var swz = 0.0;
    if m > -bitcast<f32>(0x7f800000u) { // all -inf so far: the sum stays 0
        s = st.y * exp(st.x - m);
        for (var j = 0u; j < P.n; j++) {
            s += exp(out[row + j] - m);
        }
    }
    for (var j = 0u; j < P.n; j++) {
        swz += weight[j] * out[row + j];
    }
    var zy = st.z;
    let label = labels[i];
    if label >= 0 && u32(label) >= P.v0 && u32(label) - P.v0 < P.n {
        zy = out[row + u32(label) - P.v0];
    }
    stats[i] = vec4<f32>(m, s, zy, st.w + swz);
}

// One thread per column j of the block gradient in `a_words` (f32, [k rows, n], stride ldo):
// out[j] [+]= sum over rows.
@compute @workgroup_size(64)
fn bias_grad(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    if j >= P.n {
        return;
    }
    var sum = 0.0;
    for (var i = 0u; i < P.k; i++) {
        sum += bitcast<f32>(a_words[i * P.ldo + j]);
    }
    if P.accumulate == 1u {
        sum += out[j];
    }
    out[j] = sum;
}
