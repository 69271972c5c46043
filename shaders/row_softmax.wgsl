// Row-wise softmax and fused softmax cross-entropy (forward + backward).
//
// The math, for one row z of `cols` logits (see src/reference.rs for the f64 twin):
//   z'_j  = softcap > 0 ? softcap * tanh(z_j / softcap) : z_j
//   m     = max_j z'_j,   d = sum_j exp(z'_j - m),   lse = m + log(d)
//   p_j   = exp(z'_j - lse)                          (softmax; log-softmax is z'_j - lse)
//   loss  = (1 - eps) * w_y * (lse - z'_y) + eps / C * (W * lse - sum_j w_j z'_j) + s * lse^2
//   dz'_j = A * p_j - B * [j == y] - E * w_j,  with A = scale * ((1 - eps) w_y + eps W / C + 2 s lse),
//           B = scale * (1 - eps) * w_y,  E = scale * eps / C
//   dz_j  = dz'_j * (1 - (z'_j / softcap)^2)          (only with soft-capping)
// where w are the class weights (all 1 without), W = sum_j w_j, eps the label smoothing, s the
// z-loss scale and `scale` the reduction factor (1 / sum of target weights for a mean).
//
// Layout: a *team* of lanes owns one row. This file holds the row logic; the team (how
// lanes find their row and how they reduce together) comes from one of the two files put in
// front of it by the host: team_workgroup.wgsl (lanes of a workgroup, barrier trees in
// workgroup memory) or team_subgroup.wgsl (one subgroup per row, subgroup operations, no
// barrier). Each lane walks its row in blocks of 4 consecutive columns, strided by the team
// size, then a scalar tail:
//   pass 1  read z, keep a per-lane online (max, sum of exp) pair; merge pairs across the team
//   pass 2  read z again, write p (softmax) or the gradient; lane 0 writes the row's loss and lse
// So the logits are read twice (the second read is usually served by cache) and the output
// written once. No atomics: every sum has a fixed order, so results are bit-reproducible.
//
// Rows past the end still run both reductions (with no columns) so that every barrier is
// reached by the whole workgroup; they write nothing.

// Bindings, shared by both entry points (unused ones are bound to a small dummy buffer).
struct Params {
    rows: u32,            // rows in this dispatch
    cols: u32,            // classes per row
    logits_base: u32,     // element offset of row 0 in `logits` (and in `out`)
    row_base: u32,        // element offset of row 0 in `labels`, `row_loss` and `lse`
    out_base: u32,        // element offset of row 0 in `out`
    ignore_index: i32,    // rows with this label are ignored
    has_weights: u32,     // 1: read `weights`; 0: all weights are 1
    log_softmax: u32,     // softmax entry: 1 writes log-probabilities
    label_smoothing: f32, // eps
    z_loss: f32,          // s
    softcap: f32,         // 0 = off
    weight_sum: f32,      // W = sum of class weights (cols without weights)
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<i32>;
@group(0) @binding(3) var<storage, read> weights: array<f32>;
// [0] = the gradient scale of the reduction (see reduce.wgsl).
@group(0) @binding(4) var<storage, read> stats: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
@group(0) @binding(6) var<storage, read_write> row_loss: array<f32>;
@group(0) @binding(7) var<storage, read_write> row_lse: array<f32>;

// Columns a lane reads per step: one block of 4 consecutive floats.
const BLOCK = 4u;
// The smallest finite f32: the start of a running max, so that `m - m_new` is never
// `-inf - -inf` (NaN) while a row holds only -inf masks.
const LOWEST = -3.40282347e38;

// Where a lane sits: which row its team owns and which lane of the team it is.
struct Team {
    row: u32,   // row index within the dispatch (may be >= params.rows: then it idles)
    lane: u32,  // 0 .. size
    size: u32,  // lanes per row
}

// The logit as the loss sees it (soft-capped when asked).
fn capped(z: f32) -> f32 {
    if params.softcap > 0.0 {
        return params.softcap * tanh(z / params.softcap);
    }
    return z;
}

fn capped4(z: vec4<f32>) -> vec4<f32> {
    if params.softcap > 0.0 {
        return params.softcap * tanh(z / params.softcap);
    }
    return z;
}

fn load4(i: u32) -> vec4<f32> {
    return vec4<f32>(logits[i], logits[i + 1u], logits[i + 2u], logits[i + 3u]);
}

fn store4(i: u32, v: vec4<f32>) {
    out[i] = v.x;
    out[i + 1u] = v.y;
    out[i + 2u] = v.z;
    out[i + 3u] = v.w;
}

fn class_weight(j: u32) -> f32 {
    if params.has_weights != 0u {
        return weights[j];
    }
    return 1.0;
}

fn class_weight4(j: u32) -> vec4<f32> {
    if params.has_weights != 0u {
        return vec4<f32>(weights[j], weights[j + 1u], weights[j + 2u], weights[j + 3u]);
    }
    return vec4<f32>(1.0);
}

// Per-row totals after pass 1.
struct RowStats {
    lse: f32,      // log-sum-exp of the capped row
    wz_sum: f32,   // sum_j w_j z'_j (only gathered when label smoothing needs it)
}

// Pass 1: this lane's online (max, sum-exp) over its columns, merged across the team.
// `cols` is 0 for idle lanes past the last row, so they join the reductions with nothing.
fn row_stats(team: Team, start: u32, cols: u32, gather_wz: bool) -> RowStats {
    var m = LOWEST;
    var d = 0.0;
    var wz = 0.0;
    let blocks = cols / BLOCK;
    for (var b = team.lane; b < blocks; b += team.size) {
        let j = b * BLOCK;
        let z = capped4(load4(start + j));
        // Merge a block of 4 at once: one rescale of d per block, not per element.
        let m_new = max(m, max(max(z.x, z.y), max(z.z, z.w)));
        let e = exp(z - vec4<f32>(m_new));
        d = d * exp(m - m_new) + (e.x + e.y) + (e.z + e.w);
        m = m_new;
        if gather_wz {
            wz += dot(class_weight4(j), z);
        }
    }
    for (var j = blocks * BLOCK + team.lane; j < cols; j += team.size) {
        let z = capped(logits[start + j]);
        let m_new = max(m, z);
        d = d * exp(m - m_new) + exp(z - m_new);
        m = m_new;
        if gather_wz {
            wz += class_weight(j) * z;
        }
    }
    // Merge the lanes' pairs: rescale each lane's sum to the row max, then add.
    let row_max = team_max(m);
    let sums = team_sum2(vec2<f32>(d * exp(m - row_max), wz));
    return RowStats(row_max + log(sums.x), sums.y);
}

fn team_cols(team: Team) -> u32 {
    return select(0u, params.cols, team.row < params.rows);
}

// Softmax (or log-softmax) of each row into `out`.
fn softmax_row(team: Team) {
    let cols = team_cols(team);
    let start = params.logits_base + team.row * params.cols;
    let out_start = params.out_base + team.row * params.cols;
    let lse = row_stats(team, start, cols, false).lse;
    let log = params.log_softmax != 0u;
    let blocks = cols / BLOCK;
    for (var blk = team.lane; blk < blocks; blk += team.size) {
        let j = blk * BLOCK;
        let logp = capped4(load4(start + j)) - vec4<f32>(lse);
        store4(out_start + j, select(exp(logp), logp, log));
    }
    for (var j = blocks * BLOCK + team.lane; j < cols; j += team.size) {
        let logp = capped(logits[start + j]) - lse;
        out[out_start + j] = select(exp(logp), logp, log);
    }
}

// Fused cross-entropy: the row's loss and lse, and the gradient into `out`.
fn cross_entropy_row(team: Team) {
    let cols = team_cols(team);
    let C = f32(params.cols);
    let eps = params.label_smoothing;
    let start = params.logits_base + team.row * params.cols;
    let out_start = params.out_base + team.row * params.cols;
    let stats_row = row_stats(team, start, cols, eps > 0.0);
    if team.row >= params.rows {
        return; // idle lanes: the reductions above were their only duty
    }
    let lse = stats_row.lse;
    let r = params.row_base + team.row;
    let y = labels[r];
    let ignored = y == params.ignore_index;
    let valid = !ignored && y >= 0 && u32(y) < params.cols;

    // The row's scalars. An out-of-range label (possible only through the device API, whose
    // labels are not checked on the host) makes the row NaN instead of reading out of bounds.
    let yc = select(0u, u32(y), valid);
    let w_y = class_weight(yc);
    let scale = stats[0];
    let nan = bitcast<f32>(0x7fc00000u);
    if team.lane == 0u {
        var loss = (1.0 - eps) * w_y * (lse - capped(logits[start + yc]))
                 + eps / C * (params.weight_sum * lse - stats_row.wz_sum)
                 + params.z_loss * lse * lse;
        loss = select(loss, nan, !valid);
        row_loss[r] = select(loss, 0.0, ignored);
        row_lse[r] = lse;
    }
    var a = scale * ((1.0 - eps) * w_y + eps * params.weight_sum / C + 2.0 * params.z_loss * lse);
    a = select(a, nan, !valid && !ignored);
    let b = scale * (1.0 - eps) * w_y;
    let e = scale * eps / C;

    // Pass 2: the gradient, in blocks of 4 like pass 1 (measured on lavapipe: a scalar loop
    // here made the whole kernel 2.5x slower than pass 1 alone). Ignored rows write zeros
    // whatever their logits hold.
    let blocks = cols / BLOCK;
    for (var blk = team.lane; blk < blocks; blk += team.size) {
        let j = blk * BLOCK;
        let zc = capped4(load4(start + j));
        var g = a * exp(zc - vec4<f32>(lse)) - e * class_weight4(j);
        g -= select(vec4<f32>(0.0), vec4<f32>(b), vec4<u32>(j, j + 1u, j + 2u, j + 3u) == vec4<u32>(yc));
        if params.softcap > 0.0 {
            let t = zc / params.softcap;
            g *= 1.0 - t * t;
        }
        store4(out_start + j, select(g, vec4<f32>(0.0), ignored));
    }
    for (var j = blocks * BLOCK + team.lane; j < cols; j += team.size) {
        let zc = capped(logits[start + j]);
        var g = a * exp(zc - lse) - e * class_weight(j);
        g -= select(0.0, b, j == yc);
        if params.softcap > 0.0 {
            let t = zc / params.softcap;
            g *= 1.0 - t * t;
        }
        out[out_start + j] = select(g, 0.0, ignored);
    }
}
