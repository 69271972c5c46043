// Team = TEAM_SIZE consecutive lanes of a workgroup; the workgroup holds
// WORKGROUP_SIZE / TEAM_SIZE rows. The reduction is one barrier tree in workgroup memory over
// the lanes' whole RowStats (max, sum-exp and the two extra sums): lane i of a team owns slot
// `team_base + i`; at each step the lower half of the team folds in the upper half with the
// online-softmax merge (`merge` in row_softmax.wgsl: rescale both sums to the larger max), in
// log2(TEAM_SIZE) steps; every step ends in a workgroupBarrier so the next step reads
// finished values, and a last barrier lets the slots be reused. One tree, not a max tree and
// then a sum tree: half the barriers (log2(TEAM_SIZE) + 2 per row instead of
// 2 log2(TEAM_SIZE) + 4), which is what a barrier costs on lavapipe: a coroutine switch.
// TEAM_SIZE 1 is one lane per row: a lane's own stats are the row's, so no tree at all
// (TEAM_SIZE is an override, so the tree is compiled out).
// Works on every adapter (no subgroup feature needed).
// Defines: WORKGROUP_SIZE, TEAM_SIZE (overrides), team_stats, workgroup_lane,
//   workgroup_total, team_of and the entry points softmax_main, cross_entropy_main,
//   split_stats_main, split_write_main.
// Needs: RowStats, Team, merge, softmax_row, cross_entropy_row, split_stats, split_write
//   (row_softmax.wgsl).

// Lanes per workgroup (a power of two, at most MAX_WORKGROUP_SIZE).
override WORKGROUP_SIZE: u32 = 256u;
// Lanes per row (a power of two dividing WORKGROUP_SIZE).
override TEAM_SIZE: u32 = 256u;
// Size of the workgroup-memory scratch: the largest workgroup this file supports.
const MAX_WORKGROUP_SIZE = 1024u;

// One RowStats (as a vec4: m, d, s1, s2) per lane: 16 KiB at 1024 lanes, the smallest
// workgroup storage every WebGPU adapter offers.
var<workgroup> scratch: array<vec4<f32>, MAX_WORKGROUP_SIZE>;
var<private> lane_index: u32; // set by the entry point: the lane's slot in the scratch

fn team_base() -> u32 {
    return lane_index - lane_index % TEAM_SIZE;
}

fn to_vec4(st: RowStats) -> vec4<f32> {
    return vec4<f32>(st.m, st.d, st.s1, st.s2);
}

fn from_vec4(v: vec4<f32>) -> RowStats {
    return RowStats(v.x, v.y, v.z, v.w);
}

// The team's stats, merged in a fixed order (so results are bit-reproducible).
fn team_stats(st: RowStats) -> RowStats {
    if TEAM_SIZE == 1u {
        return st;
    }
    scratch[lane_index] = to_vec4(st);
    workgroupBarrier();
    let lane = lane_index % TEAM_SIZE;
    for (var stride = TEAM_SIZE / 2u; stride > 0u; stride /= 2u) {
        if lane < stride {
            let mine = from_vec4(scratch[lane_index]);
            let theirs = from_vec4(scratch[lane_index + stride]);
            scratch[lane_index] = to_vec4(merge(mine, theirs));
        }
        workgroupBarrier();
    }
    let result = from_vec4(scratch[team_base()]);
    workgroupBarrier();
    return result;
}

// The batch's sums (row_softmax.wgsl, BATCH_DENOMINATOR): this lane's index in the
// workgroup, and the sum of `x` over the workgroup's lanes, in every lane. A tree in the
// scratch's first component, in a fixed order (bit-reproducible); called before team_stats
// uses the scratch, the barrier after the read lets it.
fn workgroup_lane() -> u32 {
    return lane_index;
}

fn workgroup_total(x: f32) -> f32 {
    scratch[lane_index].x = x;
    workgroupBarrier();
    for (var stride = WORKGROUP_SIZE / 2u; stride > 0u; stride /= 2u) {
        if lane_index < stride {
            scratch[lane_index].x += scratch[lane_index + stride].x;
        }
        workgroupBarrier();
    }
    let total = scratch[0].x;
    workgroupBarrier();
    return total;
}

// The workgroup's place in a 2-D grid (x is capped at 65535 workgroups per dimension).
fn workgroup_index(id: vec3<u32>, count: vec3<u32>) -> u32 {
    return id.x + id.y * count.x;
}

// One lane per row: which row lane `local` of its workgroup takes. llvmpipe runs SIMD_LANES
// consecutive lanes in step (one 256-bit vector of f32), so a workgroup is
// WORKGROUP_SIZE / SIMD_LANES groups run one after another. Lane i of group g takes row
// i * (WORKGROUP_SIZE / SIMD_LANES) + g of the workgroup's rows: the lanes in step walk rows
// far apart, and neighbouring rows are walked by successive groups. With lane i on row
// g * SIMD_LANES + i instead, the 8 lanes in step walked 8 neighbouring rows at once: for
// 128-column rows (512 bytes, 8 to a 4 KiB page) that is 8 interleaved walks through one
// page, which, as we read it, the CPU's stream prefetcher (one stream per page) cannot
// follow. It measured faster on lavapipe for rows shorter than a page, and moved rows of a
// page or more little (BENCHMARKS.md, "What moved the kernel", the `row_per_lane` row). It
// is a permutation of the workgroup's rows (any
// WORKGROUP_SIZE that SIMD_LANES divides; the 8-lane workgroups are unchanged), so
// results are the same on every adapter.
const SIMD_LANES = 8u;

fn row_per_lane(local: u32) -> u32 {
    if WORKGROUP_SIZE % SIMD_LANES != 0u {
        return local;
    }
    return (local % SIMD_LANES) * (WORKGROUP_SIZE / SIMD_LANES) + local / SIMD_LANES;
}

fn team_of(local: u32, id: vec3<u32>, count: vec3<u32>) -> Team {
    lane_index = local;
    let rows_per_workgroup = WORKGROUP_SIZE / TEAM_SIZE;
    var row_in_workgroup = local / TEAM_SIZE;
    if TEAM_SIZE == 1u {
        row_in_workgroup = row_per_lane(local);
    }
    let row = workgroup_index(id, count) * rows_per_workgroup + row_in_workgroup;
    return Team(row, local % TEAM_SIZE, TEAM_SIZE);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn softmax_main(@builtin(local_invocation_index) local: u32,
                @builtin(workgroup_id) id: vec3<u32>,
                @builtin(num_workgroups) count: vec3<u32>) {
    softmax_row(team_of(local, id, count));
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn cross_entropy_main(@builtin(local_invocation_index) local: u32,
                      @builtin(workgroup_id) id: vec3<u32>,
                      @builtin(num_workgroups) count: vec3<u32>) {
    cross_entropy_row(team_of(local, id, count));
}

// The split layout (see row_softmax.wgsl): the whole workgroup is one team
// (TEAM_SIZE == WORKGROUP_SIZE); workgroup (x, y) owns chunk x of row y of the dispatch.
fn split_team(local: u32, id: vec3<u32>) -> Team {
    lane_index = local;
    return Team(id.y, local % TEAM_SIZE, TEAM_SIZE);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn split_stats_main(@builtin(local_invocation_index) local: u32,
                    @builtin(workgroup_id) id: vec3<u32>) {
    split_stats(split_team(local, id), id.x);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn split_write_main(@builtin(local_invocation_index) local: u32,
                    @builtin(workgroup_id) id: vec3<u32>) {
    split_write(split_team(local, id), id.x);
}
