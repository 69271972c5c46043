// Team = one subgroup; the workgroup holds as many rows as it has subgroups. The reduction is
// subgroupMax then subgroupAdd: no workgroup memory and no barrier. Needs Features::SUBGROUP.
// Defines: WORKGROUP_SIZE (override), team_stats, workgroup_lane, workgroup_total, Lanes (the
//   builtins), team_of and the entry points softmax_main, cross_entropy_main.
// Needs: Features::SUBGROUP; RowStats, Team, softmax_row, cross_entropy_row (row_softmax.wgsl).
//
// What depends on the subgroup size (4 on some mobile GPUs, 8 to 32 on Intel, 32 on NVIDIA
// and Apple, 32 or 64 on AMD):
//   - a lane strides its row by `subgroup_size` blocks (the builtin, so the stride is the
//     size the subgroup runs at);
//   - the workgroup's rows are numbered by `num_subgroups` and `subgroup_id`: row
//     `workgroup * num_subgroups + subgroup_id`;
//   - the host, which sizes the grid before the dispatch, assumes WORKGROUP_SIZE / size rows
//     per workgroup for the one size it relies on (row_softmax::subgroup_shape; WORKGROUP_SIZE
//     is a whole number of subgroups). A subgroup larger than that would leave rows
//     unwritten, so the host uses this file only where the size is fixed and is the size run
//     (context::usable_subgroup_size refuses sizes that vary at run time, and llvmpipe's
//     reported 32 and 64, of which it runs 16).
// Every lane of the workgroup is active (no early return before team_stats), so the
// subgroup operations see whole subgroups.

// Lanes per workgroup; rows per workgroup = WORKGROUP_SIZE / subgroup size.
override WORKGROUP_SIZE: u32 = 64u;

// The team's stats: the row max first, then every lane's sum rescaled to it, added at once.
fn team_stats(st: RowStats) -> RowStats {
    let row_max = subgroupMax(st.m);
    let sums = subgroupAdd(vec3<f32>(st.d * exp(st.m - row_max), st.s1, st.s2));
    return RowStats(row_max, sums.x, sums.y, sums.z);
}

// The batch's sums (row_softmax.wgsl, BATCH_DENOMINATOR): this lane's index in the
// workgroup, and the sum of `x` over the workgroup's lanes, in every lane: a tree in
// workgroup memory in a fixed order (not subgroupAdd, whose order is the hardware's), each
// step ended by a barrier so the next reads finished sums, the last so `lane_sums` may be
// written again. The workgroup is at most 128 lanes (64, or one subgroup of up to 128:
// context::usable_subgroup_size).
const MAX_WORKGROUP_SIZE = 128u;
var<workgroup> lane_sums: array<f32, MAX_WORKGROUP_SIZE>;
var<private> lane_index: u32; // set by team_of

fn workgroup_lane() -> u32 {
    return lane_index;
}

fn workgroup_total(x: f32) -> f32 {
    lane_sums[lane_index] = x;
    workgroupBarrier();
    for (var stride = WORKGROUP_SIZE / 2u; stride > 0u; stride /= 2u) {
        if lane_index < stride {
            lane_sums[lane_index] += lane_sums[lane_index + stride];
        }
        workgroupBarrier();
    }
    let total = lane_sums[0];
    workgroupBarrier();
    return total;
}

fn workgroup_index(id: vec3<u32>, count: vec3<u32>) -> u32 {
    return id.x + id.y * count.x;
}

// The builtins of an entry point: the lane's place in its subgroup, and the subgroup's in
// the grid.
struct Lanes {
    @builtin(subgroup_invocation_id) sg_lane: u32,
    @builtin(subgroup_size) sg_size: u32,
    @builtin(subgroup_id) sg_id: u32,
    @builtin(num_subgroups) sg_count: u32,
    @builtin(workgroup_id) id: vec3<u32>,
    @builtin(num_workgroups) count: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
}

fn team_of(l: Lanes) -> Team {
    lane_index = l.local;
    return Team(workgroup_index(l.id, l.count) * l.sg_count + l.sg_id, l.sg_lane, l.sg_size);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn softmax_main(lanes: Lanes) {
    softmax_row(team_of(lanes));
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn cross_entropy_main(lanes: Lanes) {
    cross_entropy_row(team_of(lanes));
}
