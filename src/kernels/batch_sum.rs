//! Sums over rows for the reduced loss (`shaders/batch_sum.wgsl`): one workgroup per dispatch.

use bytemuck::{Pod, Zeroable};

use super::Binding::{self, Read, ReadWrite, Uniform};
use super::layouts::{part, whole};
use super::{ModuleKey, PipelineKey, Slice, WORKGROUP_LANES};
use crate::context::Context;
use crate::error::Result;

/// Bindings of batch_sum.wgsl, by number: params, labels, weights, row_loss, stats.
pub const BINDINGS: &[Binding] = &[Uniform, Read, Read, Read, ReadWrite];

/// Floats in the stats buffer: [gradient scale, mean denominator, loss, unused].
pub const STATS_LEN: usize = 4;
/// Index of the reduced loss in the stats buffer.
pub const STATS_LOSS: usize = 2;

/// `struct Params` of batch_sum.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Pod, Zeroable)]
pub struct Params {
    /// Rows in this dispatch.
    pub rows: u32,
    /// Classes.
    pub cols: u32,
    /// Element offset of row 0 in `labels` / `row_loss`.
    pub row_base: u32,
    /// Label of ignored rows.
    pub ignore_index: i32,
    /// 1 when `weights` holds class weights.
    pub has_weights: u32,
    /// Padding to 16 bytes.
    pub _pad: [u32; 3],
}

/// The entry point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// `stats[1] += sum of target weights` over the rows not ignored, `stats[0] = 1 / stats[1]`
    /// (0 when nothing counts).
    TargetWeightSum = 0,
    /// `stats[2] += stats[0] * sum of row losses`.
    LossSum = 1,
}

/// Rows one dispatch sums: each of its lanes takes `rows / WORKGROUP_LANES` loop turns, which
/// must stay within llvmpipe's limit of 65,535 per invocation
/// ([`super::software::SOFTWARE_LOOP_TURNS`]); half of it leaves room.
pub const MAX_ROWS_PER_DISPATCH: u32 = WORKGROUP_LANES * 32_768;

/// Records `entry` over the `params.rows` rows of `labels` / `row_loss` (which start at the
/// same row): one single-workgroup dispatch per [`MAX_ROWS_PER_DISPATCH`] rows, in order
/// (the entry points accumulate, so pieces add up like the chunks of a batch).
#[allow(clippy::too_many_arguments)]
pub fn record(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    entry: Entry,
    labels: Slice<'_>,
    row_loss: Slice<'_>,
    weights: &wgpu::Buffer,
    stats: &wgpu::Buffer,
    params: Params,
) -> Result<()> {
    let rows = u64::from(params.rows);
    if labels.len < rows || row_loss.len < rows {
        return Err(crate::error::Error::Validation(
            "batch_sum: labels and row_loss must hold every row".into(),
        ));
    }
    let pipeline = ctx.pipeline(PipelineKey::plain(ModuleKey::BatchSum, entry as usize))?;
    let align = u64::from(ctx.limits.min_storage_buffer_offset_alignment);
    let mut first = 0;
    loop {
        // One single-workgroup dispatch over the next `count` rows.
        let count = (rows - first).min(MAX_ROWS_PER_DISPATCH.into());
        let (labels, row_base) = labels.part(first, count).bind(align);
        let (row_loss, _) = row_loss.part(first, count).bind(align);
        let sub = Params {
            rows: count as u32,
            row_base,
            ..params
        };
        let uniform = ctx.buffer_with(
            "batch_sum params",
            bytemuck::bytes_of(&sub),
            wgpu::BufferUsages::UNIFORM,
        );
        let bind_group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("batch_sum"),
            layout: ctx.layouts.bind_group_layout(ModuleKey::BatchSum),
            entries: &[
                whole(0, &uniform),
                part(1, labels),
                whole(2, weights),
                part(3, row_loss),
                whole(4, stats),
            ],
        });
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("batch_sum"),
            timestamp_writes: None,
        });
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(1, 1, 1);
        first += count;
        if first >= rows {
            return Ok(());
        }
    }
}
