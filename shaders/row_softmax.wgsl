// Row-wise softmax and fused softmax cross-entropy (forward + backward).
//
// The math, for one row z of C = `cols` logits (src/reference.rs is the f64 twin):
//   z'_j  = softcap > 0 ? softcap * tanh(z_j / softcap) : z_j
//   m     = max_j z'_j,   d = sum_j exp(z'_j - m),   lse = m + log(d)
//   p_j   = exp(z'_j - lse)                         (softmax; log-softmax is z'_j - lse)
// Class-index target y, class weights w (all 1 without), W = sum_j w_j, smoothing eps,
// z-loss s, reduction factor k (1 / sum of target weights for a mean, times the row's
// upstream gradient when one is given):
//   loss  = (1 - eps) w_y (lse - z'_y) + eps / C (W lse - sum_j w_j z'_j) + s lse^2
//   dz'_j = k [ ((1 - eps) w_y + eps W / C + 2 s lse) p_j - (1 - eps) w_y [j == y] - eps / C w_j ]
// Probability targets t, smoothed t'_j = (1 - eps) t_j + eps / C, T = sum_j w_j t'_j:
//   loss  = T lse - sum_j w_j t'_j z'_j + s lse^2
//   dz'_j = k [ (T + 2 s lse) p_j - w_j t'_j ]
// and with soft-capping dz_j = dz'_j (1 - (z'_j / softcap)^2).
//
// Layout: a *team* of lanes owns one row. Three files make one module: an io_*.wgsl file
// (how elements are stored: f32, in place, ...), a team_*.wgsl file (how lanes find their row
// and reduce together: barrier trees in workgroup memory, or one subgroup per row), and this
// one, the row math. Each lane walks its row in blocks of 4 consecutive columns, strided by
// the team size, then a scalar tail:
//   pass 1  read z (and t), keep a per-lane online (max, sum of exp) pair and the sums the
//           loss needs; merge them across the team (one max, one vec4 sum)
//   pass 2  read z again, write p, log p or the gradient; lane 0 writes the row's loss, lse
// So the logits are read twice (the second read is usually served by cache) and the output
// written once. No atomics: every sum has a fixed order, so results are bit-reproducible.
//
// Rows past the end still run both reductions (with no columns) so that every barrier is
// reached by the whole workgroup; they write nothing.

struct Params {
    rows: u32,            // rows in this dispatch
    cols: u32,            // classes per row
    logits_base: u32,     // element offset of row 0 in `logits`
    row_base: u32,        // element offset of row 0 in `labels`, `row_loss` and `row_lse`
    out_base: u32,        // element offset of row 0 in the output
    targets_base: u32,    // element offset of row 0 in `targets`
    row_offset: u32,      // index of row 0 in the whole batch (for the upstream gradients)
    ignore_index: i32,    // rows with this label are ignored
    has_weights: u32,     // 1: read `weights`; 0: all weights are 1
    has_targets: u32,     // 1: probability targets in `targets`; 0: class indices in `labels`
    has_upstream: u32,    // 1: scales[4 + row] multiplies each row's gradient
    log_softmax: u32,     // softmax entry: 1 writes log-probabilities
    label_smoothing: f32, // eps
    z_loss: f32,          // s
    softcap: f32,         // 0 = off
    weight_sum: f32,      // W = sum of class weights (cols without weights)
}

// Bindings 1 (logits) and 6 (output) are declared by the io_*.wgsl file.
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> labels: array<i32>;
@group(0) @binding(3) var<storage, read> weights: array<f32>;
// [0] the reduction factor (see batch_sum.wgsl), [4 + row] the upstream gradient of a row.
@group(0) @binding(4) var<storage, read> scales: array<f32>;
@group(0) @binding(5) var<storage, read> targets: array<f32>;
@group(0) @binding(7) var<storage, read_write> row_loss: array<f32>;
@group(0) @binding(8) var<storage, read_write> row_lse: array<f32>;

// Columns a lane reads per step: one block of 4 consecutive floats.
const BLOCK = 4u;
// The smallest finite f32: the start of a running max, so that `m - m_new` is never
// `-inf - -inf` (NaN) while a row holds only -inf masks.
const LOWEST = -3.40282347e38;
// Offset of the upstream gradients in `scales`.
const UPSTREAM = 4u;

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

// d z' / d z: the factor soft-capping puts on the gradient.
fn cap_slope4(zc: vec4<f32>) -> vec4<f32> {
    if params.softcap > 0.0 {
        let t = zc / params.softcap;
        return 1.0 - t * t;
    }
    return vec4<f32>(1.0);
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

// w_j t'_j for probability targets; `i` indexes `targets`, `j` the class.
fn target_weight4(i: u32, j: u32) -> vec4<f32> {
    let t = vec4<f32>(targets[i], targets[i + 1u], targets[i + 2u], targets[i + 3u]);
    let eps = params.label_smoothing;
    return class_weight4(j) * ((1.0 - eps) * t + eps / f32(params.cols));
}

fn target_weight(i: u32, j: u32) -> f32 {
    let eps = params.label_smoothing;
    return class_weight(j) * ((1.0 - eps) * targets[i] + eps / f32(params.cols));
}

// What pass 1 learns about a row.
struct RowStats {
    lse: f32,  // log-sum-exp of the capped row
    s1: f32,   // class index: sum_j w_j z'_j (with smoothing);  probabilities: sum_j w_j t'_j z'_j
    s2: f32,   // class index: z'_y;                              probabilities: T = sum_j w_j t'_j
}

// Pass 1: this lane's online (max, sum-exp) over its columns, merged across the team.
// `cols` is 0 for idle lanes past the last row, so they join the reductions with nothing.
// `y` is the row's class (or an impossible index): the lane that owns it captures z'_y.
fn row_stats(team: Team, start: u32, tstart: u32, cols: u32, y: u32, mode: u32) -> RowStats {
    var m = LOWEST;
    var d = 0.0;
    var s1 = 0.0;
    var s2 = 0.0;
    let blocks = cols / BLOCK;
    for (var b = team.lane; b < blocks; b += team.size) {
        let j = b * BLOCK;
        let z = capped4(load_logit4(start + j));
        // Merge a block of 4 at once: one rescale of d per block, not per element.
        let m_new = max(m, max(max(z.x, z.y), max(z.z, z.w)));
        let e = exp(z - vec4<f32>(m_new));
        d = d * exp(m - m_new) + (e.x + e.y) + (e.z + e.w);
        m = m_new;
        switch mode {
            case MODE_SMOOTHED: {
                s1 += dot(class_weight4(j), z);
            }
            case MODE_PROBS: {
                let wt = target_weight4(tstart + j, j);
                s1 += dot(wt, z);
                s2 += (wt.x + wt.y) + (wt.z + wt.w);
            }
            default: {}
        }
        if y - j < BLOCK {
            s2 = z[y - j];
        }
    }
    for (var j = blocks * BLOCK + team.lane; j < cols; j += team.size) {
        let z = capped(load_logit(start + j));
        let m_new = max(m, z);
        d = d * exp(m - m_new) + exp(z - m_new);
        m = m_new;
        switch mode {
            case MODE_SMOOTHED: {
                s1 += class_weight(j) * z;
            }
            case MODE_PROBS: {
                let wt = target_weight(tstart + j, j);
                s1 += wt * z;
                s2 += wt;
            }
            default: {}
        }
        if j == y {
            s2 = z;
        }
    }
    // Merge the lanes: rescale each lane's sum to the row max, then add everything at once.
    // (z'_y is held by one lane, the others hold 0, so the sum moves it to every lane.)
    let row_max = team_max(m);
    let sums = team_sum4(vec4<f32>(d * exp(m - row_max), s1, s2, 0.0));
    return RowStats(row_max + log(sums.x), sums.y, sums.z);
}

// What pass 1 gathers beside (max, sum-exp).
const MODE_PLAIN = 0u;     // softmax, or class targets without smoothing
const MODE_SMOOTHED = 1u;  // class targets with smoothing: sum_j w_j z'_j
const MODE_PROBS = 2u;     // probability targets: sum_j w_j t'_j z'_j and sum_j w_j t'_j

fn team_cols(team: Team) -> u32 {
    return select(0u, params.cols, team.row < params.rows);
}

// Softmax (or log-softmax) of each row into the output.
fn softmax_row(team: Team) {
    let cols = team_cols(team);
    let start = params.logits_base + team.row * params.cols;
    let out_start = params.out_base + team.row * params.cols;
    let lse = row_stats(team, start, 0u, cols, 0xffffffffu, MODE_PLAIN).lse;
    let log = params.log_softmax != 0u;
    let blocks = cols / BLOCK;
    for (var b = team.lane; b < blocks; b += team.size) {
        let j = b * BLOCK;
        let logp = capped4(load_logit4(start + j)) - vec4<f32>(lse);
        store_out4(out_start + j, select(exp(logp), logp, log));
    }
    for (var j = blocks * BLOCK + team.lane; j < cols; j += team.size) {
        let logp = capped(load_logit(start + j)) - lse;
        store_out(out_start + j, select(exp(logp), logp, log));
    }
}

// Fused cross-entropy: the row's loss and lse, and the gradient into the output.
fn cross_entropy_row(team: Team) {
    let cols = team_cols(team);
    let live = team.row < params.rows;
    let C = f32(params.cols);
    let eps = params.label_smoothing;
    let probs = params.has_targets != 0u;
    let start = params.logits_base + team.row * params.cols;
    let tstart = params.targets_base + team.row * params.cols;
    let out_start = params.out_base + team.row * params.cols;
    let r = params.row_base + team.row;

    // The row's class. An out-of-range label (possible only through the device API, whose
    // labels are not checked on the host) makes the row NaN instead of reading out of bounds.
    var y = params.ignore_index;
    if live && !probs {
        y = labels[r];
    }
    let ignored = !probs && y == params.ignore_index;
    let valid = probs || (!ignored && y >= 0 && u32(y) < params.cols);
    let yc = select(0xffffffffu, u32(y), valid && !probs);

    var mode = MODE_PLAIN;
    if probs {
        mode = MODE_PROBS;
    } else if eps > 0.0 {
        mode = MODE_SMOOTHED;
    }
    let stats_row = row_stats(team, start, tstart, cols, yc, mode);
    if !live {
        return; // idle lanes: the reductions above were their only duty
    }
    let lse = stats_row.lse;
    var k = scales[0];
    if params.has_upstream != 0u {
        k *= scales[UPSTREAM + params.row_offset + team.row];
    }
    let nan = bitcast<f32>(0x7fc00000u);
    let zloss = params.z_loss * lse * lse;

    // The row's loss and the gradient's coefficients: dz'_j = a p_j - b [j == y] - e c_j,
    // where c_j = w_j (class targets) or w_j t'_j (probability targets).
    var loss: f32;
    var a: f32;
    var b = 0.0;
    var e: f32;
    if probs {
        loss = stats_row.s2 * lse - stats_row.s1 + zloss;
        a = k * (stats_row.s2 + 2.0 * params.z_loss * lse);
        e = k;
    } else {
        let w_y = class_weight(select(0u, yc, valid));
        loss = (1.0 - eps) * w_y * (lse - stats_row.s2)
             + eps / C * (params.weight_sum * lse - stats_row.s1) + zloss;
        a = k * ((1.0 - eps) * w_y + eps * params.weight_sum / C + 2.0 * params.z_loss * lse);
        b = k * (1.0 - eps) * w_y;
        e = k * eps / C;
    }
    if !valid {
        loss = nan;
        a = nan;
    }
    if team.lane == 0u {
        row_loss[r] = select(loss, 0.0, ignored);
        row_lse[r] = lse;
    }

    // Pass 2: the gradient. Ignored rows write zeros whatever their logits hold.
    let blocks = cols / BLOCK;
    for (var blk = team.lane; blk < blocks; blk += team.size) {
        let j = blk * BLOCK;
        let zc = capped4(load_logit4(start + j));
        var c: vec4<f32>;
        if probs {
            c = target_weight4(tstart + j, j);
        } else {
            c = class_weight4(j);
        }
        var g = a * exp(zc - vec4<f32>(lse)) - e * c;
        g -= select(vec4<f32>(0.0), vec4<f32>(b), vec4<u32>(j, j + 1u, j + 2u, j + 3u) == vec4<u32>(yc));
        g *= cap_slope4(zc);
        store_out4(out_start + j, select(g, vec4<f32>(0.0), ignored));
    }
    for (var j = blocks * BLOCK + team.lane; j < cols; j += team.size) {
        let zc = capped(load_logit(start + j));
        var c: f32;
        if probs {
            c = target_weight(tstart + j, j);
        } else {
            c = class_weight(j);
        }
        var g = a * exp(zc - lse) - e * c;
        g -= select(0.0, b, j == yc);
        g *= cap_slope4(vec4<f32>(zc)).x;
        store_out(out_start + j, select(g, 0.0, ignored));
    }
}
