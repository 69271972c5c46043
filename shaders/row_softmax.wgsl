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
// Defines: Params and the bindings other than the logits and the output, Pair, RowStats,
//   Team, merge, the row functions softmax_row, cross_entropy_row, split_stats, split_write,
//   the option overrides (HAS_WEIGHTS, PROBS, SOFTCAP, WHOLE_BATCH, CACHE_BLOCKS) and
//   smoothing_on (label smoothing is a param).
// Needs: load_logit, load_logit4, load_logit8, store_out, store_out4, store_out8, PAIRS (the
//   io file with io_single.wgsl or io_pairs.wgsl); team_stats, TEAM_SIZE or the subgroup
//   builtins' team (the team file); Kahan, kahan_add (kahan.wgsl).
// src/kernels/source.rs lists which files make a variant's module (`ShaderVariant::fragments`);
// `ml-softmax shader` prints one.
//
// Layout: a *team* of lanes owns one row. Three kinds of file make one module: an io_*.wgsl
// file (how elements are stored: f32 scalars or vec4s, f16, bf16), a team_*.wgsl file (how
// lanes find their row and reduce together: barrier trees in workgroup memory, one subgroup
// per row, or one lane per row with no reduction), and this one, the row math. Each lane walks its row in blocks of 4 consecutive columns, strided by
// the team size; the blocks start at multiples of 4 of the binding (see `Span`), and the up
// to 3 columns before the first block (head) and after the last (tail) go one by one:
//   pass 1  read z (and t), keep a per-lane online (max, sum of exp) pair and the sums the
//           loss needs, 4 blocks per step; merge them across the team (one max, one vec4
//           sum)
//   pass 2  read z again, write p, log p or the gradient; lane 0 writes the row's loss, lse
// So the logits are read twice (the second read is usually served by cache) and the output
// written once. No atomics: every sum has a fixed order, so results are bit-reproducible.
// With one lane per row on software adapters the io file may be a pair file (io_*x8.wgsl,
// PAIRS): its units (32 bytes of f32, 16 of halves) hold two blocks, the blocks then start at a multiple of 8 (up to 7 head
// columns), and a step of 4 blocks is 2 accesses instead of 4 (`load_step`, `store_step`).
//
// Rows too long for one team to finish quickly, when there are few of them, are *split*:
// workgroup (chunk c, row r) owns columns [c * col_chunk, (c + 1) * col_chunk) of row r.
//   split_stats  pass 1 over the chunk; lane 0 stores the chunk's (max, sum-exp, s1, s2)
//                in `scales` at partials_base + 4 * (r * chunks + c)
//   split_write  (a second dispatch, so all partials are written) every workgroup merges its
//                row's partials in chunk order, the same online merge as across lanes, then
//                writes its chunk as pass 2; chunk 0 writes the row's loss and lse
// so a 262,144-column row keeps 16+ workgroups busy instead of one. Nothing here orders the
// rows: the host may record the two passes over all rows, or (Strategy::SplitCache) alternate
// them per group of rows whose logits fit the L2 cache, each group's params pointing at its
// first row, so that split_write's second read of the logits finds them in cache. No grid-wide
// barrier exists in WGSL, so a chunk cannot stay on chip from split_stats to split_write.
//
// Vocabulary-parallel shards (src/parallel.rs) reuse the split layout with the "chunks" of a
// row on other devices: a rank's logits hold columns [class_base, class_base + cols) of a
// vocabulary of `classes`. split_stats runs alone and the host reads the partials back; the
// ranks merge them (the same `merge`, see src/parallel.rs); the host writes the merged stats
// as chunk 0's partial (the other chunks' as the merge's identity) and split_write runs alone.
// Labels stay whole-vocabulary classes (yc = y - class_base is the local column, which no
// local column matches when the class lives on another rank), C is `classes`, and the target
// class's weight w_y, which may live on another rank, comes per row from the host.
//
// A batch small enough to be one workgroup (WHOLE_BATCH, host: geometry::one_workgroup)
// does in that workgroup what batch_sum.wgsl's dispatches would do around it: the denominator
// of a class-target mean before the rows, the reduced loss after them. One dispatch instead of
// three matters for a small batch on lavapipe, where each dispatch has a fixed cost whatever
// it does (see "the whole batch in one workgroup" below).
// A batch of several workgroups can still skip the denominator's dispatch: each workgroup
// counts it itself from all the labels (BATCH_DENOMINATOR, host:
// geometry::denominator_in_each_workgroup; see "the mean's denominator in every workgroup").
// Its loss sum stays a dispatch after the rows: WGSL has no ordering of storage between
// workgroups of one dispatch (atomics are relaxed, storageBarrier and workgroupBarrier reach
// one workgroup, and workgroups need not run concurrently), so "the last workgroup to finish
// sums the row losses" is not portable: it could read row losses not yet visible to it.
// BENCHMARKS.md, "Fewer dispatches", has the dispatch counts and why.
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
    has_upstream: u32,    // 1: scales[4 + row] multiplies each row's gradient
    log_softmax: u32,     // softmax entry: 1 writes log-probabilities
    label_smoothing: f32, // eps
    z_loss: f32,          // s
    softcap: f32,         // 0 = off
    weight_sum: f32,      // W = sum of class weights (cols without weights)
    col_chunk: u32,       // split layout: columns per workgroup
    partials_base: u32,   // split layout: offset of the partials in `scales`
    softmax: u32,         // split layout: 1 for softmax, 0 for cross-entropy
    whole_batch: u32,     // WHOLE_BATCH: which of the batch's sums (WHOLE_BATCH_LOSS / _MEAN)
    // Vocabulary-parallel shards (src/parallel.rs); all 0 for a whole row:
    classes: u32,         // C of the math, the whole vocabulary (0: `cols`)
    class_base: u32,      // the class of column 0 (labels are whole-vocabulary classes)
    row_weights: u32,     // with HAS_WEIGHTS, != 0: w_y of row r is weights[row_weights + r]
}

// Bindings 1 (logits), 6 (output) and 9 (output as scalars) are generated for the variant
// (src/kernels/source.rs).
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> labels: array<i32>;
@group(0) @binding(3) var<storage, read> weights: array<f32>;
// [0] the reduction factor (see batch_sum.wgsl), [4 + row] the upstream gradient of a row,
// then (split layout only) 4 floats of partial results per chunk of each row.
@group(0) @binding(4) var<storage, read_write> scales: array<f32>;
@group(0) @binding(5) var<storage, read> targets: array<f32>;
@group(0) @binding(7) var<storage, read_write> row_loss: array<f32>;
@group(0) @binding(8) var<storage, read_write> row_lse: array<f32>;

// Specialisations: which options the loss uses. They are pipeline-overridable constants, not
// params, so each pipeline holds only the code its options need: on lavapipe the unused
// branches (tanh of every logit, class-weight and target loads) made the kernel much slower
// even when skipped at run time, as llvmpipe runs both sides of a branch under a mask
// (BENCHMARKS.md, "What moved the kernel", and "Pipeline space" for which options still
// are overrides).
override HAS_WEIGHTS: bool = false;  // class weights in `weights` (else all 1)
override PROBS: bool = false;        // probability targets in `targets` (else class indices)
override SOFTCAP: bool = false;      // soft-capping with params.softcap
// Label smoothing is a param, not an override: its specialisation measured no faster on
// lavapipe (BENCHMARKS.md, "Pipeline space"), and each override doubles the pipelines a
// workload can compile. (z-loss was a param already.)
fn smoothing_on() -> bool {
    return params.label_smoothing > 0.0;
}

// Columns a lane reads at once: one block of 4 consecutive floats.
const BLOCK = 4u;
// Blocks a lane takes per loop turn (spelled out as 4 calls in the loops): pass 1 folds them
// into its running max at once.
const STEP_BLOCKS = 4u;

// The row dispatch also does (some of) the batch's sums, instead of batch_sum.wgsl's
// dispatches around it; params.whole_batch says which:
override WHOLE_BATCH: bool = false;
// The whole batch in this one workgroup (see `whole_batch_loss`):
const WHOLE_BATCH_LOSS = 1u; // stats[2] += stats[0] * sum of the row losses
const WHOLE_BATCH_MEAN = 2u; // that, after stats[1] += sum of target weights, stats[0] = 1 / it
// Any number of workgroups (see `workgroup_denominator`): each sums the mean's denominator
// over all the batch's labels itself; the loss sum stays batch_sum.wgsl's.
const BATCH_DENOMINATOR = 3u;

// Read-once layout (Strategy::Cached): with CACHE_BLOCKS > 0 each lane keeps its blocks
// (lane, lane + size, ..., at most CACHE_BLOCKS of them; the host picks CACHE_BLOCKS so they
// cover the row) in registers between the two passes, so pass 2 reads no logits but the
// loose columns. The loops over the cache run a pipeline-constant number of times, so a
// compiler can unroll them and keep `row_cache` in registers (indexed by constants); that is
// the point, and why CACHE_BLOCKS is an override, not a param. On lavapipe it measured no
// faster than reading twice (the second read hits the CPU cache there; BENCHMARKS.md, "What
// moved the kernel"); it exists for GPUs, where the second read is a trip to memory for rows
// longer than the caches hold.
override CACHE_BLOCKS: u32 = 0u;
const MAX_CACHE_BLOCKS = 16u; // = geometry::MAX_CACHE_BLOCKS (checked by tests/shaders.rs)
var<private> row_cache: array<vec4<f32>, MAX_CACHE_BLOCKS>;

// How the lanes walk `cols` columns that start at element `start` of the logits binding:
// `head` loose columns up to the first multiple of BLOCK (of 2 BLOCK with PAIRS), then
// `blocks` whole blocks (block b is columns head + 4b .. head + 4b + 3, a whole vector of
// the binding), then the loose tail. Aligning blocks to the binding, not to the row, is what
// lets the vector io files (io_*x4.wgsl, io_*x8.wgsl) load a block as one vector whatever
// the row length; the host binds the output at the same offset modulo 4 (8 with PAIRS), so
// the output's blocks are whole vectors too.
struct Span {
    head: u32,
    blocks: u32,
    loose: u32, // head + tail
}

fn span_of(start: u32, cols: u32) -> Span {
    // With PAIRS the blocks start at a whole unit of two blocks (up to 7 head columns).
    let align = select(BLOCK, 2u * BLOCK, PAIRS);
    let head = min(cols, (align - start % align) % align);
    let blocks = (cols - head) / BLOCK;
    return Span(head, blocks, cols - blocks * BLOCK);
}

// Column of block b.
fn block_col(s: Span, b: u32) -> u32 {
    return s.head + b * BLOCK;
}

// Column of the k-th loose column (k < s.loose): the head first, then the tail.
fn loose_col(s: Span, k: u32) -> u32 {
    return select(k + s.blocks * BLOCK, k, k < s.head);
}

// Two neighbouring blocks: one unit of an io file with PAIRS (io_*x8.wgsl).
struct Pair {
    a: vec4<f32>,
    b: vec4<f32>,
}

// The STEP_BLOCKS blocks a lane takes per loop turn: blocks j0, j0 + stride * BLOCK, ... of
// the binding. With PAIRS (the io file's constant; only with one lane per row, so stride 1,
// and j0 at a whole unit: `span_of`) they are two units, read in two accesses, not four.
struct Step {
    z0: vec4<f32>,
    z1: vec4<f32>,
    z2: vec4<f32>,
    z3: vec4<f32>,
}

fn load_step(i0: u32, stride: u32) -> Step {
    if PAIRS {
        let p = load_logit8(i0);
        let q = load_logit8(i0 + 2u * BLOCK);
        return Step(p.a, p.b, q.a, q.b);
    }
    let d = stride * BLOCK;
    return Step(load_logit4(i0), load_logit4(i0 + d), load_logit4(i0 + 2u * d), load_logit4(i0 + 3u * d));
}

fn store_step(i0: u32, stride: u32, s: Step) {
    if PAIRS {
        store_out8(i0, Pair(s.z0, s.z1));
        store_out8(i0 + 2u * BLOCK, Pair(s.z2, s.z3));
        return;
    }
    let d = stride * BLOCK;
    store_out4(i0, s.z0);
    store_out4(i0 + d, s.z1);
    store_out4(i0 + 2u * d, s.z2);
    store_out4(i0 + 3u * d, s.z3);
}

// The smallest finite f32: the start of a running max, so that `m - m_new` is never
// `-inf - -inf` (NaN) while a row holds only -inf masks. Written exactly (-f32::MAX, 17
// digits): Tint (browsers) refuses -3.40282347e38, which lies past it before rounding.
const LOWEST = -3.4028234663852886e38;
// Offset of the upstream gradients in `scales`.
const UPSTREAM = 4u;

// Where a lane sits: which row its team owns and which lane of the team it is.
struct Team {
    row: u32,   // row index within the dispatch (may be >= params.rows: then it idles)
    lane: u32,  // 0 .. size
    size: u32,  // lanes per row
}

// The logit as the loss sees it (soft-capped when asked).
// (NaN stays NaN: some drivers' tanh clamps its argument, which would turn it finite.)
fn capped(z: f32) -> f32 {
    return capped4(vec4<f32>(z)).x;
}

fn capped4(z: vec4<f32>) -> vec4<f32> {
    if SOFTCAP {
        let is_nan = (bitcast<vec4<u32>>(z) & vec4<u32>(0x7fffffffu)) > vec4<u32>(0x7f800000u);
        return select(params.softcap * tanh(z / params.softcap), z, is_nan);
    }
    return z;
}

// d z' / d z: the factor soft-capping puts on the gradient.
fn cap_slope4(zc: vec4<f32>) -> vec4<f32> {
    if SOFTCAP {
        let t = zc / params.softcap;
        return 1.0 - t * t;
    }
    return vec4<f32>(1.0);
}

fn class_weight(j: u32) -> f32 {
    if HAS_WEIGHTS {
        return weights[j];
    }
    return 1.0;
}

fn class_weight4(j: u32) -> vec4<f32> {
    if HAS_WEIGHTS {
        return vec4<f32>(weights[j], weights[j + 1u], weights[j + 2u], weights[j + 3u]);
    }
    return vec4<f32>(1.0);
}

// w_j t'_j for probability targets; `i` indexes `targets`, `j` the class.
fn target_weight4(i: u32, j: u32) -> vec4<f32> {
    let t = vec4<f32>(targets[i], targets[i + 1u], targets[i + 2u], targets[i + 3u]);
    let eps = params.label_smoothing;
    return class_weight4(j) * ((1.0 - eps) * t + eps / f32(classes()));
}

fn target_weight(i: u32, j: u32) -> f32 {
    let eps = params.label_smoothing;
    return class_weight(j) * ((1.0 - eps) * targets[i] + eps / f32(classes()));
}

// What pass 1 learns about a row (or, in the split layout, a chunk of one).
struct RowStats {
    m: f32,    // max of the capped logits
    d: f32,    // sum_j exp(z'_j - m)
    s1: f32,   // class index: sum_j w_j z'_j (with smoothing);  probabilities: sum_j w_j t'_j z'_j
    s2: f32,   // class index: z'_y;                              probabilities: T = sum_j w_j t'_j
}

fn lse_of(st: RowStats) -> f32 {
    return st.m + log(st.d);
}

// Folds `b` into `a`: the online-softmax merge (rescale both sums to the larger max).
fn merge(a: RowStats, b: RowStats) -> RowStats {
    let m = max(a.m, b.m);
    return RowStats(m, a.d * exp(a.m - m) + b.d * exp(b.m - m), a.s1 + b.s1, a.s2 + b.s2);
}

// The sums pass 1 gathers beside (max, sum-exp), per lane (see RowStats.s1, s2).
struct Extras {
    s1: f32,
    s2: f32,
}

// Adds block `j` (capped logits z, columns col0 + j ..) to a lane's extra sums (z'_y is
// read apart, at the end of row_stats).
fn add_extras4(x: ptr<function, Extras>, z: vec4<f32>, j: u32, tstart: u32, col0: u32, mode: u32) {
    switch mode {
        case MODE_SMOOTHED: {
            (*x).s1 += dot(class_weight4(col0 + j), z);
        }
        case MODE_PROBS: {
            let wt = target_weight4(tstart + j, col0 + j);
            (*x).s1 += dot(wt, z);
            (*x).s2 += (wt.x + wt.y) + (wt.z + wt.w);
        }
        default: {}
    }
}

fn add_extras(x: ptr<function, Extras>, z: f32, j: u32, tstart: u32, col0: u32, mode: u32) {
    switch mode {
        case MODE_SMOOTHED: {
            (*x).s1 += class_weight(col0 + j) * z;
        }
        case MODE_PROBS: {
            let wt = target_weight(tstart + j, col0 + j);
            (*x).s1 += wt * z;
            (*x).s2 += wt;
        }
        default: {}
    }
}

fn max_of4(v: vec4<f32>) -> f32 {
    return max(max(v.x, v.y), max(v.z, v.w));
}

fn sum_of4(v: vec4<f32>) -> f32 {
    return (v.x + v.y) + (v.z + v.w);
}

// Pass 1: this lane's online (max, sum-exp) over `cols` columns from `start` (column `col0`
// of the row), merged across the team. `cols` is 0 for idle lanes past the last row, so they
// join the reductions with nothing. `y` is the row's class (or an impossible index): lane 0
// reads z'_y.
//
// A lane owns blocks lane, lane + size, lane + 2 size, ... (neighbouring lanes read
// neighbouring blocks, so each load of the team is contiguous). It folds STEP_BLOCKS of them
// into its running max at once, so the running sum is rescaled (one exp) once per 16 columns
// instead of once per 4, as pass 1's exps were a large share of the kernel's time on lavapipe
// (BENCHMARKS.md, "What moved the kernel"). Leftover blocks go one at a time, then the
// loose columns. (The cached layout instead takes its blocks one by one into `row_cache`.)
// Steps also keep the loop turns per lane low: llvmpipe ends every invocation's loops after
// 65,535 turns in all (the host keeps within that: software::loop_turns).
fn row_stats(team: Team, start: u32, tstart: u32, col0: u32, cols: u32, y: u32, mode: u32) -> RowStats {
    var m = LOWEST;
    var d = 0.0;
    var x = Extras(0.0, 0.0);
    let span = span_of(start, cols);
    let blocks = span.blocks;
    let stride = team.size;
    var b = team.lane;
    if CACHE_BLOCKS > 0u {
        for (var k = 0u; k < CACHE_BLOCKS; k++) {
            let bk = team.lane + k * stride;
            if bk < blocks {
                let j = block_col(span, bk);
                let z = capped4(load_logit4(start + j));
                row_cache[k] = z;
                let m_new = max(m, max_of4(z));
                d = d * exp(m - m_new) + sum_of4(exp(z - vec4<f32>(m_new)));
                m = m_new;
                add_extras4(&x, z, j, tstart, col0, mode);
            }
        }
        b = blocks;
    }
    for (; b + (STEP_BLOCKS - 1u) * stride < blocks; b += STEP_BLOCKS * stride) {
        let j0 = block_col(span, b);
        let j1 = j0 + stride * BLOCK;
        let j2 = j1 + stride * BLOCK;
        let j3 = j2 + stride * BLOCK;
        let step = load_step(start + j0, stride);
        let z0 = capped4(step.z0);
        let z1 = capped4(step.z1);
        let z2 = capped4(step.z2);
        let z3 = capped4(step.z3);
        let m_new = max(m, max_of4(max(max(z0, z1), max(z2, z3))));
        let mv = vec4<f32>(m_new);
        let e = (exp(z0 - mv) + exp(z1 - mv)) + (exp(z2 - mv) + exp(z3 - mv));
        d = d * exp(m - m_new) + sum_of4(e);
        m = m_new;
        add_extras4(&x, z0, j0, tstart, col0, mode);
        add_extras4(&x, z1, j1, tstart, col0, mode);
        add_extras4(&x, z2, j2, tstart, col0, mode);
        add_extras4(&x, z3, j3, tstart, col0, mode);
    }
    for (; b < blocks; b += stride) {
        let j = block_col(span, b);
        let z = capped4(load_logit4(start + j));
        let m_new = max(m, max_of4(z));
        d = d * exp(m - m_new) + sum_of4(exp(z - vec4<f32>(m_new)));
        m = m_new;
        add_extras4(&x, z, j, tstart, col0, mode);
    }
    for (var k = team.lane; k < span.loose; k += stride) {
        let j = loose_col(span, k);
        let z = capped(load_logit(start + j));
        let m_new = max(m, z);
        d = d * exp(m - m_new) + exp(z - m_new);
        m = m_new;
        add_extras(&x, z, j, tstart, col0, mode);
    }
    // z'_y: lane 0 reads it once (the class's block may belong to any lane).
    if team.lane == 0u && y - col0 < cols {
        x.s2 = capped(load_logit(start + (y - col0)));
    }
    // Merge the lanes' stats across the team (the team file says how). z'_y is held by lane
    // 0, the others hold 0, so the sum moves it to every lane.
    return team_stats(RowStats(m, d, x.s1, x.s2));
}

// What pass 1 gathers beside (max, sum-exp).
const MODE_PLAIN = 0u;     // softmax, or class targets without smoothing
const MODE_SMOOTHED = 1u;  // class targets with smoothing: sum_j w_j z'_j
const MODE_PROBS = 2u;     // probability targets: sum_j w_j t'_j z'_j and sum_j w_j t'_j

fn team_cols(team: Team) -> u32 {
    return select(0u, params.cols, team.row < params.rows);
}

// Softmax (or log-softmax) of columns [col0, col0 + cols) of a row into the output.
fn write_softmax(team: Team, start: u32, out_start: u32, cols: u32, lse: f32) {
    let span = span_of(start, cols);
    let stride = team.size;
    // STEP_BLOCKS blocks per iteration, as in pass 1: fewer loop turns (see row_stats).
    var b = team.lane;
    if CACHE_BLOCKS > 0u {
        for (var k = 0u; k < CACHE_BLOCKS; k++) {
            let bk = team.lane + k * stride;
            if bk < span.blocks {
                softmax_of(out_start, block_col(span, bk), lse, row_cache[k]);
            }
        }
        b = span.blocks;
    }
    for (; b + (STEP_BLOCKS - 1u) * stride < span.blocks; b += STEP_BLOCKS * stride) {
        let j = block_col(span, b);
        let z = load_step(start + j, stride);
        let p = Step(softmax4(lse, capped4(z.z0)), softmax4(lse, capped4(z.z1)),
                     softmax4(lse, capped4(z.z2)), softmax4(lse, capped4(z.z3)));
        store_step(out_start + j, stride, p);
    }
    if PAIRS && b + 1u < span.blocks {
        // Two leftover blocks still fill a unit (see load_step).
        let j = block_col(span, b);
        let z = load_logit8(start + j);
        store_out8(out_start + j, Pair(softmax4(lse, capped4(z.a)), softmax4(lse, capped4(z.b))));
        b += 2u;
    }
    for (; b < span.blocks; b += stride) {
        softmax_block(start, out_start, block_col(span, b), lse);
    }
    let log = params.log_softmax != 0u;
    for (var k = team.lane; k < span.loose; k += stride) {
        let j = loose_col(span, k);
        let logp = capped(load_logit(start + j)) - lse;
        store_out(out_start + j, select(exp(logp), logp, log));
    }
}

// Softmax (or log-softmax) of the block of 4 columns at `j` (start + j a multiple of 4).
fn softmax_block(start: u32, out_start: u32, j: u32, lse: f32) {
    softmax_of(out_start, j, lse, capped4(load_logit4(start + j)));
}

// Softmax (or log-softmax) of the block at `j` whose capped logits are `zc`.
fn softmax_of(out_start: u32, j: u32, lse: f32, zc: vec4<f32>) {
    store_out4(out_start + j, softmax4(lse, zc));
}

// Softmax (or log-softmax) of a block of capped logits.
fn softmax4(lse: f32, zc: vec4<f32>) -> vec4<f32> {
    let logp = zc - vec4<f32>(lse);
    return select(exp(logp), logp, params.log_softmax != 0u);
}

// Softmax (or log-softmax) of each row into the output.
fn softmax_row(team: Team) {
    let cols = team_cols(team);
    let start = params.logits_base + team.row * params.cols;
    let out_start = params.out_base + team.row * params.cols;
    let st = row_stats(team, start, 0u, 0u, cols, NO_CLASS, MODE_PLAIN);
    write_softmax(team, start, out_start, cols, lse_of(st));
}

// A column index no class has.
const NO_CLASS = 0xffffffffu;

// C of the math: the whole vocabulary (a shard's `cols` are part of it).
fn classes() -> u32 {
    return select(params.classes, params.cols, params.classes == 0u);
}

// w_y of the row's target class (1 without weights; from the host for a shard).
fn target_class_weight(team: Team, t: RowTarget) -> f32 {
    if HAS_WEIGHTS && params.row_weights != 0u {
        return weights[params.row_weights + team.row];
    }
    return class_weight(select(0u, t.yc, t.valid));
}

// A row's target, as the loss needs it.
struct RowTarget {
    probs: bool,    // probability targets
    ignored: bool,  // the label is the ignore index
    valid: bool,    // probabilities, or a label in 0..cols
    yc: u32,        // the class, or NO_CLASS
    mode: u32,      // what pass 1 gathers
}

// The row's class. An out-of-range label (possible only through the device API, whose
// labels are not checked on the host) makes the row NaN instead of reading out of bounds.
fn row_target(team: Team) -> RowTarget {
    let probs = PROBS;
    var y = params.ignore_index;
    if team.row < params.rows && !probs {
        y = labels[params.row_base + team.row];
    }
    let ignored = !probs && y == params.ignore_index;
    let valid = probs || (!ignored && y >= 0 && u32(y) < classes());
    // The local column of the class (past `cols` when another shard holds it).
    let yc = select(NO_CLASS, u32(y) - params.class_base, valid && !probs);
    var mode = MODE_PLAIN;
    if probs {
        mode = MODE_PROBS;
    } else if smoothing_on() {
        mode = MODE_SMOOTHED;
    }
    return RowTarget(probs, ignored, valid, yc, mode);
}

// The row's loss and the gradient's coefficients: dz'_j = a p_j - b [j == y] - e c_j, where
// c_j = w_j (class targets) or w_j t'_j (probability targets).
struct Coefficients {
    loss: f32,
    a: f32,
    b: f32,
    e: f32,
    silent: bool,  // write zeros: the row is ignored or its gradient factor is 0
}

fn coefficients(team: Team, t: RowTarget, st: RowStats) -> Coefficients {
    let C = f32(classes());
    let eps = params.label_smoothing;
    let lse = lse_of(st);
    var k = reduction_factor();
    if params.has_upstream != 0u {
        k *= scales[UPSTREAM + params.row_offset + team.row];
    }
    // Terms whose coefficient is 0 are left out, not multiplied by 0: with a huge lse they
    // would overflow and 0 * inf is NaN (the reference does the same).
    var zloss = 0.0;
    var zgrad = 0.0;
    if params.z_loss > 0.0 {
        zloss = params.z_loss * lse * lse;
        zgrad = 2.0 * params.z_loss * lse;
    }
    var c: Coefficients;
    if t.probs {
        c = Coefficients(st.s2 * lse - st.s1 + zloss, k * (st.s2 + zgrad), 0.0, k, false);
    } else {
        let w_y = target_class_weight(team, t);
        var loss = (1.0 - eps) * w_y * (lse - st.s2) + zloss;
        var a = (1.0 - eps) * w_y + zgrad;
        if smoothing_on() {
            loss += eps / C * (params.weight_sum * lse - st.s1);
            a += eps * params.weight_sum / C;
        }
        c = Coefficients(loss, k * a, k * (1.0 - eps) * w_y, k * eps / C, false);
    }
    if !t.valid {
        // From a uniform, so that it is no constant expression: Tint (browsers) refuses
        // NaN as a constant.
        let nan = bitcast<f32>(0x7fc00000u | (params.rows & 0u));
        c.loss = nan;
        c.a = nan;
    }
    // No gradient flows from an ignored row, nor where the reduction's factor is 0 (a mean
    // over nothing): zeros, even where the row holds NaN (0 * NaN would be NaN).
    c.silent = t.ignored || k == 0.0;
    return c;
}

// Lane 0 writes the row's loss (0 when ignored) and lse.
fn write_row(team: Team, t: RowTarget, c: Coefficients, lse: f32) {
    if team.lane == 0u && team.row < params.rows {
        let r = params.row_base + team.row;
        row_loss[r] = select(c.loss, 0.0, t.ignored);
        row_lse[r] = lse;
    }
}

// Pass 2: the gradient of columns [col0, col0 + cols). Ignored rows write zeros whatever
// their logits hold.
fn write_gradient(team: Team, t: RowTarget, c: Coefficients, lse: f32,
                  start: u32, tstart: u32, out_start: u32, col0: u32, cols: u32) {
    let span = span_of(start, cols);
    let blocks = span.blocks;
    let stride = team.size;
    // STEP_BLOCKS blocks per iteration, as in pass 1 (fewer loop turns).
    var b = team.lane;
    if CACHE_BLOCKS > 0u {
        for (var k = 0u; k < CACHE_BLOCKS; k++) {
            let bk = team.lane + k * stride;
            if bk < blocks {
                gradient_of(t, c, lse, tstart, out_start, col0, block_col(span, bk), row_cache[k]);
            }
        }
        b = blocks;
    }
    for (; b + (STEP_BLOCKS - 1u) * stride < blocks; b += STEP_BLOCKS * stride) {
        let j = block_col(span, b);
        let d = stride * BLOCK;
        let z = load_step(start + j, stride);
        let g = Step(gradient4(t, c, lse, tstart, col0, j, capped4(z.z0)),
                     gradient4(t, c, lse, tstart, col0, j + d, capped4(z.z1)),
                     gradient4(t, c, lse, tstart, col0, j + 2u * d, capped4(z.z2)),
                     gradient4(t, c, lse, tstart, col0, j + 3u * d, capped4(z.z3)));
        store_step(out_start + j, stride, g);
    }
    if PAIRS && b + 1u < blocks {
        // Two leftover blocks still fill a unit (see load_step).
        let j = block_col(span, b);
        let z = load_logit8(start + j);
        store_out8(out_start + j, Pair(gradient4(t, c, lse, tstart, col0, j, capped4(z.a)),
                                       gradient4(t, c, lse, tstart, col0, j + BLOCK, capped4(z.b))));
        b += 2u;
    }
    for (; b < blocks; b += stride) {
        gradient_block(t, c, lse, start, tstart, out_start, col0, block_col(span, b));
    }
    for (var k = team.lane; k < span.loose; k += stride) {
        let j = loose_col(span, k);
        let col = col0 + j;
        let zc = capped(load_logit(start + j));
        var w: f32;
        if t.probs {
            w = target_weight(tstart + j, col);
        } else {
            w = class_weight(col);
        }
        var g = c.a * exp(zc - lse) - c.e * w;
        g -= select(0.0, c.b, col == t.yc);
        g *= cap_slope4(vec4<f32>(zc)).x;
        store_out(out_start + j, select(g, 0.0, c.silent));
    }
}

// The gradient of the block of 4 columns at `j` of the chunk (start + j a multiple of 4).
fn gradient_block(t: RowTarget, c: Coefficients, lse: f32,
                  start: u32, tstart: u32, out_start: u32, col0: u32, j: u32) {
    gradient_of(t, c, lse, tstart, out_start, col0, j, capped4(load_logit4(start + j)));
}

// The gradient of the block at `j` whose capped logits are `zc`.
fn gradient_of(t: RowTarget, c: Coefficients, lse: f32,
               tstart: u32, out_start: u32, col0: u32, j: u32, zc: vec4<f32>) {
    store_out4(out_start + j, gradient4(t, c, lse, tstart, col0, j, zc));
}

// The gradient of a block (column j of the chunk) of capped logits.
fn gradient4(t: RowTarget, c: Coefficients, lse: f32, tstart: u32, col0: u32, j: u32,
             zc: vec4<f32>) -> vec4<f32> {
    let col = col0 + j;
    var w: vec4<f32>;
    if t.probs {
        w = target_weight4(tstart + j, col);
    } else {
        w = class_weight4(col);
    }
    var g = c.a * exp(zc - vec4<f32>(lse)) - c.e * w;
    g -= select(vec4<f32>(0.0), vec4<f32>(c.b), vec4<u32>(col, col + 1u, col + 2u, col + 3u) == vec4<u32>(t.yc));
    g *= cap_slope4(zc);
    return select(g, vec4<f32>(0.0), c.silent);
}

// Fused cross-entropy of a whole row per team: loss, lse, and the gradient.
fn cross_entropy_row(team: Team) {
    if WHOLE_BATCH && params.whole_batch == WHOLE_BATCH_MEAN {
        whole_batch_denominator(team);
    }
    if WHOLE_BATCH && params.whole_batch == BATCH_DENOMINATOR {
        workgroup_denominator(team);
    }
    let cols = team_cols(team);
    let start = params.logits_base + team.row * params.cols;
    let tstart = params.targets_base + team.row * params.cols;
    let out_start = params.out_base + team.row * params.cols;
    let t = row_target(team);
    let st = row_stats(team, start, tstart, 0u, cols, t.yc, t.mode);
    // Idle lanes past the last row: the reductions above were their only duty (but for the
    // whole batch's barrier below).
    if team.row < params.rows {
        let c = coefficients(team, t, st);
        let lse = lse_of(st);
        write_row(team, t, c, lse);
        write_gradient(team, t, c, lse, start, tstart, out_start, 0u, cols);
    }
    if WHOLE_BATCH && params.whole_batch != BATCH_DENOMINATOR {
        whole_batch_loss(team);
    }
}

// ---- the whole batch in one workgroup (WHOLE_BATCH) ----
// The workgroup's first lane (row 0, lane 0) sums over the rows in row order, with Kahan
// compensation as batch_sum.wgsl does; a whole batch is a few rows (8 for one lane per row),
// so a tree would save nothing. `storageBarrier()` is a barrier for the workgroup's lanes that
// also makes their earlier writes to storage visible to one another: it orders the writes of
// `scales` and `row_loss` before the reads. It measured faster on lavapipe than the three
// dispatches (denominator, rows, loss sum) it replaces. The sum loops run to the constant
// WORKGROUP_SIZE and skip the rows past params.rows: a loop bounded by params.rows itself (or
// left by `break`), and every lane running the loop instead of the first only, were both far
// slower there. We do not know why; both shapes are measured, not guessed (BENCHMARKS.md,
// "What moved the kernel", the WHOLE_BATCH rows).

fn is_first_lane(team: Team) -> bool {
    return team.row == 0u && team.lane == 0u;
}

// w_y of a label, 0 for an ignored or out-of-range one (as batch_sum.wgsl's target_weight).
fn label_weight(y: i32) -> f32 {
    if y == params.ignore_index || y < 0 || u32(y) >= params.cols {
        return 0.0;
    }
    return class_weight(u32(y));
}

// A mean's denominator D (stats[1] += sum of w_y over the rows) and its factor stats[0] =
// 1 / D (0 for none), before any lane reads stats[0] in `coefficients`.
fn whole_batch_denominator(team: Team) {
    if is_first_lane(team) {
        var total = Kahan(0.0, 0.0);
        for (var r = 0u; r < WORKGROUP_SIZE; r++) {
            if r < params.rows {
                kahan_add(&total, label_weight(labels[params.row_base + r]));
            }
        }
        let d = scales[1] + total.sum;
        scales[1] = d;
        scales[0] = select(0.0, 1.0 / d, d > 0.0);
    }
    storageBarrier();
}

// The reduced loss: stats[2] += stats[0] * sum of the row losses, once every row's loss is
// written. A factor of 0 (a mean over nothing) adds nothing, even if a row loss is NaN.
fn whole_batch_loss(team: Team) {
    storageBarrier();
    if is_first_lane(team) && scales[0] != 0.0 {
        var total = Kahan(0.0, 0.0);
        for (var r = 0u; r < WORKGROUP_SIZE; r++) {
            if r < params.rows {
                kahan_add(&total, row_loss[params.row_base + r]);
            }
        }
        scales[2] += scales[0] * total.sum;
    }
}

// ---- the mean's denominator in every workgroup (BATCH_DENOMINATOR) ----
// A batch of several workgroups whose labels are few beside its logits (the host's rule:
// geometry::denominator_in_each_workgroup) skips batch_sum's `target_weight_sum` dispatch:
// each workgroup reads all `rows` labels (the same small array, cached after the first
// workgroup) and sums D = sum of w_y itself, lanes strided over the labels with Kahan
// compensation, then `workgroup_total` (the team file: a fixed-order tree). Every workgroup
// runs the same code on the same labels in the same order, so all get the same bits, and
// the same bits on every run. No workgroup reads another's writes (WGSL orders storage
// only within a workgroup): each keeps its factor in `batch_factor`; row 0's first lane
// also stores D and 1 / D in stats[1], stats[0] for the loss-sum dispatch that follows.

var<private> batch_factor: f32; // 1 / D (0 for none), in every lane

fn workgroup_denominator(team: Team) {
    var part = Kahan(0.0, 0.0);
    for (var r = workgroup_lane(); r < params.rows; r += WORKGROUP_SIZE) {
        kahan_add(&part, label_weight(labels[params.row_base + r]));
    }
    let d = workgroup_total(part.sum);
    batch_factor = select(0.0, 1.0 / d, d > 0.0);
    if is_first_lane(team) {
        scales[1] = d;
        scales[0] = batch_factor;
    }
}

// The factor of the reduction, k of the math without the upstream gradient.
fn reduction_factor() -> f32 {
    if WHOLE_BATCH && params.whole_batch == BATCH_DENOMINATOR {
        return batch_factor;
    }
    return scales[0];
}

// ---- the split layout: one workgroup per (chunk, row) ----

fn chunk_count() -> u32 {
    return (params.cols + params.col_chunk - 1u) / params.col_chunk;
}

// Columns of chunk `chunk` in this team's row (0 past the last row or column).
fn chunk_cols(team: Team, chunk: u32) -> u32 {
    let col0 = chunk * params.col_chunk;
    if team.row >= params.rows || col0 >= params.cols {
        return 0u;
    }
    return min(params.col_chunk, params.cols - col0);
}

fn partial_index(team: Team, chunk: u32) -> u32 {
    return params.partials_base + 4u * (team.row * chunk_count() + chunk);
}

fn split_target(team: Team) -> RowTarget {
    if params.softmax != 0u {
        return RowTarget(false, false, true, NO_CLASS, MODE_PLAIN);
    }
    return row_target(team);
}

// Split pass 1: the chunk's partial stats into `scales`.
fn split_stats(team: Team, chunk: u32) {
    let col0 = chunk * params.col_chunk;
    let cols = chunk_cols(team, chunk);
    let start = params.logits_base + team.row * params.cols + col0;
    let tstart = params.targets_base + team.row * params.cols + col0;
    let t = split_target(team);
    let st = row_stats(team, start, tstart, col0, cols, t.yc, t.mode);
    if team.lane == 0u && cols > 0u {
        let i = partial_index(team, chunk);
        scales[i] = st.m;
        scales[i + 1u] = st.d;
        scales[i + 2u] = st.s1;
        scales[i + 3u] = st.s2;
    }
}

// Split pass 2: merge the row's partials in chunk order, then write this chunk.
fn split_write(team: Team, chunk: u32) {
    let cols = chunk_cols(team, chunk);
    if cols == 0u {
        return; // no barrier follows: a whole workgroup returns together
    }
    var st = RowStats(LOWEST, 0.0, 0.0, 0.0);
    for (var k = 0u; k < chunk_count(); k += 1u) {
        let i = partial_index(team, k);
        st = merge(st, RowStats(scales[i], scales[i + 1u], scales[i + 2u], scales[i + 3u]));
    }
    let lse = lse_of(st);
    let col0 = chunk * params.col_chunk;
    let start = params.logits_base + team.row * params.cols + col0;
    let out_start = params.out_base + team.row * params.cols + col0;
    if params.softmax != 0u {
        write_softmax(team, start, out_start, cols, lse);
        return;
    }
    let tstart = params.targets_base + team.row * params.cols + col0;
    let t = row_target(team);
    let c = coefficients(team, t, st);
    if chunk == 0u {
        write_row(team, t, c, lse);
    }
    write_gradient(team, t, c, lse, start, tstart, out_start, col0, cols);
}
