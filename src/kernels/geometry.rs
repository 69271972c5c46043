//! Dispatch geometry: how many lanes share a row (the team), how many lanes a workgroup has,
//! how a grid of workgroups covers the rows, and the sizes the layouts hold (register cache,
//! split chunks). A strategy ([`Strategy`]) fixes them; nothing here depends on the adapter
//! but its limits (llvmpipe's loop limit is in `software.rs`).

use super::strategy::Strategy;
use super::variant::TeamKind;
use crate::context::Context;
use crate::error::{Error, Result};

/// Lanes per workgroup of the workgroup-tree strategy (or the team size, when larger).
pub const WORKGROUP_LANES: u32 = 256;
/// Lanes per workgroup of the subgroup strategy, which depends on the subgroup size: one
/// row per subgroup, so 64 / size rows per workgroup (16 at 4 lanes, 8 on lavapipe's default
/// 8, 2 on NVIDIA's 32, 1 on AMD's 64), and one whole subgroup when the subgroup is larger
/// (`subgroup_shape`).
pub const SUBGROUP_WORKGROUP_LANES: u32 = 64;
/// The largest workgroup the shaders' workgroup-memory scratch supports.
pub const MAX_WORKGROUP_LANES: u32 = 1024;
/// Workgroups per grid dimension that every adapter accepts (WebGPU's limit).
pub const MAX_GRID_DIM: u32 = 65535;

/// A 2-D grid of workgroups covering `workgroups` (x at most [`MAX_GRID_DIM`]); the shaders
/// rebuild the linear index as `id.x + id.y * count.x` and idle past the end.
pub fn grid(workgroups: u64) -> Result<(u32, u32)> {
    let x = workgroups.clamp(1, u64::from(MAX_GRID_DIM));
    let y = workgroups.div_ceil(x);
    let y = u32::try_from(y)
        .ok()
        .filter(|y| *y <= MAX_GRID_DIM)
        .ok_or_else(|| Error::Validation(format!("{workgroups} workgroups exceed the grid")))?;
    Ok((x as u32, y))
}

/// Split layout: columns each workgroup owns. 16,384 columns are 64 per lane of a 256-lane
/// workgroup: enough to hide the merge of the partials, few enough that a 262,144-column row
/// spreads over 16 workgroups.
pub const SPLIT_CHUNK_COLS: u32 = 16384;

/// Floats of partial results the split layout keeps in the scales buffer for `rows` rows of
/// `cols` columns (0 for the other strategies).
pub fn partials_len(strategy: Strategy, rows: usize, cols: usize) -> usize {
    if strategy.is_split() {
        4 * rows * cols.div_ceil(SPLIT_CHUNK_COLS as usize)
    } else {
        0
    }
}

/// `Strategy::SplitCache`'s default cache budget: bytes of logits one group of rows may
/// hold, so that pass 2 finds them in the L2 cache where pass 1 left them. Pass 2 also
/// writes as many bytes of gradient while it reads, so a group should take at most about
/// half the cache: 16 MiB is under half the L2 of A100 (40 MB) and H100 / H200 (50 MB) with
/// room to spare. GPUs with a smaller last-level cache want less (`ContextOptions::
/// split_cache_bytes`); a group too small leaves the GPU idle between dispatches, a
/// trade-off only hardware can settle (BENCHMARKS.md, "Issue 14 item 3": not yet measured on
/// a GPU).
pub const SPLIT_CACHE_BYTES: u64 = 16 << 20;

/// Rows per group of `Strategy::SplitCache` (whose two passes alternate group by group):
/// as many rows of `row_bytes` bytes of logits as fit `budget` bytes, at least one, at most
/// `rows`. The groups cover the rows in order; each row's work is the same in any group.
pub fn split_group_rows(rows: u32, row_bytes: u64, budget: u64) -> u32 {
    let fit = budget / row_bytes.max(1);
    u32::try_from(fit).unwrap_or(u32::MAX).clamp(1, rows.max(1))
}

/// Whether a dispatch of `rows` rows in `strategy` is a single workgroup, so that a
/// cross-entropy can do the batch's sums in it (`params.whole_batch`): one dispatch instead of
/// three, which is most of a small batch's time on lavapipe (BENCHMARKS.md, "What moved the
/// kernel", the `WHOLE_BATCH` row). Only
/// for workgroup teams: the split layout takes two dispatches anyway, and how many rows a
/// subgroup-team workgroup holds depends on the subgroup size the hardware picks.
pub fn one_workgroup(strategy: Strategy, rows: u32) -> bool {
    match strategy {
        Strategy::Workgroup { lanes } => rows <= workgroup_lanes(lanes, rows) / lanes,
        Strategy::Cached { .. } => rows <= 1,
        Strategy::Subgroup
        | Strategy::Split { .. }
        | Strategy::SplitCache { .. }
        | Strategy::Auto => false,
    }
}

/// Whether each workgroup of a row dispatch of `rows` rows of `cols` columns, in
/// `workgroups` workgroups of `workgroup_size` lanes, may sum the mean's denominator over all
/// `rows` labels itself (`row_softmax::BATCH_DENOMINATOR`), which saves batch_sum's
/// denominator dispatch: when those redundant label reads (`workgroups * rows` of them) stay
/// within 1 / [`REDUNDANT_LABEL_SHARE`] of the logits read (`rows * cols`), i.e.
/// `workgroups * REDUNDANT_LABEL_SHARE <= cols`, and each lane's share of the labels stays
/// within half of llvmpipe's loop limit. Not for the split layout (two dispatches anyway).
/// Why a share of the bytes and not a row count: the dispatch it saves costs a fixed time,
/// the reads grow with `workgroups * rows`; BENCHMARKS.md ("Fewer dispatches") has what it
/// measured on lavapipe and what a GPU would need to confirm.
pub fn denominator_in_each_workgroup(
    strategy: Strategy,
    rows: u32,
    cols: u32,
    workgroups: u64,
    workgroup_size: u32,
) -> bool {
    let turns = u64::from(rows.div_ceil(workgroup_size.max(1)));
    !strategy.is_split()
        && strategy != Strategy::Auto
        && workgroups * REDUNDANT_LABEL_SHARE <= u64::from(cols)
        && turns <= super::software::SOFTWARE_LOOP_TURNS / 2
}

/// Labels read by every workgroup (see [`denominator_in_each_workgroup`]) may add at most
/// 1 / this of the logits' reads.
pub const REDUNDANT_LABEL_SHARE: u64 = 16;

/// Lanes per workgroup of `Workgroup { lanes }` over `rows` rows.
///
/// Teams of 2+ lanes share [`WORKGROUP_LANES`]-lane workgroups (or one workgroup per row past
/// that). One lane per row needs no barrier, so the workgroup only decides how rows spread
/// over workgroups: [`ROW_PER_LANE_LANES`] rows each, or [`ROW_PER_LANE_FEW_LANES`] when that
/// would leave fewer than [`ROW_PER_LANE_MIN_WORKGROUPS`] workgroups. Why: lavapipe runs a
/// workgroup on one of its 2 threads, so too few workgroups leave a thread idle, and small
/// workgroups cost more per row; since lanes take rows interleaved (team_workgroup.wgsl,
/// `row_per_lane`), 256-lane workgroups beat 64-lane ones for many rows (BENCHMARKS.md, "What
/// moved the kernel", and "Figures moved from code comments"). Two sizes only, as every size
/// is another pipeline to compile (seconds each on lavapipe).
pub fn workgroup_lanes(lanes: u32, rows: u32) -> u32 {
    if lanes > 1 {
        lanes.max(WORKGROUP_LANES)
    } else if rows >= ROW_PER_LANE_MIN_WORKGROUPS * ROW_PER_LANE_LANES {
        ROW_PER_LANE_LANES
    } else {
        ROW_PER_LANE_FEW_LANES
    }
}

/// One lane per row: lanes (rows) per workgroup.
pub const ROW_PER_LANE_LANES: u32 = 256;
/// One lane per row, few rows: lanes per workgroup (a whole subgroup on most adapters).
pub const ROW_PER_LANE_FEW_LANES: u32 = 8;
/// One lane per row: the fewest workgroups worth spreading the rows over (2 per thread of
/// llvmpipe's 2-thread pool here; GPUs get many more from long batches anyway).
pub const ROW_PER_LANE_MIN_WORKGROUPS: u32 = 4;

/// The most vec4s a lane of `Strategy::Cached` holds (`MAX_CACHE_BLOCKS` in
/// row_softmax.wgsl): 64 registers, what the register-resident softmax kernels of Triton or
/// QuACK give a thread; rows up to `64 * lanes` columns.
pub const MAX_CACHE_BLOCKS: u32 = 16;

/// The longest row `Strategy::Cached { lanes }` holds: `MAX_CACHE_BLOCKS` vec4s per lane.
/// The same in f32, f16 and bf16: the row is held as f32 (the arithmetic's format), so the
/// limit is registers per lane, not bytes of the stored row. Holding halves packed two per
/// register would double it for f16 / bf16 at the cost of unpacking in pass 2; not done
/// (tests/read_once.rs checks all three formats up to this limit).
pub fn cached_max_cols(lanes: u32) -> u32 {
    4 * MAX_CACHE_BLOCKS * lanes
}

/// `CACHE_BLOCKS` for `Strategy::Cached { lanes }` over rows of `cols` columns: the smallest
/// power of two of vec4s per lane that covers the row (powers of two, so few pipelines), or
/// `None` past [`MAX_CACHE_BLOCKS`].
pub fn cache_blocks(cols: u32, lanes: u32) -> Option<u32> {
    let blocks = cols.div_ceil(4).div_ceil(lanes).max(1).next_power_of_two();
    (blocks <= MAX_CACHE_BLOCKS).then_some(blocks)
}

/// Lanes per workgroup and per row (team) of `Strategy::Subgroup` on an adapter whose
/// subgroups have `size` lanes: one subgroup per row, [`SUBGROUP_WORKGROUP_LANES`] lanes per
/// workgroup or one subgroup when larger, so `workgroup / size` rows per workgroup (8 at 8
/// lanes, 2 at 32, 1 at 64). The workgroup is a whole number of subgroups (both powers of
/// two), which team_subgroup.wgsl needs: it numbers rows `workgroup * num_subgroups +
/// subgroup_id`, so the host's grid (`record`: rows / (workgroup / size) workgroups) covers
/// every row only if the size it was given is the size the shader runs at (see
/// `context::usable_subgroup_size`).
pub fn subgroup_shape(size: u32) -> (u32, u32) {
    (SUBGROUP_WORKGROUP_LANES.max(size), size)
}

/// The team file a strategy runs: one subgroup per row for `Subgroup`, lanes of a
/// workgroup for every other.
pub fn team_kind(strategy: Strategy) -> TeamKind {
    match strategy {
        Strategy::Subgroup => TeamKind::Subgroup,
        _ => TeamKind::Workgroup,
    }
}

/// Workgroup size and team size of a concrete strategy on this context, for a dispatch of
/// `rows` rows.
pub fn shape_of(ctx: &Context, strategy: Strategy, rows: u32) -> Result<(u32, u32)> {
    let max = ctx
        .limits
        .max_compute_invocations_per_workgroup
        .min(ctx.limits.max_compute_workgroup_size_x)
        .min(MAX_WORKGROUP_LANES);
    let (workgroup, team) = match strategy {
        Strategy::Workgroup { lanes } => (workgroup_lanes(lanes, rows), lanes),
        Strategy::Split { lanes } | Strategy::SplitCache { lanes } | Strategy::Cached { lanes } => {
            (lanes, lanes)
        }
        Strategy::Subgroup => {
            // The one subgroup size the host may rely on (context::usable_subgroup_size).
            let size = ctx.subgroup_size().ok_or_else(|| Error::Unsupported {
                adapter: ctx.adapter_info().name.clone(),
                what: format!(
                    "the subgroup strategy does not run here: {}",
                    ctx.subgroup_refusal().unwrap_or("no usable subgroup size")
                ),
            })?;
            subgroup_shape(size)
        }
        Strategy::Auto => {
            return Err(Error::Validation(
                "Strategy::Auto must be resolved first".into(),
            ));
        }
    };
    if workgroup > max || !team.is_power_of_two() {
        return Err(Error::Unsupported {
            adapter: ctx.adapter_info().name.clone(),
            what: format!("strategy {strategy} needs {workgroup} lanes per workgroup (max {max})"),
        });
    }
    Ok((workgroup, team))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_lane_per_row_spreads_few_rows_over_small_workgroups() {
        assert_eq!(workgroup_lanes(1, 8), 8, "8 rows: one 8-lane workgroup");
        assert_eq!(workgroup_lanes(1, 64), 8, "64 rows: 8 workgroups, not 1");
        assert_eq!(workgroup_lanes(1, 1023), 8);
        assert_eq!(
            workgroup_lanes(1, 1024),
            256,
            "1024 rows: 4 workgroups of 256"
        );
        assert_eq!(
            workgroup_lanes(8, 5),
            256,
            "teams share 256-lane workgroups"
        );
        assert_eq!(workgroup_lanes(512, 5), 512, "or take one to themselves");
    }

    #[test]
    fn a_whole_batch_is_the_rows_of_one_workgroup_team_workgroup() {
        let wg = |lanes| Strategy::Workgroup { lanes };
        // One lane per row: 8-lane workgroups for few rows.
        assert!(one_workgroup(wg(1), 8) && !one_workgroup(wg(1), 9));
        // Teams of 8 share WORKGROUP_LANES-lane workgroups.
        let rows = WORKGROUP_LANES / 8;
        assert!(one_workgroup(wg(8), rows) && !one_workgroup(wg(8), rows + 1));
        assert!(one_workgroup(wg(256), 1) && !one_workgroup(wg(256), 2));
        let cached = Strategy::Cached { lanes: 256 };
        assert!(one_workgroup(cached, 1) && !one_workgroup(cached, 2));
        // Two dispatches anyway, or rows per workgroup known only to the hardware.
        assert!(!one_workgroup(Strategy::Split { lanes: 256 }, 1));
        assert!(!one_workgroup(Strategy::SplitCache { lanes: 256 }, 1));
        assert!(!one_workgroup(Strategy::Subgroup, 1));
    }

    #[test]
    fn split_groups_hold_the_rows_the_budget_allows() {
        let mib = 1u64 << 20;
        // 64 x 262,144 f32: 1 MiB a row, 16 rows a group, 4 groups.
        assert_eq!(split_group_rows(64, mib, SPLIT_CACHE_BYTES), 16);
        // The same rows in bf16 / f16: twice as many rows a group.
        assert_eq!(split_group_rows(64, mib / 2, SPLIT_CACHE_BYTES), 32);
        // A batch within the budget is one group: the order of `Split`.
        assert_eq!(split_group_rows(16, mib, SPLIT_CACHE_BYTES), 16);
        // A row larger than the budget is a group of its own; never 0 rows.
        assert_eq!(split_group_rows(5, 64 * mib, SPLIT_CACHE_BYTES), 1);
        assert_eq!(split_group_rows(0, mib, SPLIT_CACHE_BYTES), 1);
        assert_eq!(split_group_rows(7, 0, SPLIT_CACHE_BYTES), 7);
    }

    #[test]
    fn each_workgroup_sums_the_denominator_where_the_labels_are_few() {
        let wg1 = Strategy::Workgroup { lanes: 1 };
        // The bench's shapes on lavapipe (wg1): 256 rows per workgroup from 1024 rows.
        assert!(!denominator_in_each_workgroup(wg1, 16384, 128, 64, 256));
        assert!(denominator_in_each_workgroup(wg1, 8192, 1000, 32, 256));
        assert!(denominator_in_each_workgroup(wg1, 1024, 32000, 4, 256));
        assert!(denominator_in_each_workgroup(wg1, 64, 262144, 8, 8));
        // 64x1000 in subgroup teams of 8 lanes: 8 workgroups of 64 lanes.
        assert!(denominator_in_each_workgroup(
            Strategy::Subgroup,
            64,
            1000,
            8,
            64
        ));
        // The bound itself, and never for the split layout.
        assert!(denominator_in_each_workgroup(wg1, 100, 160, 10, 8));
        assert!(!denominator_in_each_workgroup(wg1, 100, 159, 10, 8));
        let split = Strategy::Split { lanes: 256 };
        assert!(!denominator_in_each_workgroup(split, 4, 262144, 64, 256));
        let split_cache = Strategy::SplitCache { lanes: 256 };
        assert!(!denominator_in_each_workgroup(
            split_cache,
            4,
            262144,
            64,
            256
        ));
    }

    #[test]
    fn the_register_cache_covers_the_row_in_powers_of_two() {
        assert_eq!(cache_blocks(1, 32), Some(1));
        assert_eq!(cache_blocks(1000, 256), Some(1), "250 blocks, 256 lanes");
        assert_eq!(cache_blocks(1028, 256), Some(2), "257 blocks");
        assert_eq!(cache_blocks(4097, 256), Some(8), "1025 blocks: 5 per lane");
        assert_eq!(
            cache_blocks(16384, 256),
            Some(16),
            "the longest row of cached256"
        );
        assert_eq!(cache_blocks(16385, 256), None);
        assert_eq!(cache_blocks(65536, 1024), Some(16));
    }
}
