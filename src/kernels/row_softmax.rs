//! Row softmax and fused cross-entropy (`shaders/row_softmax.wgsl` with an io file and a team
//! file, `source.rs`): what a dispatch binds and how it is recorded.
//!
//! A call goes: [`RowKernel`] (entry, strategy, loss options: what the caller decides) and
//! [`RowBuffers`] (where the data is) → [`choose_variant`], the one place the whole
//! [`ShaderVariant`] is chosen (team from the strategy, io from the bindings' alignment and
//! the software adapters' paths) → [`record`] takes that variant: it binds as the variant
//! reads, the strategy gives the geometry ([`geometry::shape_of`]), one [`PipelineKey`] per
//! entry point, then the dispatches.

use bytemuck::{Pod, Zeroable};

use super::geometry::{self, SPLIT_CHUNK_COLS, cache_blocks, cached_max_cols, one_workgroup};
use super::layouts::{part, whole};
use super::variant::{
    Access, Io, ModuleKey, PipelineKey, Place, Precision, ShaderVariant, Specialisation,
};
use super::{Binding, Slice, Strategy, grid, software};
use crate::context::Context;
use crate::error::{Error, Result};

/// Bindings of row_softmax.wgsl (with any io file), by number: params, logits, labels,
/// weights, scales, targets, out, row_loss, row_lse, and the output again (the vector io
/// files' scalar view `out_words`; the scalar io files leave it unused).
const BINDINGS: [Binding; 10] = {
    use Binding::{Read, ReadWrite, Uniform};
    [
        Uniform, Read, Read, Read, ReadWrite, Read, ReadWrite, ReadWrite, ReadWrite, ReadWrite,
    ]
};

/// The bindings of a module (number, kind): in place, the logits (1) are written and there is
/// no `out` (6); binding 9 then views the logits.
pub fn bindings(place: Place) -> Vec<(u32, Binding)> {
    (0..)
        .zip(BINDINGS)
        .filter_map(|(n, b)| match (place, n) {
            (Place::InPlace, 1) => Some((n, Binding::ReadWrite)),
            (Place::InPlace, 6) => None,
            _ => Some((n, b)),
        })
        .collect()
}

/// Offset of the per-row upstream gradients in the scales buffer (after the stats).
pub const UPSTREAM: usize = 4;

/// `struct Params` of row_softmax.wgsl: only what the shader reads (the options it branches
/// on are override constants, [`Specialisation`]).
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
    /// Which of the batch's sums a cross-entropy dispatch does itself instead of batch_sum's
    /// dispatches: 0 (none); for a batch that is one workgroup ([`one_workgroup`])
    /// [`WHOLE_BATCH_LOSS`] or [`WHOLE_BATCH_MEAN`]; for any batch [`BATCH_DENOMINATOR`].
    pub whole_batch: u32,
    /// Vocabulary-parallel shards (`crate::parallel`): the whole vocabulary, C of the math
    /// (0: `cols`).
    pub classes: u32,
    /// Vocabulary-parallel shards: the class of column 0 (labels are whole-vocabulary classes).
    pub class_base: u32,
    /// Vocabulary-parallel shards with class weights: w_y of row r is
    /// `weights[row_weights + r]` (0: read from the class weights).
    pub row_weights: u32,
}

impl Params {
    /// The params of rows of `cols` columns under the loss `options`: the one place the
    /// options the shader takes as uniforms (label smoothing, z-loss, soft-cap, the sum of
    /// the class weights, `cols` when unweighted) are filled in. Ignored rows' labels are -1,
    /// as the host sends them; the caller sets the rest (rows, offsets, shards).
    pub fn for_loss(options: &crate::CrossEntropyOptions, cols: u32) -> Self {
        let weight_sum = match &options.weight {
            Some(w) => w.iter().map(|&x| f64::from(x)).sum::<f64>() as f32,
            None => cols as f32,
        };
        Params {
            cols,
            ignore_index: -1,
            label_smoothing: options.label_smoothing,
            z_loss: options.z_loss,
            softcap: options.softcap,
            weight_sum,
            ..Default::default()
        }
    }
}

/// `params.whole_batch`: the dispatch adds the reduced loss to `stats[2]`, as
/// `batch_sum::Entry::LossSum` would.
pub const WHOLE_BATCH_LOSS: u32 = 1;
/// `params.whole_batch`: the dispatch first sums the mean's denominator, as
/// `batch_sum::Entry::TargetWeightSum` would, then the loss.
pub const WHOLE_BATCH_MEAN: u32 = 2;
/// `params.whole_batch` of a dispatch of any number of workgroups: each workgroup sums the
/// mean's denominator over all the batch's labels itself, so that no
/// `batch_sum::Entry::TargetWeightSum` dispatch comes first; the loss is left to
/// `batch_sum::Entry::LossSum` ([`geometry::denominator_in_each_workgroup`] says when).
pub const BATCH_DENOMINATOR: u32 = 3;

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

/// The row kernel a call asks for: everything but the buffers (the io variant follows from
/// them, in `bind_rows`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowKernel {
    /// What the dispatch computes.
    pub entry: Entry,
    /// A concrete strategy (not `Auto`).
    pub strategy: Strategy,
    /// The loss options the code handles (none for softmax).
    pub options: Specialisation,
}

/// Logits and output bound for one dispatch, as its io variant reads them.
struct BoundRows<'a> {
    logits: wgpu::BufferBinding<'a>,
    logits_base: u32,
    /// `None` in place.
    out: Option<wgpu::BufferBinding<'a>>,
    out_base: u32,
}

/// A binding and the element offset the shader adds.
type Bound<'a> = (wgpu::BufferBinding<'a>, u32);

/// Logits and output (`None`: in place) both bound by `bind` (whole vectors or units), or
/// `None` when either cannot be.
fn bind_both<'a>(
    bufs: &RowBuffers<'a>,
    bind: impl Fn(&Slice<'a>) -> Option<Bound<'a>>,
) -> Option<(Bound<'a>, Option<Bound<'a>>)> {
    let logits = bind(&bufs.logits)?;
    match bufs.out.as_ref().map(&bind) {
        Some(None) => None,
        Some(Some(out)) => Some((logits, Some(out))),
        None => Some((logits, None)),
    }
}

/// The element offsets of logits and output in bindings made by `bind_both`.
fn bases(bound: &Option<(Bound<'_>, Option<Bound<'_>>)>) -> Option<(u32, u32)> {
    bound
        .as_ref()
        .map(|(l, o)| (l.1, o.as_ref().map_or(l.1, |o| o.1)))
}

/// The whole shader variant of one dispatch of `strategy` over `bufs`, chosen here and only
/// here, before anything is recorded: the team from the strategy ([`geometry::team_kind`]);
/// the io axes from the buffers: their precision, in place or not, and the access, which
/// is whole vec4s (or, for the pair files io_*x8.wgsl, whole units of 8) when logits and
/// output can both be bound so at the same offset modulo 4 (8) ([`Io::for_rows`]), with the
/// software adapters' paths (64-bit words, units for one lane per row) as the context's
/// [`software::SoftwareIo`] says.
///
/// # Errors
///
/// [`Error::Unsupported`] for bf16 in place, and for f16 without `Features::SHADER_F16`.
pub fn choose_variant(
    ctx: &Context,
    strategy: Strategy,
    bufs: &RowBuffers<'_>,
) -> Result<ShaderVariant> {
    let unsupported = |what: &str| Error::Unsupported {
        adapter: ctx.adapter_info().name.clone(),
        what: what.into(),
    };
    if bufs.precision == Precision::Bf16 && bufs.out.is_none() {
        return Err(unsupported(
            "bf16 has no in-place variant: give a separate output buffer",
        ));
    }
    if bufs.precision == Precision::F16 && !ctx.features.contains(wgpu::Features::SHADER_F16) {
        return Err(unsupported("f16 data needs Features::SHADER_F16"));
    }
    let align = u64::from(ctx.limits.min_storage_buffer_offset_alignment);
    // The vector io files also view the output as scalars (binding 9): where one buffer may
    // not be bound twice for writing (WebGPU), every dispatch takes the scalar files.
    let (vectors, units) = if crate::platform::WRITABLE_ALIASES {
        let vectors = bind_both(bufs, |s| s.bind_vectors(align));
        (
            bases(&vectors),
            bases(&bind_both(bufs, |s| s.bind_units(align))),
        )
    } else {
        (None, None)
    };
    let io = Io::for_rows(
        bufs.precision,
        bufs.out.is_none(),
        vectors,
        ctx.software_io().words64,
        units,
        strategy == Strategy::Workgroup { lanes: 1 },
    );
    Ok(ShaderVariant {
        team: geometry::team_kind(strategy),
        io,
    })
}

/// Binds logits and output as `io` reads them: units of 8, whole vec4s or scalars. A
/// validation error when the buffers do not allow it (`io` was not chosen for them).
fn bind_rows<'a>(ctx: &Context, bufs: &RowBuffers<'a>, io: Io) -> Result<BoundRows<'a>> {
    let align = u64::from(ctx.limits.min_storage_buffer_offset_alignment);
    if io.precision != bufs.precision || io.in_place() != bufs.out.is_none() {
        return Err(Error::Validation(format!(
            "variant {io:?} is not for {:?} {}",
            bufs.precision,
            if bufs.out.is_none() {
                "in place"
            } else {
                "with an output"
            }
        )));
    }
    let bound = match io.access {
        Access::Pairs => bind_both(bufs, |s| s.bind_units(align)),
        Access::Vec4(_) => bind_both(bufs, |s| s.bind_vectors(align)),
        Access::Scalar => Some((bufs.logits.bind(align), bufs.out.map(|out| out.bind(align)))),
    };
    let Some(((logits, logits_base), out)) = bound else {
        return Err(Error::Validation(format!(
            "these buffers cannot be bound as {:?} reads them",
            io.access
        )));
    };
    Ok(BoundRows {
        logits,
        logits_base,
        out_base: out.as_ref().map_or(logits_base, |o| o.1),
        out: out.map(|o| o.0),
    })
}

/// Records the dispatch(es) of `kernel` in shader `variant` ([`choose_variant`] for these
/// buffers) over `params.rows` rows into `encoder`; fills in the offsets. The split layout
/// takes two dispatches (partials, then merge and write; `SplitCache`: two per group of rows
/// within the context's cache budget, [`geometry::split_group_rows`]) and at most
/// [`super::MAX_GRID_DIM`] rows; `params.partials_base` must point at room for
/// [`geometry::partials_len`] floats in the scales buffer.
pub fn record(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    kernel: RowKernel,
    variant: ShaderVariant,
    bufs: &RowBuffers<'_>,
    params: Params,
) -> Result<()> {
    record_passes(ctx, encoder, (kernel, variant), bufs, params, None)
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

/// Records one pass of the split layout of a cross-entropy `kernel` (its strategy must be
/// `Strategy::Split`); as [`record`] otherwise.
pub fn record_split_pass(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    kernel: RowKernel,
    variant: ShaderVariant,
    pass: SplitPass,
    bufs: &RowBuffers<'_>,
    params: Params,
) -> Result<()> {
    if kernel.entry != Entry::CrossEntropy || !matches!(kernel.strategy, Strategy::Split { .. }) {
        return Err(Error::Validation(format!(
            "one split pass alone is a cross-entropy of the split layout, not {:?} of {}",
            kernel.entry, kernel.strategy
        )));
    }
    let only = match pass {
        SplitPass::Stats => SPLIT_STATS,
        SplitPass::Write => SPLIT_WRITE,
    };
    record_passes(ctx, encoder, (kernel, variant), bufs, params, Some(only))
}

/// [`record`], or with `only`, just that one of the split layout's entry points.
fn record_passes(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    (kernel, variant): (RowKernel, ShaderVariant),
    bufs: &RowBuffers<'_>,
    mut params: Params,
    only: Option<usize>,
) -> Result<()> {
    let RowKernel {
        entry,
        strategy,
        options,
    } = kernel;
    let unsupported = |what: &str| Error::Unsupported {
        adapter: ctx.adapter_info().name.clone(),
        what: what.into(),
    };

    // 1. The variant's module, bound as its io reads; the geometry from the strategy.
    if variant.team != geometry::team_kind(strategy) {
        return Err(Error::Validation(format!(
            "strategy {strategy} does not run the {:?} team file",
            variant.team
        )));
    }
    let bound = bind_rows(ctx, bufs, variant.io)?;
    let module = ModuleKey::RowSoftmax(variant);
    let (workgroup_size, team_size) = geometry::shape_of(ctx, strategy, params.rows)?;
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
    software::check_loop_turns(ctx.adapter_info(), strategy, params.cols, team_size)?;
    let whole_batch = params.whole_batch != 0;
    let fits = match params.whole_batch {
        BATCH_DENOMINATOR => !strategy.is_split(),
        _ => one_workgroup(strategy, params.rows),
    };
    if whole_batch && (entry != Entry::CrossEntropy || !fits) {
        return Err(Error::Validation(format!(
            "batch sums {} in the row dispatch need a cross-entropy of one workgroup (or, for the \
             denominator, not split), not {} rows of {strategy}",
            params.whole_batch, params.rows
        )));
    }
    let key = |entry: usize| PipelineKey {
        module,
        entry,
        workgroup_size,
        team_size,
        cache_blocks: if entry < 2 { cache_blocks } else { 0 },
        whole_batch,
        options,
        f16_bits: variant.io.has_f16_bits() && ctx.software_io().f16_bits,
    };

    // 2. The bindings and the offsets the shader adds.
    let align = u64::from(ctx.limits.min_storage_buffer_offset_alignment);
    let (labels, labels_base) = bufs.labels.bind(align);
    let (targets, targets_base) = bufs.targets.bind(align);
    let (row_loss, row_base) = bufs.row_loss.bind(align);
    let (lse, lse_base) = bufs.lse.bind(align);
    // The shader indexes all three with one row_base (labels are unused with probabilities).
    if lse_base != row_base || (!options.probs && labels_base != row_base) {
        return Err(Error::Validation(
            "labels, row_loss and lse must start at one row".into(),
        ));
    }
    params.softmax = u32::from(entry == Entry::Softmax);
    params.col_chunk = SPLIT_CHUNK_COLS;
    params.logits_base = bound.logits_base;
    params.out_base = bound.out_base;
    params.row_base = row_base;
    params.targets_base = targets_base;
    // Binding 9: the output (in place, the logits) once more: the vector io files' scalar view.
    // Unused by the scalar files: where writable aliases are refused, a stand-in.
    let stand_in;
    let output = if crate::platform::WRITABLE_ALIASES {
        bound.out.as_ref().unwrap_or(&bound.logits).clone()
    } else {
        stand_in = ctx.buffer_with("out_words stand-in", &[0; 16], wgpu::BufferUsages::STORAGE);
        stand_in.as_entire_buffer_binding()
    };
    // One bind group per params (a split group's params point at its first row).
    let bind_group = |params: &Params| {
        let uniform = ctx.buffer_with(
            "row_softmax params",
            bytemuck::bytes_of(params),
            wgpu::BufferUsages::UNIFORM,
        );
        let mut entries = vec![
            whole(0, &uniform),
            part(1, bound.logits.clone()),
            part(2, labels.clone()),
            whole(3, bufs.weights),
            whole(4, bufs.scales),
            part(5, targets.clone()),
            part(7, row_loss.clone()),
            part(8, lse.clone()),
            part(9, output.clone()),
        ];
        if let Some(out) = &bound.out {
            entries.push(part(6, out.clone()));
        }
        ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("row_softmax"),
            layout: ctx.layouts.bind_group_layout(module),
            entries: &entries,
        })
    };

    // 3. The dispatches: (bind group, entry point, grid). Split: x = chunk of the row, y =
    // row, and each dispatch sees the writes of the ones before it (the partials).
    let mut bind_groups = Vec::new();
    let mut dispatches: Vec<(usize, usize, (u32, u32))> = Vec::new();
    if strategy.is_split() {
        if params.rows > super::MAX_GRID_DIM {
            return Err(Error::Validation(
                "a split dispatch takes at most 65535 rows".into(),
            ));
        }
        let chunks = params.cols.div_ceil(SPLIT_CHUNK_COLS);
        let passes = [SPLIT_STATS, SPLIT_WRITE].into_iter();
        let passes: Vec<usize> = passes.filter(|&e| only.is_none_or(|o| o == e)).collect();
        // SplitCache: the two passes alternate per group of rows that fits the cache
        // budget, so pass 2 re-reads logits pass 1 has just read. A group's params point at
        // its first row (as a chunk's do): each row is at the same place in its binding and
        // merges its own partials, in chunk order, whatever the group.
        let group = match strategy {
            Strategy::SplitCache { .. } => geometry::split_group_rows(
                params.rows,
                u64::from(params.cols) * bufs.precision.bytes(),
                ctx.split_cache_bytes,
            ),
            _ => params.rows.max(1),
        };
        for first in (0..params.rows).step_by(group as usize) {
            let rows = group.min(params.rows - first);
            let elems = first * params.cols;
            let mut at = params;
            at.rows = rows;
            at.logits_base += elems;
            at.out_base += elems;
            at.targets_base += elems;
            at.row_base += first;
            at.row_offset += first;
            at.partials_base += 4 * first * chunks;
            if at.row_weights != 0 {
                at.row_weights += first;
            }
            bind_groups.push(bind_group(&at));
            let g = bind_groups.len() - 1;
            dispatches.extend(passes.iter().map(|&e| (g, e, (chunks, rows))));
        }
    } else {
        // Subgroup teams: `workgroup / subgroup size` rows (subgroup_shape).
        let rows_per_workgroup = u64::from(workgroup_size / team_size);
        bind_groups.push(bind_group(&params));
        let grid = grid(u64::from(params.rows).div_ceil(rows_per_workgroup))?;
        dispatches.push((0, entry as usize, grid));
    }
    let pipelines = dispatches
        .iter()
        .map(|&(_, entry, _)| ctx.pipeline(key(entry)))
        .collect::<Result<Vec<_>>>()?;
    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: Some("row_softmax"),
        timestamp_writes: None,
    });
    for (p, &(g, _, (x, y))) in pipelines.iter().zip(&dispatches) {
        pass.set_bind_group(0, &bind_groups[g], &[]);
        pass.set_pipeline(p);
        pass.dispatch_workgroups(x, y, 1);
    }
    Ok(())
}
