// Sums over the rows of a batch, for the reductions of the loss: one workgroup walks all
// rows of the dispatch and folds them into `stats`, a 4-float buffer:
//   stats[0] = gradient scale of the reduction (read by row_softmax.wgsl)
//   stats[1] = denominator D of a mean: sum of w_{y_i} over the rows not ignored
//   stats[2] = the reduced loss
// Entry points:
//   target_weight_sum  stats[1] += sum_i w_{y_i} (rows not ignored), then
//                      stats[0] = D > 0 ? 1 / D : 0 (a fully ignored batch gives loss 0);
//                      for labels on the GPU. Over several row chunks, the last call leaves
//                      the scale of the whole batch (one dispatch per chunk, no extra pass).
//   loss_sum           stats[2] += stats[0] * sum_i row_loss[i]
// Layout: lane k sums rows k, k + WORKGROUP_SIZE, ... in f32 with Kahan compensation
// (kahan.wgsl, prepended), then the lanes' sums meet in a barrier tree in workgroup memory;
// lane 0 adds the total to `stats`. Chunked batches call an entry point once per chunk, in
// order, so the result does not depend on timing. One workgroup is enough: this touches `rows`
// floats, the row kernels `rows * cols`.
// Who runs them (the device path only: the host path knows D and sums the loss on the CPU
// from the row losses it reads back, src/ops/host.rs): a batch small enough to be one
// workgroup of the row kernel skips both, that workgroup does both sums itself (WHOLE_BATCH
// in row_softmax.wgsl); a batch of several workgroups with few labels beside its logits
// skips target_weight_sum, each of its workgroups counts D itself (BATCH_DENOMINATOR);
// loss_sum runs only when the caller asked for the loss (src/ops/device.rs, plan_sums).
// loss_sum must be a dispatch of its own after the rows: WGSL orders storage between
// workgroups only from one dispatch to the next (BENCHMARKS.md, "Fewer dispatches").

override WORKGROUP_SIZE: u32 = 256u;
const MAX_WORKGROUP_SIZE = 1024u;

struct Params {
    rows: u32,          // rows in this dispatch
    cols: u32,          // classes (labels must be in 0..cols to count)
    row_base: u32,      // element offset of row 0 in `labels` / `row_loss`
    ignore_index: i32,
    has_weights: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> labels: array<i32>;
@group(0) @binding(2) var<storage, read> weights: array<f32>;
@group(0) @binding(3) var<storage, read> row_loss: array<f32>;
@group(0) @binding(4) var<storage, read_write> stats: array<f32>;

var<workgroup> partial: array<f32, MAX_WORKGROUP_SIZE>;

// What row i contributes to the selected sum.
fn target_weight(i: u32) -> f32 {
    let y = labels[params.row_base + i];
    if y == params.ignore_index || y < 0 || u32(y) >= params.cols {
        return 0.0;
    }
    if params.has_weights != 0u {
        return weights[u32(y)];
    }
    return 1.0;
}

// Kahan-compensated sum of this lane's rows, then the workgroup tree; valid in lane 0.
fn workgroup_total(lane: u32, of_loss: bool) -> f32 {
    var sum = Kahan(0.0, 0.0);
    for (var i = lane; i < params.rows; i += WORKGROUP_SIZE) {
        if of_loss {
            kahan_add(&sum, row_loss[params.row_base + i]);
        } else {
            kahan_add(&sum, target_weight(i));
        }
    }
    partial[lane] = sum.sum;
    workgroupBarrier();
    for (var stride = WORKGROUP_SIZE / 2u; stride > 0u; stride /= 2u) {
        if lane < stride {
            partial[lane] += partial[lane + stride];
        }
        workgroupBarrier();
    }
    return partial[0];
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn target_weight_sum(@builtin(local_invocation_index) lane: u32) {
    let total = workgroup_total(lane, false);
    if lane == 0u {
        let d = stats[1] + total;
        stats[1] = d;
        stats[0] = select(0.0, 1.0 / d, d > 0.0);
    }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn loss_sum(@builtin(local_invocation_index) lane: u32) {
    let total = workgroup_total(lane, true);
    // A factor of 0 (a mean over nothing) adds nothing, even if a row loss is NaN.
    if lane == 0u && stats[0] != 0.0 {
        stats[2] += stats[0] * total;
    }
}
