// Fused linear + cross-entropy (src/linear.rs): the loss and the gradients of
// `z = hidden @ classifier^T + bias` without the [rows, vocab] logits ever existing whole.
// The host walks the vocabulary in blocks of `vb` columns and the rows in chunks of `nc`; one
// block of one chunk lives in `out` (scratch, [nc, vb] f32), so device memory beyond inputs
// and outputs is bounded by the block size, not by the vocabulary. The gradient block goes
// through that scratch rather than registers because d_hidden and d_classifier both need all
// of it and WGSL has no float atomics (src/linear.rs's module docs weigh the alternatives).
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
// The product: block_logits and matmul call `tile_product(i0, j0, inv)` for their 64 x 64
// output tile and take the entry point's builtins as `inv: Invocation`; both are defined by
// the product file the host puts before this one (src/linear.rs: LinearProduct):
// linear_tile.wgsl (workgroup-memory tiles, every adapter), linear_tile_subgroup.wgsl
// (subgroup shuffles; both after linear_tile_rows.wgsl) or linear_tile_coop.wgsl
// (cooperative matrices, only where the device has them). Thread (tx, ty) = (index % 16,
// index / 16) of the 256-thread workgroup (one-dimensional: the subgroup builtins of the
// cooperative product need that) gets back its 4 x 4 outputs (rows ty + 16 a, columns
// tx + 16 b) and writes them; block_stats and bias_grad do not use the product.
//
// Storage formats: A and B are u32 words holding f32 (kind 0), f16 pairs (kind 1, unpacked
// with unpack2x16float, which needs no SHADER_F16) or bf16 pairs (kind 2, see bf16.wgsl);
// element i of a pair buffer is the low half of word i / 2 when i is even. Everything else is
// f32, and all arithmetic is f32. Needs `Invocation` and `tile_product` from a product file;
// gives it `P`, `load_a`, `load_b` and `TILE`.

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

// Thread (tx, ty)'s 4 x 4 outputs of the 64 x 64 tile of workgroup `inv.wg` into `out`:
// for block_logits (`logits`) z' or the gradient, for matmul the product added to `out` or
// over it. `tile_product` is called in uniform control flow (it may hold barriers).
fn write_tile(inv: Invocation, logits: bool) {
    let tx = inv.index % 16u;
    let ty = inv.index / 16u;
    let i0 = inv.wg.y * TILE;
    let j0 = inv.wg.x * TILE;
    let acc = tile_product(i0, j0, inv);
    for (var x = 0u; x < 4u; x++) {
        let i = i0 + ty + 16u * x;
        for (var y = 0u; y < 4u; y++) {
            let j = j0 + tx + 16u * y;
            if i < P.m && j < P.n {
                let o = i * P.ldo + j;
                var v = acc[x][y];
                if logits {
                    if P.has_bias == 1u {
                        v += bias[j];
                    }
                    v = capped(v);
                    if P.mode == 1u {
                        v = logit_grad(i, j, v);
                    }
                } else if P.accumulate == 1u {
                    v += out[o];
                }
                out[o] = v;
            }
        }
    }
}

@compute @workgroup_size(256)
fn block_logits(inv: Invocation) {
    write_tile(inv, true);
}

@compute @workgroup_size(256)
fn matmul(inv: Invocation) {
    write_tile(inv, false);
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
