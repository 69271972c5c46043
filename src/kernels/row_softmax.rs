//! Row softmax and fused cross-entropy (`shaders/row_softmax.wgsl` behind a team file).
//!
//! Dispatch math: a strategy fixes the lanes per row (the team) and the lanes per workgroup;
//! a workgroup holds `workgroup_size / team` rows, and the grid holds enough workgroups for
//! the rows of one chunk (2-D past 65,535 workgroups).

use bytemuck::{Pod, Zeroable};

use super::{
    Binding, Io, ModuleKey, PipelineKey, Precision, Slice, Specialisation, Strategy, TeamKind, grid,
};
use super::{MAX_WORKGROUP_LANES, SUBGROUP_WORKGROUP_LANES, WORKGROUP_LANES};
use crate::context::Context;
use crate::error::{Error, Result};

/// Bindings of row_softmax.wgsl (with any io file): params, logits, labels, weights, scales,
/// targets, out, row_loss, row_lse, and the output again (the vector io files' scalar view
/// `out_words`; the scalar io files leave it unused).
pub const BINDINGS: &[(u32, Binding)] = &[
    (0, Binding::Uniform),
    (1, Binding::Read),
    (2, Binding::Read),
    (3, Binding::Read),
    (4, Binding::ReadWrite),
    (5, Binding::Read),
    (6, Binding::ReadWrite),
    (7, Binding::ReadWrite),
    (8, Binding::ReadWrite),
    (9, Binding::ReadWrite),
];

/// Bindings of the in-place variants (any io file): the logits are written, there is no `out`
/// (binding 9 views the logits).
pub const BINDINGS_IN_PLACE: &[(u32, Binding)] = &[
    (0, Binding::Uniform),
    (1, Binding::ReadWrite),
    (2, Binding::Read),
    (3, Binding::Read),
    (4, Binding::ReadWrite),
    (5, Binding::Read),
    (7, Binding::ReadWrite),
    (8, Binding::ReadWrite),
    (9, Binding::ReadWrite),
];

/// Offset of the per-row upstream gradients in the scales buffer (after the stats).
pub const UPSTREAM: usize = 4;

/// Split layout: columns each workgroup owns. 16,384 columns are 64 per lane of a 256-lane
/// workgroup: enough to hide the merge of the partials, few enough that a 262,144-column row
/// spreads over 16 workgroups.
pub const SPLIT_CHUNK_COLS: u32 = 16384;

/// Floats of partial results the split layout keeps in the scales buffer for `rows` rows of
/// `cols` columns (0 for the other strategies).
pub fn partials_len(strategy: Strategy, rows: usize, cols: usize) -> usize {
    match strategy {
        Strategy::Split { .. } => 4 * rows * cols.div_ceil(SPLIT_CHUNK_COLS as usize),
        _ => 0,
    }
}

/// `struct Params` of row_softmax.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Pod, Zeroable)]
pub struct Params {
    /// Rows in this dispatch.
    pub rows: u32,
    /// Classes per row.
    pub cols: u32,
    /// Element offset of row 0 in the `logits` binding.
    pub logits_base: u32,
    /// Element offset of row 0 in the `labels`, `row_loss` and `row_lse` bindings.
    pub row_base: u32,
    /// Element offset of row 0 in the output binding.
    pub out_base: u32,
    /// Element offset of row 0 in the `targets` binding.
    pub targets_base: u32,
    /// Index of row 0 in the whole batch (for the upstream gradients in `scales`).
    pub row_offset: u32,
    /// Label of ignored rows.
    pub ignore_index: i32,
    /// 1 when `weights` holds class weights.
    pub has_weights: u32,
    /// 1 for probability targets (in `targets`), 0 for class indices (in `labels`).
    pub has_targets: u32,
    /// 1 when `scales[4 + row]` holds each row's upstream gradient.
    pub has_upstream: u32,
    /// 1: the softmax entry writes log-probabilities.
    pub log_softmax: u32,
    /// Label smoothing.
    pub label_smoothing: f32,
    /// z-loss scale.
    pub z_loss: f32,
    /// Soft-capping (0 = off).
    pub softcap: f32,
    /// Sum of the class weights (cols when unweighted).
    pub weight_sum: f32,
    /// Split layout: columns per workgroup (set by [`record`]).
    pub col_chunk: u32,
    /// Split layout: offset of the partial results in the scales buffer.
    pub partials_base: u32,
    /// Split layout: 1 for softmax, 0 for cross-entropy (set by [`record`]).
    pub softmax: u32,
    /// Cross-entropy of a batch that is one workgroup ([`one_workgroup`]): which of the
    /// batch's sums the dispatch does itself instead of batch_sum's dispatches: 0 (none),
    /// [`WHOLE_BATCH_LOSS`] or [`WHOLE_BATCH_MEAN`].
    pub whole_batch: u32,
    /// Vocabulary-parallel shards (`crate::parallel`): the whole vocabulary, C of the math
    /// (0: `cols`).
    pub classes: u32,
    /// Vocabulary-parallel shards: the class of column 0 (labels are whole-vocabulary classes).
    pub class_base: u32,
    /// Vocabulary-parallel shards with class weights: w_y of row r is
    /// `weights[row_weights + r]` (0: read from the class weights).
    pub row_weights: u32,
    /// Keeps the struct a whole number of 16-byte units.
    pub pad: u32,
}

/// `params.whole_batch`: the dispatch adds the reduced loss to `stats[2]`, as
/// `batch_sum::Entry::LossSum` would.
pub const WHOLE_BATCH_LOSS: u32 = 1;
/// `params.whole_batch`: the dispatch first sums the mean's denominator, as
/// `batch_sum::Entry::TargetWeightSum` would, then the loss.
pub const WHOLE_BATCH_MEAN: u32 = 2;

/// Whether a dispatch of `rows` rows in `strategy` is a single workgroup, so that a
/// cross-entropy can do the batch's sums in it (`params.whole_batch`): one dispatch instead of
/// three, which is most of a small batch's time on lavapipe (8x1000: 0.12 -> 0.06 ms). Only
/// for workgroup teams: the split layout takes two dispatches anyway, and how many rows a
/// subgroup-team workgroup holds depends on the subgroup size the hardware picks.
pub fn one_workgroup(strategy: Strategy, rows: u32) -> bool {
    match strategy {
        Strategy::Workgroup { lanes } => rows <= workgroup_lanes(lanes, rows) / lanes,
        Strategy::Cached { .. } => rows <= 1,
        Strategy::Subgroup | Strategy::Split { .. } | Strategy::Auto => false,
    }
}

/// What a dispatch computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// `softmax_main`: probabilities (or log-probabilities) into `out`.
    Softmax = 0,
    /// `cross_entropy_main`: gradient into `out`, loss and lse per row.
    CrossEntropy = 1,
}

/// Entry points of the split layout (team_workgroup.wgsl only), by index.
const SPLIT_STATS: usize = 2;
const SPLIT_WRITE: usize = 3;

/// The buffers one dispatch binds. `labels`, `row_loss` and `lse` start at the same row.
#[derive(Debug, Clone, Copy)]
pub struct RowBuffers<'a> {
    /// Logits, `rows * cols` elements of `precision`.
    pub logits: Slice<'a>,
    /// Output, `rows * cols` elements of `precision`; `None` writes over the logits.
    pub out: Option<Slice<'a>>,
    /// The storage format of `logits` and `out`.
    pub precision: Precision,
    /// i32 labels, `rows` elements (any small slice with probability targets).
    pub labels: Slice<'a>,
    /// f32 probability targets, `rows * cols` elements (any small slice with labels).
    pub targets: Slice<'a>,
    /// f32 per-row loss, `rows` elements.
    pub row_loss: Slice<'a>,
    /// f32 per-row log-sum-exp, `rows` elements.
    pub lse: Slice<'a>,
    /// f32 class weights (any small buffer when unweighted).
    pub weights: &'a wgpu::Buffer,
    /// f32 scales: the 4 stats of batch_sum.wgsl, then the upstream gradient of each row.
    pub scales: &'a wgpu::Buffer,
}

/// Lanes per workgroup of `Workgroup { lanes }` over `rows` rows.
///
/// Teams of 2+ lanes share [`WORKGROUP_LANES`]-lane workgroups (or one workgroup per row past
/// that). One lane per row needs no barrier, so the workgroup only decides how rows spread
/// over workgroups: [`ROW_PER_LANE_LANES`] rows each, or [`ROW_PER_LANE_FEW_LANES`] when that
/// would leave fewer than [`ROW_PER_LANE_MIN_WORKGROUPS`] workgroups. Measured on lavapipe
/// (which runs a workgroup on one of its 2 threads): 64x262144 ran at 44% of copy in one
/// 64-lane workgroup and at 66-104% over several runs in 8-, 16- or 32-lane ones; 16384x128
/// ran 15% slower in 8-lane workgroups than in 32- or 64-lane ones. Since lanes take rows
/// interleaved (team_workgroup.wgsl, `row_per_lane`), 256-lane workgroups beat 64-lane ones
/// in three interleaved runs each: 65536x128 86-87% of copy against 52-81%, 1024x32000 74-75%
/// against 69-72%, the other shapes within noise. Two sizes only, as every size is another
/// pipeline to compile (0.2-3 s each on lavapipe).
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

/// llvmpipe (lavapipe, llvmpipe GL) ends a shader invocation's loops after this many turns in
/// all (gallivm's loop limiter, against hangs), silently leaving the rest of the row
/// unwritten. Found by the soak test: softmax of 1 x 262,144 in one lane per row stopped at
/// column 196,592, after 16,384 turns of pass 1 and 49,148 of pass 2. On software adapters
/// the strategies keep [`loop_turns`] within it.
pub const SOFTWARE_LOOP_TURNS: u64 = 65_535;

/// An upper bound on the loop turns one lane takes over a row of `cols` columns in a team of
/// `team` lanes (for the split layout, `cols` of one chunk and `chunks` chunks): each pass
/// takes a step per STEP_BLOCKS blocks of each lane, up to 3 single blocks, up to 10 loose
/// columns (7 at the head with units of two blocks, io_*x8.wgsl) and (cached layout) up to
/// MAX_CACHE_BLOCKS turns over the cache; the barrier tree up to 10 turns (log2 of 1024
/// lanes); the split merge one per chunk.
pub fn loop_turns(cols: u64, team: u64, chunks: u64) -> u64 {
    const STEP_COLS: u64 = 16; // STEP_BLOCKS blocks of BLOCK columns (row_softmax.wgsl)
    let per_pass = cols.div_ceil(STEP_COLS * team) + 3 + 10 + u64::from(MAX_CACHE_BLOCKS);
    2 * per_pass + 10 + chunks
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

/// Workgroup size, team size and module of a concrete strategy on this context, for a
/// dispatch of `rows` rows.
pub fn shape_of(
    ctx: &Context,
    strategy: Strategy,
    io: Io,
    rows: u32,
) -> Result<(ModuleKey, u32, u32)> {
    let max = ctx
        .limits
        .max_compute_invocations_per_workgroup
        .min(ctx.limits.max_compute_workgroup_size_x)
        .min(MAX_WORKGROUP_LANES);
    let (module, workgroup, team) = match strategy {
        Strategy::Workgroup { lanes } => (
            ModuleKey::RowSoftmax {
                team: TeamKind::Workgroup,
                io,
            },
            workgroup_lanes(lanes, rows),
            lanes,
        ),
        Strategy::Split { lanes } | Strategy::Cached { lanes } => (
            ModuleKey::RowSoftmax {
                team: TeamKind::Workgroup,
                io,
            },
            lanes,
            lanes,
        ),
        Strategy::Subgroup => {
            // The one subgroup size the host may rely on (context::usable_subgroup_size).
            let size = ctx.subgroup_size().ok_or_else(|| Error::Unsupported {
                adapter: ctx.adapter_info().name.clone(),
                what: format!(
                    "the subgroup strategy does not run here: {}",
                    ctx.subgroup_refusal().unwrap_or("no usable subgroup size")
                ),
            })?;
            let (workgroup, team) = subgroup_shape(size);
            (
                ModuleKey::RowSoftmax {
                    team: TeamKind::Subgroup,
                    io,
                },
                workgroup,
                team,
            )
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
    Ok((module, workgroup, team))
}

/// Logits and output (`None`: in place) bound as `bind` binds a slice.
type Bound<'a> = (
    (wgpu::BufferBinding<'a>, u32),
    Option<(wgpu::BufferBinding<'a>, u32)>,
);

/// Logits and output both bound by `bind` (whole vectors or units), or `None` when either
/// cannot be.
fn bind_both<'a>(
    bufs: &RowBuffers<'a>,
    bind: impl Fn(&Slice<'a>) -> Option<(wgpu::BufferBinding<'a>, u32)>,
) -> Option<Bound<'a>> {
    let logits = bind(&bufs.logits)?;
    match bufs.out.as_ref().map(&bind) {
        Some(None) => None,
        Some(Some(out)) => Some((logits, Some(out))),
        None => Some((logits, None)),
    }
}

/// The element offsets of logits and output in their bindings.
fn bases(bound: &Option<Bound<'_>>) -> Option<(u32, u32)> {
    bound
        .as_ref()
        .map(|(l, o)| (l.1, o.as_ref().map_or(l.1, |o| o.1)))
}

/// Records the dispatch(es) over `params.rows` rows into `encoder`; fills in the offsets.
/// The split layout takes two dispatches (partials, then merge and write) and at most
/// [`super::MAX_GRID_DIM`] rows; `params.partials_base` must point at room for
/// [`partials_len`] floats in the scales buffer.
pub fn record(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    entry: Entry,
    strategy: Strategy,
    bufs: &RowBuffers<'_>,
    params: Params,
) -> Result<()> {
    record_passes(ctx, encoder, entry, strategy, bufs, params, None)
}

/// One of the split layout's two dispatches alone, for vocabulary-parallel shards
/// (`crate::parallel`): the partials, which the host reads back and merges across ranks, or
/// the merge and write, after the host has put the merged stats in the partials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitPass {
    /// `split_stats_main`: each chunk's (max, sum-exp, s1, s2) into the partials.
    Stats,
    /// `split_write_main`: merge the row's partials, write the gradient, loss and lse.
    Write,
}

/// Records one pass of the split layout (cross-entropy, `Strategy::Split`); as [`record`]
/// otherwise.
pub fn record_split_pass(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    pass: SplitPass,
    lanes: u32,
    bufs: &RowBuffers<'_>,
    params: Params,
) -> Result<()> {
    let strategy = Strategy::Split { lanes };
    let only = match pass {
        SplitPass::Stats => SPLIT_STATS,
        SplitPass::Write => SPLIT_WRITE,
    };
    record_passes(
        ctx,
        encoder,
        Entry::CrossEntropy,
        strategy,
        bufs,
        params,
        Some(only),
    )
}

/// [`record`], or with `only`, just that one of the split layout's entry points.
fn record_passes(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    entry: Entry,
    strategy: Strategy,
    bufs: &RowBuffers<'_>,
    mut params: Params,
    only: Option<usize>,
) -> Result<()> {
    let in_place = bufs.out.is_none();
    // The bindings first: whether logits and output can be bound as whole vec4s (or, for
    // the pair files io_*x8.wgsl, whole units of 8), at the same offset modulo 4 (8),
    // decides the io file.
    let align = u64::from(ctx.limits.min_storage_buffer_offset_alignment);
    let vectors = bind_both(bufs, |s| s.bind_vectors(align));
    let units = bind_both(bufs, |s| s.bind_units(align));
    let one_lane_per_row = matches!(strategy, Strategy::Workgroup { lanes: 1 });
    let io = Io::for_rows(
        bufs.precision,
        in_place,
        bases(&vectors),
        ctx.words64(),
        bases(&units),
        one_lane_per_row,
    );
    let ((logits, logits_base), out) = match (vectors, units) {
        (_, Some(u)) if io.pairs => u,
        (Some(v), _) if io.vec4 => v,
        _ => (bufs.logits.bind(align), bufs.out.map(|out| out.bind(align))),
    };
    let out_base = out.as_ref().map_or(logits_base, |o| o.1);
    let unsupported = |what: &str| Error::Unsupported {
        adapter: ctx.adapter_info().name.clone(),
        what: what.into(),
    };
    if io.precision == Precision::Bf16 && io.in_place {
        return Err(unsupported(
            "bf16 has no in-place variant: give a separate output buffer",
        ));
    }
    if io.precision == Precision::F16 && !ctx.features.contains(wgpu::Features::SHADER_F16) {
        return Err(unsupported("f16 data needs Features::SHADER_F16"));
    }
    let (module, workgroup_size, team_size) = shape_of(ctx, strategy, io, params.rows)?;
    let split = matches!(strategy, Strategy::Split { .. });
    let cache_blocks = match strategy {
        Strategy::Cached { lanes } => cache_blocks(params.cols, lanes).ok_or_else(|| {
            unsupported(&format!(
                "strategy {strategy} holds rows of at most {} columns in registers, not {}",
                cached_max_cols(lanes),
                params.cols
            ))
        })?,
        _ => 0,
    };
    let cols = u64::from(params.cols);
    let turns = if split {
        let chunk = u64::from(SPLIT_CHUNK_COLS);
        loop_turns(cols.min(chunk), team_size.into(), cols.div_ceil(chunk))
    } else {
        loop_turns(cols, team_size.into(), 0)
    };
    if ctx.adapter_info().device_type == wgpu::DeviceType::Cpu && turns > SOFTWARE_LOOP_TURNS {
        return Err(unsupported(&format!(
            "strategy {strategy} needs up to {turns} loop turns per lane for {cols} columns, \
             and software adapters (llvmpipe) end a shader's loops after {SOFTWARE_LOOP_TURNS}: \
             use a strategy with more lanes per row (Auto picks one)"
        )));
    }
    let whole_batch = params.whole_batch != 0;
    if whole_batch && (entry != Entry::CrossEntropy || !one_workgroup(strategy, params.rows)) {
        return Err(Error::Validation(format!(
            "a whole-batch dispatch must be a cross-entropy in one workgroup, not {} rows of {strategy}",
            params.rows
        )));
    }
    let options = Specialisation {
        weights: params.has_weights != 0,
        softcap: params.softcap > 0.0,
        probs: params.has_targets != 0,
        smoothing: params.label_smoothing > 0.0,
    };
    // Halves converted by bit operations on software adapters, where pack2x16float and
    // unpack2x16float run lane by lane (f16.wgsl).
    let f16_bits = io.has_f16_bits() && ctx.f16_bits();
    let pipeline = |entry: usize| {
        ctx.pipeline(PipelineKey {
            module,
            entry,
            workgroup_size,
            team_size,
            cache_blocks: if entry < 2 { cache_blocks } else { 0 },
            whole_batch,
            options,
            f16_bits,
        })
    };
    params.softmax = u32::from(entry == Entry::Softmax);
    params.col_chunk = SPLIT_CHUNK_COLS;
    let (labels, labels_base) = bufs.labels.bind(align);
    let (targets, targets_base) = bufs.targets.bind(align);
    let (row_loss, row_base) = bufs.row_loss.bind(align);
    let (lse, lse_base) = bufs.lse.bind(align);
    // The shader indexes all three with one row_base (labels are unused with probabilities).
    let labels_used = params.has_targets == 0;
    if lse_base != row_base || (labels_used && labels_base != row_base) {
        return Err(Error::Validation(
            "labels, row_loss and lse must start at one row".into(),
        ));
    }
    params.logits_base = logits_base;
    params.row_base = row_base;
    params.targets_base = targets_base;
    // Binding 9: the output (in place, the logits) once more: the vector io files' scalar view.
    let output = out.as_ref().map_or(&logits, |o| &o.0).clone();
    let mut entries = vec![
        part(9, output),
        part(1, logits),
        part(2, labels),
        whole(3, bufs.weights),
        whole(4, bufs.scales),
        part(5, targets),
        part(7, row_loss),
        part(8, lse),
    ];
    params.out_base = out_base;
    if let Some((out, _)) = out {
        entries.push(part(6, out));
    }
    let uniform = ctx.buffer_with(
        "row_softmax params",
        bytemuck::bytes_of(&params),
        wgpu::BufferUsages::UNIFORM,
    );
    entries.push(whole(0, &uniform));
    let bind_group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("row_softmax"),
        layout: ctx.layouts.bind_group_layout(module),
        entries: &entries,
    });
    // The dispatches: (entry point, grid). Split: x = chunk of the row, y = row, and the
    // second dispatch sees the first one's writes.
    let dispatches: Vec<(usize, (u32, u32))> = if split {
        if params.rows > super::MAX_GRID_DIM {
            return Err(Error::Validation(
                "a split dispatch takes at most 65535 rows".into(),
            ));
        }
        let grid = (params.cols.div_ceil(SPLIT_CHUNK_COLS), params.rows);
        [SPLIT_STATS, SPLIT_WRITE]
            .into_iter()
            .filter(|&e| only.is_none_or(|o| o == e))
            .map(|e| (e, grid))
            .collect()
    } else {
        // Subgroup teams: `workgroup / subgroup size` rows (subgroup_shape).
        let rows_per_workgroup = u64::from(workgroup_size / team_size);
        vec![(
            entry as usize,
            grid(u64::from(params.rows).div_ceil(rows_per_workgroup))?,
        )]
    };
    let pipelines = dispatches
        .iter()
        .map(|&(entry, _)| pipeline(entry))
        .collect::<Result<Vec<_>>>()?;
    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: Some("row_softmax"),
        timestamp_writes: None,
    });
    pass.set_bind_group(0, &bind_group, &[]);
    for (p, &(_, (x, y))) in pipelines.iter().zip(&dispatches) {
        pass.set_pipeline(p);
        pass.dispatch_workgroups(x, y, 1);
    }
    Ok(())
}

fn whole(binding: u32, buffer: &wgpu::Buffer) -> wgpu::BindGroupEntry<'_> {
    wgpu::BindGroupEntry {
        binding,
        resource: buffer.as_entire_binding(),
    }
}

fn part(binding: u32, buffer: wgpu::BufferBinding<'_>) -> wgpu::BindGroupEntry<'_> {
    wgpu::BindGroupEntry {
        binding,
        resource: wgpu::BindingResource::Buffer(buffer),
    }
}
