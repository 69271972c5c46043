//! Fused linear + cross-entropy: the loss of `z = hidden @ classifier^T (+ bias)` and its
//! gradients `d_hidden`, `d_classifier`, `d_bias`, without the `[rows, vocab]` logits ever
//! existing whole (shaders/linear_xent.wgsl).
//!
//! Data flow, top-down in this file: validate → upload (host API) → forward: per chunk of
//! rows, per block of vocabulary columns, the block's logits into a scratch buffer and a merge
//! of its (max, sum-exp, …) into per-row sums → read the per-row sums back and derive each
//! row's loss and gradient constants on the host, in f64 → backward: per chunk and block,
//! the block's gradient `dL/dz` (the logits recomputed) into the scratch buffer, then
//! `d_hidden += G C_block`, `d_classifier_block += G^T H_chunk`, `d_bias_block += colsum(G)`
//! → read back (host API).
//!
//! The scratch holds one `[chunk rows, block]` block in f32: device memory beyond the inputs
//! and outputs is bounded by the block size, not by the vocabulary. Every sum runs in a
//! fixed order, so results are bit-reproducible on one adapter.
//!
//! Design decision: the block's `p − y` goes through that scratch buffer rather than staying
//! in the registers of the workgroup that computed it (as the issue first sketched), because
//! both `d_hidden` and `d_classifier` need every element of it and WGSL has no float
//! atomics. A workgroup holding a 64 × 64 tile of G would have to add its share into rows of
//! `d_hidden` that every other column tile of the block also adds to, and into rows of
//! `d_classifier` that every row tile adds to. The ways around it cost more: (a) atomic
//! compare-exchange loops on f32 bits: unordered, so not bit-reproducible, and serialised
//! where tiles collide; (b) per-tile partial sums reduced afterwards: `block / 64` copies of
//! the chunk's `d_hidden` and `chunk / 64` copies of the block's `d_classifier`, e.g. 64 MiB
//! each at 4096 rows, a 2048 block and d = 128, against the scratch's 32 MiB, plus a
//! reduction pass; (c) recomputing the logits inside each gradient product: six products of
//! 2·N·d·V instead of four. The scratch is written once and read three times per block
//! (d_hidden, d_classifier, d_bias), and its size is bounded by the block and one binding.
//!
//! The products (`block_logits`, `matmul`) come from one of three product files
//! ([`LinearProduct`], chosen per context by [`Context::linear_products`]); everything else is
//! shaders/linear_xent.wgsl.

use std::sync::Arc;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::{Precision, Slice};
use crate::ops::check_slice;
use crate::options::{CrossEntropyOptions, Reduction, check_len, check_shape};

/// A matrix given to [`Context::linear_cross_entropy`]: f32 values, or the bits of f16 /
/// bf16 values (the arithmetic is f32 either way).
#[derive(Debug, Clone, Copy)]
pub enum Matrix<'a> {
    /// 32-bit floats.
    F32(&'a [f32]),
    /// f16 or bf16 bits, as `precision` says (`Precision::F32` is refused).
    Half(&'a [u16], Precision),
}

impl Matrix<'_> {
    fn len(&self) -> usize {
        match self {
            Matrix::F32(v) => v.len(),
            Matrix::Half(v, _) => v.len(),
        }
    }

    fn precision(&self) -> Precision {
        match self {
            Matrix::F32(_) => Precision::F32,
            Matrix::Half(_, p) => *p,
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Matrix::F32(v) => bytemuck::cast_slice(v),
            Matrix::Half(v, _) => bytemuck::cast_slice(v),
        }
    }
}

/// A host call of [`Context::linear_cross_entropy`]: `hidden [rows, dim]`, `classifier
/// [vocab, dim]` (one row per class, as `torch.nn.Linear(dim, vocab).weight`), an optional
/// `bias [vocab]` and one class index per row.
#[derive(Debug, Clone, Copy)]
pub struct LinearCrossEntropy<'a> {
    /// Hidden states, row-major `[rows, dim]`.
    pub hidden: Matrix<'a>,
    /// Classifier, row-major `[vocab, dim]`.
    pub classifier: Matrix<'a>,
    /// Optional bias, `[vocab]`.
    pub bias: Option<&'a [f32]>,
    /// One class index per row, in `0..vocab` or `options.ignore_index`.
    pub labels: &'a [i64],
    /// Rows (tokens).
    pub rows: usize,
    /// Hidden size.
    pub dim: usize,
    /// Classes (vocabulary size).
    pub vocab: usize,
    /// The loss options of [`Context::cross_entropy`] (all of them apply).
    pub options: &'a CrossEntropyOptions,
}

/// The loss and the gradients of a linear cross-entropy call (all f32).
#[derive(Debug, Clone, PartialEq)]
pub struct LinearCrossEntropyOutput {
    /// The reduced loss, as [`crate::CrossEntropyOutput::loss`].
    pub loss: f32,
    /// Per-row loss before reduction (ignored rows: 0).
    pub row_loss: Vec<f32>,
    /// Per-row log-sum-exp of the (soft-capped) logits.
    pub lse: Vec<f32>,
    /// `dloss/dhidden`, `[rows, dim]` (empty from the device API, which writes its buffer).
    pub grad_hidden: Vec<f32>,
    /// `dloss/dclassifier`, `[vocab, dim]` (empty from the device API).
    pub grad_classifier: Vec<f32>,
    /// `dloss/dbias`, `[vocab]`, when a bias was given (host API) .
    pub grad_bias: Option<Vec<f32>>,
}

/// Device buffers of [`Context::linear_cross_entropy_device`]: slices of the caller's
/// buffers, `buffer.slice(..)` for a whole buffer or `buffer.slice(offset..offset + size)` for
/// a tensor inside a larger one. Every slice must start at a multiple of the device's
/// `min_storage_buffer_offset_alignment` (32 on lavapipe, at most 256), since the kernels
/// bind it directly; inputs need `BufferUsages::STORAGE`, outputs `STORAGE` too (they are
/// overwritten, never read first, and must not share a buffer with an input). f16 / bf16
/// slices hold two elements per 4-byte word and must be padded to whole words.
#[derive(Debug, Clone, Copy)]
pub struct LinearDeviceBuffers<'a> {
    /// `[rows, dim]` in `hidden_precision`.
    pub hidden: wgpu::BufferSlice<'a>,
    /// Storage format of `hidden`.
    pub hidden_precision: Precision,
    /// `[vocab, dim]` in `classifier_precision`.
    pub classifier: wgpu::BufferSlice<'a>,
    /// Storage format of `classifier`.
    pub classifier_precision: Precision,
    /// Optional f32 bias `[vocab]`.
    pub bias: Option<wgpu::BufferSlice<'a>>,
    /// Receives f32 `dloss/dhidden`, `[rows, dim]`.
    pub grad_hidden: wgpu::BufferSlice<'a>,
    /// Receives f32 `dloss/dclassifier`, `[vocab, dim]`.
    pub grad_classifier: wgpu::BufferSlice<'a>,
    /// Receives f32 `dloss/dbias`, `[vocab]` (only with a bias).
    pub grad_bias: Option<wgpu::BufferSlice<'a>>,
}

/// [`LinearDeviceBuffers`] checked against the call's shape, as the kernels bind them.
#[derive(Clone, Copy)]
struct Io<'a> {
    hidden: Slice<'a>,
    hidden_precision: Precision,
    classifier: Slice<'a>,
    classifier_precision: Precision,
    bias: Option<Slice<'a>>,
    grad_hidden: Slice<'a>,
    grad_classifier: Slice<'a>,
    grad_bias: Option<Slice<'a>>,
}

/// Vocabulary block widths tried, widest first: the scratch block `[chunk rows, block]` and
/// the classifier block must fit one binding. All are multiples of 256 so that every block's
/// offset is aligned for binding (`min_storage_buffer_offset_alignment` is at most 256).
const BLOCKS: [usize; 4] = [2048, 1024, 512, 256];
/// Chunks of rows are multiples of this (alignment of the chunks' offsets, as above).
const ROW_ALIGN: usize = 128;
/// Output tile of `block_logits` and `matmul` (64 x 64), and threads of the 1-D kernels.
const TILE: usize = 64;

/// How a call is cut: chunks of `chunk` rows, blocks of `block` vocabulary columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plan {
    chunk: usize,
    block: usize,
}

/// The widest block for which a chunk of at least `ROW_ALIGN` rows (or all rows) fits one
/// binding of `max_bytes` in every buffer it binds.
fn plan(rows: usize, dim: usize, vocab: usize, max_bytes: u64) -> Result<Plan> {
    for &b in &BLOCKS {
        let block = b.min(vocab);
        // The widest per-row binding of a chunk: the f32 scratch or d_hidden.
        let row_bytes = 4 * dim.max(block) as u64;
        if (block * dim) as u64 * 4 > max_bytes {
            continue; // d_classifier's block does not fit
        }
        let fit = (max_bytes / row_bytes) as usize;
        let chunk = if fit >= rows {
            rows
        } else {
            fit / ROW_ALIGN * ROW_ALIGN
        };
        if chunk > 0 {
            return Ok(Plan { chunk, block });
        }
    }
    Err(Error::InvalidOption {
        name: "dim",
        value: dim.to_string(),
        reason: "too large: 256 classifier rows of it do not fit one storage binding",
    })
}

/// Uniforms of shaders/linear_xent.wgsl (`Params`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    a_si: u32,
    a_sk: u32,
    b_sk: u32,
    b_sj: u32,
    ldo: u32,
    accumulate: u32,
    v0: u32,
    mode: u32,
    has_bias: u32,
    softcap: f32,
    pad: [u32; 3],
}

impl Params {
    /// A product `out [m, n] = A [m, k] B [k, n]` (the `dims` `(m, n, k)`): A(i, k) is
    /// element `i * a.0 + k * a.1` of A's binding, B(k, j) element `k * b.0 + j * b.1` of
    /// B's, out(i, j) element `i * ldo + j`. The other fields are 0: set them after.
    fn product(
        (m, n, k): (usize, usize, usize),
        a: (usize, usize),
        b: (usize, usize),
        ldo: usize,
    ) -> Self {
        Params {
            m: m as u32,
            n: n as u32,
            k: k as u32,
            a_si: a.0 as u32,
            a_sk: a.1 as u32,
            b_sk: b.0 as u32,
            b_sj: b.1 as u32,
            ldo: ldo as u32,
            ..Default::default()
        }
    }
}

/// `slice` as a binding, or `placeholder` when the dispatch does not use it. Every slice a
/// sweep binds starts on the storage-offset alignment (the caller's slices are checked, and
/// chunks and blocks start at multiples of 128 rows / 256 columns), so the shader needs no
/// base offset.
fn resource<'b>(
    slice: Option<Slice<'b>>,
    placeholder: &'b wgpu::Buffer,
    align: u64,
) -> wgpu::BindingResource<'b> {
    match slice {
        Some(s) => {
            let (binding, base) = s.bind(align);
            debug_assert_eq!(base, 0, "a linear_xent binding off the offset alignment");
            wgpu::BindingResource::Buffer(binding)
        }
        None => placeholder.as_entire_binding(),
    }
}

/// `len` 4-byte elements of `buffer` from element `start` (usize, as the sweep counts).
fn words(buffer: &wgpu::Buffer, start: usize, len: usize) -> Slice<'_> {
    Slice::words(buffer, start as u64, len as u64)
}

/// `len` 16-byte elements (a row's four sums or constants) of `buffer` from element `start`.
fn quads(buffer: &wgpu::Buffer, start: usize, len: usize) -> Slice<'_> {
    Slice {
        elem_bytes: 16,
        ..words(buffer, start, len)
    }
}

/// The bindings of one dispatch (`None`: a small placeholder buffer).
#[derive(Default, Clone, Copy)]
struct Bind<'a> {
    a: Option<Slice<'a>>,
    b: Option<Slice<'a>>,
    bias: Option<Slice<'a>>,
    weight: Option<Slice<'a>>,
    labels: Option<Slice<'a>>,
    rowinfo: Option<Slice<'a>>,
    out: Option<Slice<'a>>,
    stats: Option<Slice<'a>>,
}

#[derive(Clone, Copy)]
enum Entry {
    BlockLogits,
    BlockStats,
    Matmul,
    BiasGrad,
}

impl Entry {
    fn name(self) -> &'static str {
        match self {
            Entry::BlockLogits => "block_logits",
            Entry::BlockStats => "block_stats",
            Entry::Matmul => "matmul",
            Entry::BiasGrad => "bias_grad",
        }
    }
}

/// The `A_KIND` / `B_KIND` constant of a storage format.
fn kind(p: Precision) -> u32 {
    match p {
        Precision::F32 => 0,
        Precision::F16 => 1,
        Precision::Bf16 => 2,
    }
}

/// Which matrix product the fused kernels' tiled entry points (`block_logits`, `matmul`) use:
/// [`Context::linear_product`] chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinearProduct {
    /// Workgroup-memory tiles (shaders/linear_tile.wgsl): core WGSL, every adapter.
    Tiled,
    /// Cooperative 8 x 8 f32 matrices (shaders/linear_tile_coop.wgsl), on a device with
    /// wgpu's experimental `EXPERIMENTAL_COOPERATIVE_MATRIX` and `SUBGROUP` features (see
    /// [`crate::ContextOptions::cooperative_matrix`]). Validated by naga here; not run on
    /// any adapter yet.
    CooperativeMatrix,
    /// The tiled product with A shared by `subgroupShuffle` instead of workgroup memory and
    /// no barriers (shaders/linear_tile_subgroup.wgsl), bit-identical to `Tiled`; on software
    /// adapters with usable subgroups (lavapipe), where it was measured faster
    /// (BENCHMARKS.md).
    Subgroup,
}

/// Workgroup memory of linear_tile_coop.wgsl: two 512-float staging blocks, the 64 x 64
/// output tile and one u32.
const COOP_WORKGROUP_BYTES: u32 = (512 + 512 + 4096) * 4 + 4;

/// The WGSL source of the linear cross-entropy kernels with `product`: the product file
/// first (it may open with an `enable` directive), then for the two vec4 products what they
/// share (shaders/linear_tile_rows.wgsl), then shaders/linear_xent.wgsl.
pub fn shader_source(product: LinearProduct) -> String {
    let rows = include_str!("../shaders/linear_tile_rows.wgsl");
    let (tile, shared) = match product {
        LinearProduct::Tiled => (include_str!("../shaders/linear_tile.wgsl"), rows),
        LinearProduct::CooperativeMatrix => (include_str!("../shaders/linear_tile_coop.wgsl"), ""),
        LinearProduct::Subgroup => (include_str!("../shaders/linear_tile_subgroup.wgsl"), rows),
    };
    format!(
        "{tile}\n{shared}\n{}",
        include_str!("../shaders/linear_xent.wgsl")
    )
}

/// One binding of the layout: read-only storage, read-write storage, or the uniform.
fn layout_entry(binding: u32, ty: wgpu::BufferBindingType) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty,
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}

/// Per-row sums read back after the forward sweep: (max, sum-exp, z'_y, sum_j w_j z'_j).
type RowSums = [f32; 4];

/// What the forward sweep's sums give on the host: the loss and the per-row constants of the
/// gradient kernel, `(lse, k, a, e)` with `dL/dz'_j = k p_j - a [j = y] - e w_j`.
struct Derived {
    loss: f32,
    row_loss: Vec<f32>,
    lse: Vec<f32>,
    coefficients: Vec<[f32; 4]>,
}

/// Loss and gradient constants from the per-row sums, in f64 (see the crate docs' formulas).
fn row_coefficients(
    sums: &[RowSums],
    labels: &[i64],
    vocab: usize,
    options: &CrossEntropyOptions,
) -> Derived {
    let eps = f64::from(options.label_smoothing);
    let s = f64::from(options.z_loss);
    let weight = |j: usize| options.weight.as_ref().map_or(1.0, |w| f64::from(w[j]));
    let total_weight: f64 = match &options.weight {
        Some(w) => w.iter().map(|&x| f64::from(x)).sum(),
        None => vocab as f64,
    };
    let v = vocab as f64;
    let mut row_loss = Vec::with_capacity(sums.len());
    let mut lse = Vec::with_capacity(sums.len());
    let mut denominator = 0.0;
    for (sum, &label) in sums.iter().zip(labels) {
        let l = f64::from(sum[0]) + f64::from(sum[1]).ln();
        lse.push(l as f32);
        if label == options.ignore_index {
            row_loss.push(0.0);
            continue;
        }
        let w_y = weight(label as usize);
        denominator += w_y;
        let mut loss = 0.0;
        // A term whose coefficient is 0 is skipped, as in the reference (0 * inf).
        if eps < 1.0 {
            loss += (1.0 - eps) * w_y * (l - f64::from(sum[2]));
        }
        if eps > 0.0 {
            loss += eps / v * (total_weight * l - f64::from(sum[3]));
        }
        if s > 0.0 {
            loss += s * l * l;
        }
        row_loss.push(loss);
    }
    let total: f64 = row_loss.iter().sum();
    let (loss, k) = match options.reduction {
        Reduction::Mean if denominator == 0.0 => (0.0, 0.0),
        Reduction::Mean => (total / denominator, 1.0 / denominator),
        Reduction::Sum | Reduction::None => (total, 1.0),
    };
    let coefficients = labels
        .iter()
        .zip(&lse)
        .map(|(&label, &l)| {
            if label == options.ignore_index {
                return [0.0; 4];
            }
            let a = (1.0 - eps) * weight(label as usize);
            let mut p = a;
            if eps > 0.0 {
                p += eps / v * total_weight;
            }
            if s > 0.0 {
                p += 2.0 * s * f64::from(l);
            }
            [l, (k * p) as f32, (k * a) as f32, (k * eps / v) as f32]
        })
        .collect();
    Derived {
        loss: loss as f32,
        row_loss: row_loss.into_iter().map(|x| x as f32).collect(),
        lse,
        coefficients,
    }
}

/// Shape, lengths, options and labels, in that order; returns the labels as the kernels'
/// i32 (ignored rows: -1).
fn validate(
    rows: usize,
    dim: usize,
    vocab: usize,
    labels: &[i64],
    options: &CrossEntropyOptions,
) -> Result<Vec<i32>> {
    check_shape(rows, dim)?;
    check_shape(vocab, dim)?;
    check_len("labels", rows, labels.len())?;
    options.validate(vocab)?;
    options.check_labels(labels, vocab)?;
    if i32::try_from(vocab).is_err() {
        return Err(Error::ShapeOverflow {
            rows: vocab,
            cols: dim,
        });
    }
    Ok(labels
        .iter()
        .map(|&y| {
            if y == options.ignore_index {
                -1
            } else {
                y as i32
            }
        })
        .collect())
}

impl<'a> LinearDeviceBuffers<'a> {
    /// Checks every slice (usage, length, element and storage-offset alignment; `grad_bias`
    /// only with a bias) and returns them as the kernels bind them.
    fn check(&self, rows: usize, dim: usize, vocab: usize, align: u64) -> Result<Io<'a>> {
        let storage = wgpu::BufferUsages::STORAGE;
        let check = |what, slice: &wgpu::BufferSlice<'a>, elems: usize, bytes: u64| {
            let s = check_slice(what, slice, elems as u64, bytes, storage)?;
            let offset = slice.offset();
            if offset % align != 0 {
                return Err(Error::BadBuffer {
                    what,
                    problem: format!(
                        "starts at byte {offset}, not a multiple of the device's \
                         min_storage_buffer_offset_alignment ({align})"
                    ),
                });
            }
            Ok(s)
        };
        let (hp, cp) = (self.hidden_precision, self.classifier_precision);
        let (bias, grad_bias) = match (&self.bias, &self.grad_bias) {
            (Some(b), gb) => (
                Some(check("bias", b, vocab, 4)?),
                gb.as_ref()
                    .map(|gb| check("grad_bias", gb, vocab, 4))
                    .transpose()?,
            ),
            (None, Some(_)) => {
                return Err(Error::BadBuffer {
                    what: "grad_bias",
                    problem: "given without a bias".into(),
                });
            }
            (None, None) => (None, None),
        };
        Ok(Io {
            hidden: check("hidden", &self.hidden, rows * dim, hp.bytes())?,
            hidden_precision: hp,
            classifier: check("classifier", &self.classifier, vocab * dim, cp.bytes())?,
            classifier_precision: cp,
            bias,
            grad_hidden: check("grad_hidden", &self.grad_hidden, rows * dim, 4)?,
            grad_classifier: check("grad_classifier", &self.grad_classifier, vocab * dim, 4)?,
            grad_bias,
        })
    }
}

impl Context {
    /// Fused linear + cross-entropy from host slices: the loss of
    /// `logits = hidden @ classifier^T (+ bias)` under `options` (as [`Context::cross_entropy`])
    /// and its gradients with respect to `hidden`, `classifier` and `bias`, computed one
    /// vocabulary block at a time, so the `[rows, vocab]` logits are never stored.
    ///
    /// ```no_run
    /// use ml_softmax::{Context, CrossEntropyOptions, LinearCrossEntropy, Matrix};
    ///
    /// let ctx = Context::new()?;
    /// let (rows, dim, vocab) = (2, 3, 4);
    /// let hidden = [0.1, 0.2, 0.3, -0.1, 0.0, 0.5];
    /// let classifier = [0.5f32; 12];
    /// let out = ctx.linear_cross_entropy(&LinearCrossEntropy {
    ///     hidden: Matrix::F32(&hidden),
    ///     classifier: Matrix::F32(&classifier),
    ///     bias: None,
    ///     labels: &[1, 3],
    ///     rows,
    ///     dim,
    ///     vocab,
    ///     options: &CrossEntropyOptions::default(),
    /// })?;
    /// assert_eq!(out.grad_hidden.len(), rows * dim);
    /// assert_eq!(out.grad_classifier.len(), vocab * dim);
    /// # Ok::<(), ml_softmax::Error>(())
    /// ```
    ///
    /// # Errors
    /// `EmptyShape` / `ShapeOverflow` for a bad shape, `LengthMismatch` naming `hidden`,
    /// `classifier`, `bias` or `labels` when a length does not match `rows`, `dim`, `vocab`
    /// (a classifier of another hidden size shows up here), `InvalidOption` for f32 given
    /// as half bits, the options' errors ([`CrossEntropyOptions::validate`]) and
    /// `LabelOutOfRange`; device errors as every call.
    pub fn linear_cross_entropy(
        &self,
        call: &LinearCrossEntropy<'_>,
    ) -> Result<LinearCrossEntropyOutput> {
        self.linear_cross_entropy_using(call, self.linear_product())
    }

    /// [`Context::linear_cross_entropy`] with the given product (the tests run every product
    /// an adapter has); `Unsupported` when it is not one of [`Context::linear_products`].
    #[doc(hidden)]
    pub fn linear_cross_entropy_using(
        &self,
        call: &LinearCrossEntropy<'_>,
        product: LinearProduct,
    ) -> Result<LinearCrossEntropyOutput> {
        self.check_product(product)?;
        let LinearCrossEntropy {
            hidden,
            classifier,
            bias,
            labels,
            rows,
            dim,
            vocab,
            options,
        } = *call;
        // 1. Validate everything before any upload.
        let n_hidden = check_shape(rows, dim)?;
        let n_classifier = check_shape(vocab, dim)?;
        check_len("hidden", n_hidden, hidden.len())?;
        check_len("classifier", n_classifier, classifier.len())?;
        if let Some(b) = bias {
            check_len("bias", vocab, b.len())?;
        }
        for m in [hidden, classifier] {
            if let Matrix::Half(_, Precision::F32) = m {
                return Err(Error::InvalidOption {
                    name: "precision",
                    value: "F32".into(),
                    reason: "Matrix::Half holds f16 or bf16 bits; give f32 as Matrix::F32",
                });
            }
        }
        validate(rows, dim, vocab, labels, options)?;
        self.check_alive()?;

        // 2. Upload the inputs; allocate the outputs.
        use wgpu::BufferUsages as U;
        let h = self.buffer_with("hidden", hidden.bytes(), U::STORAGE);
        let c = self.buffer_with("classifier", classifier.bytes(), U::STORAGE);
        let b = bias.map(|b| self.buffer_with("bias", bytemuck::cast_slice(b), U::STORAGE));
        let out_usage = U::STORAGE | U::COPY_SRC | U::COPY_DST;
        let gh = self.create_buffer("grad hidden", n_hidden as u64 * 4, out_usage)?;
        let gc = self.create_buffer("grad classifier", n_classifier as u64 * 4, out_usage)?;
        let gb = match bias {
            Some(_) => Some(self.create_buffer("grad bias", vocab as u64 * 4, out_usage)?),
            None => None,
        };
        if self.poison_outputs {
            for (buffer, len) in [(&gh, n_hidden), (&gc, n_classifier)] {
                self.write_words(buffer, bytemuck::cast_slice(&vec![f32::NAN; len]));
            }
            if let Some(gb) = &gb {
                self.write_words(gb, bytemuck::cast_slice(&vec![f32::NAN; vocab]));
            }
        }
        let bufs = LinearDeviceBuffers {
            hidden: h.slice(..),
            hidden_precision: hidden.precision(),
            classifier: c.slice(..),
            classifier_precision: classifier.precision(),
            bias: b.as_ref().map(|b| b.slice(..)),
            grad_hidden: gh.slice(..),
            grad_classifier: gc.slice(..),
            grad_bias: gb.as_ref().map(|gb| gb.slice(..)),
        };

        // 3. Both sweeps.
        let mut out = self.linear_cross_entropy_device_using(
            &bufs,
            labels,
            (rows, dim, vocab),
            options,
            product,
        )?;
        drop((h, c, b));

        // 4. Read the gradients back.
        out.grad_hidden = self.read_f32(gh.slice(..n_hidden as u64 * 4))?;
        drop(gh);
        out.grad_classifier = self.read_f32(gc.slice(..n_classifier as u64 * 4))?;
        drop(gc);
        out.grad_bias = match &gb {
            Some(gb) => Some(self.read_f32(gb.slice(..vocab as u64 * 4))?),
            None => None,
        };
        Ok(out)
    }

    /// Fused linear + cross-entropy on the caller's device buffers (see
    /// [`Context::linear_cross_entropy`] for the math): writes `grad_hidden`,
    /// `grad_classifier` (and `grad_bias`) and returns the loss, per-row losses and lse with
    /// empty gradient vectors. Labels and options come from the host: the forward sweep's
    /// per-row sums (16 bytes a row) are read back to derive the loss and the gradient's
    /// per-row constants, so this call waits for the forward sweep, and for all but the last
    /// block of the backward one (one submission per block, each wait bounded by
    /// [`crate::ContextOptions::wait_timeout`]); poll the device to wait for the rest.
    pub fn linear_cross_entropy_device(
        &self,
        bufs: &LinearDeviceBuffers<'_>,
        labels: &[i64],
        rows: usize,
        dim: usize,
        vocab: usize,
        options: &CrossEntropyOptions,
    ) -> Result<LinearCrossEntropyOutput> {
        let shape = (rows, dim, vocab);
        self.linear_cross_entropy_device_using(bufs, labels, shape, options, self.linear_product())
    }

    /// [`Context::linear_cross_entropy_device`] with `product` (for the tests and
    /// `ml-softmax bench-linear`, which run every product an adapter has).
    #[doc(hidden)]
    pub fn linear_cross_entropy_device_using(
        &self,
        bufs: &LinearDeviceBuffers<'_>,
        labels: &[i64],
        (rows, dim, vocab): (usize, usize, usize),
        options: &CrossEntropyOptions,
        product: LinearProduct,
    ) -> Result<LinearCrossEntropyOutput> {
        let labels32 = validate(rows, dim, vocab, labels, options)?;
        let io = bufs.check(rows, dim, vocab, self.storage_alignment())?;
        self.check_product(product)?;
        self.check_alive()?;
        let plan = plan(rows, dim, vocab, self.max_chunk_bytes)?;
        let mut sweep = Sweep::new(self, io, &labels32, rows, dim, vocab, options, plan)?;
        sweep.product = product;

        // Forward: the per-row sums, then loss and gradient constants on the host.
        let sums = sweep.forward()?;
        let derived = row_coefficients(&sums, labels, vocab, options);

        // Backward: the gradients into the caller's buffers.
        sweep.backward(&derived.coefficients)?;
        Ok(LinearCrossEntropyOutput {
            loss: derived.loss,
            row_loss: derived.row_loss,
            lse: derived.lse,
            grad_hidden: Vec::new(),
            grad_classifier: Vec::new(),
            grad_bias: None,
        })
    }

    /// For `ml-softmax bench-linear`: the plain product `hidden @ classifier^T` with the same
    /// tiled kernel (`matmul`, no epilogue), one vocabulary block at a time into the scratch
    /// block (as the fused call cuts it), so it runs 2 * rows * dim * vocab flops in bounded
    /// memory. Submits and waits.
    #[doc(hidden)]
    pub fn linear_bench_matmul(
        &self,
        bufs: &LinearDeviceBuffers<'_>,
        (rows, dim, vocab): (usize, usize, usize),
        product: LinearProduct,
    ) -> Result<()> {
        check_shape(rows, dim)?;
        self.check_product(product)?;
        check_shape(vocab, dim)?;
        let io = bufs.check(rows, dim, vocab, self.storage_alignment())?;
        let labels = vec![-1i32; rows];
        let options = CrossEntropyOptions::default();
        let plan = plan(rows, dim, vocab, self.max_chunk_bytes)?;
        let mut sweep = Sweep::new(self, io, &labels, rows, dim, vocab, &options, plan)?;
        sweep.product = product;
        sweep.plain_product()?;
        self.wait_idle()
    }

    /// Waits until the queue's work so far is done (bounded by the context's wait timeout).
    #[doc(hidden)]
    pub fn wait_idle(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: None,
                timeout: Some(self.wait_timeout),
            })
            .map_err(|e| Error::Wait(e.to_string()))?;
        self.check_alive()
    }

    /// The product the fused linear cross-entropy's kernels use on this context:
    /// [`LinearProduct::CooperativeMatrix`] where [`Context::cooperative_matrix_refusal`] is
    /// `None`, else [`LinearProduct::Tiled`].
    pub fn linear_product(&self) -> LinearProduct {
        self.linear_products()[0]
    }

    /// The products the fused linear cross-entropy can use on this context, the one it uses
    /// first: [`LinearProduct::CooperativeMatrix`] where
    /// [`Context::cooperative_matrix_refusal`] is `None`; [`LinearProduct::Subgroup`] on a
    /// software adapter (`DeviceType::Cpu`) whose subgroups are usable
    /// ([`Context::subgroup_size`]) and a power of two (measured faster there; not measured
    /// on GPUs, which keep the workgroup tiles: BENCHMARKS.md); [`LinearProduct::Tiled`]
    /// everywhere.
    pub fn linear_products(&self) -> Vec<LinearProduct> {
        let mut products = Vec::new();
        if self.cooperative_matrix_refusal().is_none() {
            products.push(LinearProduct::CooperativeMatrix);
        }
        // subgroup_size(): the device has SUBGROUP and its subgroups really are as wide as
        // reported (lavapipe at LP_NATIVE_VECTOR_WIDTH >= 1024 reports more lanes than it
        // runs, so a shuffle would read lanes of another subgroup).
        let software = self.adapter_info().device_type == wgpu::DeviceType::Cpu;
        if software && self.subgroup_size().is_some_and(u32::is_power_of_two) {
            products.push(LinearProduct::Subgroup);
        }
        products.push(LinearProduct::Tiled);
        products
    }

    /// Why the fused linear cross-entropy does not use cooperative matrices on this context
    /// (`None`: it does). It needs the device opened with `EXPERIMENTAL_COOPERATIVE_MATRIX`
    /// ([`crate::ContextOptions::cooperative_matrix`], or your own device with it) and
    /// `SUBGROUP`, power-of-two subgroups of 4 or more lanes (so the 64 sub-tiles of a
    /// workgroup split evenly between its subgroups) and 20 KiB of workgroup memory.
    pub fn cooperative_matrix_refusal(&self) -> Option<String> {
        let features = self.device.features();
        let info = self.adapter_info();
        let sizes = (info.subgroup_min_size, info.subgroup_max_size);
        let workgroup_bytes = self.limits.max_compute_workgroup_storage_size;
        if !features.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX) {
            Some(
                "the device has no Features::EXPERIMENTAL_COOPERATIVE_MATRIX (the adapter does \
                 not offer it, or ContextOptions::cooperative_matrix is off)"
                    .into(),
            )
        } else if !features.contains(wgpu::Features::SUBGROUP) {
            Some("the device has no Features::SUBGROUP".into())
        } else if sizes.0 < 4 || !sizes.0.is_power_of_two() || !sizes.1.is_power_of_two() {
            Some(format!(
                "subgroup sizes {}..{} are not powers of two of at least 4",
                sizes.0, sizes.1
            ))
        } else if workgroup_bytes < COOP_WORKGROUP_BYTES {
            Some(format!(
                "{workgroup_bytes} bytes of workgroup memory, it needs {COOP_WORKGROUP_BYTES}"
            ))
        } else {
            None
        }
    }

    /// `Unsupported` unless `product` is one of [`Context::linear_products`].
    fn check_product(&self, product: LinearProduct) -> Result<()> {
        if self.linear_products().contains(&product) {
            return Ok(());
        }
        Err(Error::Unsupported {
            adapter: self.adapter_info().name.clone(),
            what: format!("the {product:?} product of the fused linear cross-entropy"),
        })
    }

    /// The device's `min_storage_buffer_offset_alignment`: where every binding starts.
    fn storage_alignment(&self) -> u64 {
        u64::from(self.limits.min_storage_buffer_offset_alignment)
    }

    /// The pipeline of `entry` with storage kinds `a` and `b`, built on first use; the tiled
    /// entry points with `product`.
    fn linear_pipeline(
        &self,
        entry: Entry,
        a: u32,
        b: u32,
        product: LinearProduct,
    ) -> Result<Arc<wgpu::ComputePipeline>> {
        let product = match entry {
            Entry::BlockLogits | Entry::Matmul => product,
            Entry::BlockStats | Entry::BiasGrad => LinearProduct::Tiled,
        };
        let name = format!("linear_xent {} a{a} b{b} {product:?}", entry.name());
        self.named_pipeline(&name, |device| {
            use wgpu::BufferBindingType as T;
            let read = T::Storage { read_only: true };
            let write = T::Storage { read_only: false };
            let types = [T::Uniform, read, read, read, read, read, read, write, write];
            let entries: Vec<_> = (0u32..)
                .zip(types)
                .map(|(i, ty)| layout_entry(i, ty))
                .collect();
            let bgl = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some("linear_xent"),
                entries: &entries,
            });
            let layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some("linear_xent"),
                bind_group_layouts: &[Some(&bgl)],
                immediate_size: 0,
            });
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some("linear_xent.wgsl"),
                source: wgpu::ShaderSource::Wgsl(shader_source(product).into()),
            });
            let constants = [("A_KIND", f64::from(a)), ("B_KIND", f64::from(b))];
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&name),
                layout: Some(&layout),
                module: &module,
                entry_point: Some(entry.name()),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            })
        })
    }
}

/// One call's buffers, cut into chunks of rows and blocks of columns.
struct Sweep<'a> {
    ctx: &'a Context,
    io: Io<'a>,
    rows: usize,
    dim: usize,
    vocab: usize,
    softcap: f32,
    plan: Plan,
    /// The product of the tiled entry points (the context's choice unless a test overrides it).
    product: LinearProduct,
    labels: wgpu::Buffer,
    weight: wgpu::Buffer,
    scratch: wgpu::Buffer,
    stats: wgpu::Buffer,
    placeholder_read: wgpu::Buffer,
    placeholder_write: wgpu::Buffer,
}

impl<'a> Sweep<'a> {
    #[allow(clippy::too_many_arguments)]
    fn new(
        ctx: &'a Context,
        io: Io<'a>,
        labels: &[i32],
        rows: usize,
        dim: usize,
        vocab: usize,
        options: &CrossEntropyOptions,
        plan: Plan,
    ) -> Result<Self> {
        use wgpu::BufferUsages as U;
        let ones;
        let weight: &[f32] = match &options.weight {
            Some(w) => w,
            None => {
                ones = vec![1.0f32; vocab];
                &ones
            }
        };
        let scratch_bytes = (plan.chunk * plan.block) as u64 * 4;
        Ok(Self {
            ctx,
            io,
            rows,
            dim,
            vocab,
            softcap: options.softcap,
            plan,
            product: ctx.linear_product(),
            labels: ctx.buffer_with("labels", bytemuck::cast_slice(labels), U::STORAGE),
            weight: ctx.buffer_with("class weights", bytemuck::cast_slice(weight), U::STORAGE),
            scratch: ctx.create_buffer("linear block", scratch_bytes, U::STORAGE)?,
            stats: ctx.create_buffer(
                "row sums",
                plan.chunk as u64 * 16,
                U::STORAGE | U::COPY_SRC,
            )?,
            placeholder_read: ctx.buffer_with("placeholder", &[0; 16], U::STORAGE),
            placeholder_write: ctx.buffer_with("placeholder", &[0; 16], U::STORAGE),
        })
    }

    /// `(start, len)` of each chunk of rows, or of each block of columns.
    fn pieces(total: usize, step: usize) -> impl Iterator<Item = (usize, usize)> {
        (0..total)
            .step_by(step)
            .map(move |s| (s, step.min(total - s)))
    }

    fn kinds(&self) -> (u32, u32) {
        (
            kind(self.io.hidden_precision),
            kind(self.io.classifier_precision),
        )
    }

    /// Rows `r0..r0 + nr` of a `[rows, dim]` or `[vocab, dim]` slice.
    fn rows_of(&self, slice: Slice<'a>, r0: usize, nr: usize) -> Slice<'a> {
        slice.part((r0 * self.dim) as u64, (nr * self.dim) as u64)
    }

    fn hidden(&self, r0: usize, nr: usize) -> Slice<'a> {
        self.rows_of(self.io.hidden, r0, nr)
    }

    fn classifier(&self, v0: usize, nv: usize) -> Slice<'a> {
        self.rows_of(self.io.classifier, v0, nv)
    }

    fn scratch(&self, nr: usize, nv: usize) -> Slice<'_> {
        words(&self.scratch, 0, nr * nv)
    }

    /// The logits (mode 0) or gradient (mode 1) of one block into the scratch buffer.
    fn block_logits(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        (r0, nr): (usize, usize),
        (v0, nv): (usize, usize),
        rowinfo: Option<Slice<'_>>,
    ) -> Result<()> {
        let (hk, ck) = self.kinds();
        // z [nr, nv] = H[chunk] [nr, dim] @ C[block]^T [dim, nv]
        let dim = self.dim;
        let params = Params {
            v0: v0 as u32,
            mode: u32::from(rowinfo.is_some()),
            has_bias: u32::from(self.io.bias.is_some()),
            softcap: self.softcap,
            ..Params::product((nr, nv, dim), (dim, 1), (1, dim), nv)
        };
        let bind = Bind {
            a: Some(self.hidden(r0, nr)),
            b: Some(self.classifier(v0, nv)),
            bias: self.io.bias.map(|b| b.part(v0 as u64, nv as u64)),
            weight: Some(words(&self.weight, v0, nv)),
            labels: Some(words(&self.labels, r0, nr)),
            rowinfo,
            out: Some(self.scratch(nr, nv)),
            stats: None,
        };
        self.dispatch(pass, Entry::BlockLogits, (hk, ck), params, bind, (nv, nr))
    }

    /// Forward sweep: per chunk, every block's logits merged into the chunk's row sums, which
    /// are copied into one readback buffer; returns them. (Its own loop, not the row kernels'
    /// chunk loop of ops/host.rs: chunks of rows times blocks of the vocabulary, over
    /// linear_xent.wgsl's entry points, with no logits buffer to chunk.)
    fn forward(&self) -> Result<Vec<RowSums>> {
        let ctx = self.ctx;
        let readback = ctx.create_buffer(
            "row sums readback",
            self.rows as u64 * 16,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        )?;
        let mut in_flight = None;
        for chunk in Self::pieces(self.rows, self.plan.chunk) {
            for (i, block) in Self::pieces(self.vocab, self.plan.block).enumerate() {
                self.submit(&mut in_flight, |encoder| {
                    let mut pass = encoder.begin_compute_pass(&Default::default());
                    let pass = &mut pass;
                    self.block_logits(pass, chunk, block, None)?;
                    let params = Params {
                        m: chunk.1 as u32,
                        n: block.1 as u32,
                        ldo: block.1 as u32,
                        v0: block.0 as u32,
                        accumulate: u32::from(i > 0),
                        ..Default::default()
                    };
                    let bind = Bind {
                        weight: Some(words(&self.weight, block.0, block.1)),
                        labels: Some(words(&self.labels, chunk.0, chunk.1)),
                        out: Some(self.scratch(chunk.1, block.1)),
                        stats: Some(quads(&self.stats, 0, chunk.1)),
                        ..Default::default()
                    };
                    let extent = (chunk.1, 1);
                    self.dispatch(pass, Entry::BlockStats, (0, 0), params, bind, extent)
                })?;
            }
            // The chunk's sums, once its last block is merged, to their rows of the readback.
            let (start, bytes) = (chunk.0 as u64 * 16, chunk.1 as u64 * 16);
            self.submit(&mut in_flight, |encoder| {
                encoder.copy_buffer_to_buffer(&self.stats, 0, &readback, start, bytes);
                Ok(())
            })?;
        }
        let raw = ctx.read_bytes(&readback, self.rows * 16)?;
        Ok(bytemuck::pod_collect_to_vec(&raw))
    }

    /// Backward sweep: per chunk and block, the block's gradient, then its share of the three
    /// gradients (d_hidden accumulates over blocks, d_classifier and d_bias over chunks).
    fn backward(&self, coefficients: &[[f32; 4]]) -> Result<()> {
        let ctx = self.ctx;
        let rowinfo = ctx.buffer_with(
            "row constants",
            bytemuck::cast_slice(coefficients),
            wgpu::BufferUsages::STORAGE,
        );
        let (hk, ck) = self.kinds();
        let dim = self.dim;
        let mut in_flight = None;
        for (c, chunk) in Self::pieces(self.rows, self.plan.chunk).enumerate() {
            let (r0, nr) = chunk;
            for (i, block) in Self::pieces(self.vocab, self.plan.block).enumerate() {
                self.submit(&mut in_flight, |encoder| {
                    let mut pass = encoder.begin_compute_pass(&Default::default());
                    let pass = &mut pass;
                    let (v0, nv) = block;
                    let info = quads(&rowinfo, r0, nr);
                    self.block_logits(pass, chunk, block, Some(info))?;
                    // d_hidden[chunk] (+)= G [nr, nv] @ C[block] [nv, dim]
                    let params = Params {
                        accumulate: u32::from(i > 0),
                        ..Params::product((nr, dim, nv), (nv, 1), (dim, 1), dim)
                    };
                    let (g, grad_hidden) = (self.scratch(nr, nv), self.io.grad_hidden);
                    let slices = [
                        g,
                        self.classifier(v0, nv),
                        self.rows_of(grad_hidden, r0, nr),
                    ];
                    self.matmul(pass, (0, ck), params, slices, (self.dim, nr))?;
                    // d_classifier[block] (+)= G^T [nv, nr] @ H[chunk] [nr, dim]
                    let params = Params {
                        accumulate: u32::from(c > 0),
                        ..Params::product((nv, dim, nr), (1, nv), (dim, 1), dim)
                    };
                    let (g, grad_classifier) = (self.scratch(nr, nv), self.io.grad_classifier);
                    let slices = [
                        g,
                        self.hidden(r0, nr),
                        self.rows_of(grad_classifier, v0, nv),
                    ];
                    self.matmul(pass, (0, hk), params, slices, (self.dim, nv))?;
                    // d_bias[block] (+)= column sums of G
                    if let Some(gb) = self.io.grad_bias {
                        let params = Params {
                            n: nv as u32,
                            k: nr as u32,
                            ldo: nv as u32,
                            accumulate: u32::from(c > 0),
                            ..Default::default()
                        };
                        let bind = Bind {
                            a: Some(self.scratch(nr, nv)),
                            out: Some(gb.part(v0 as u64, nv as u64)),
                            ..Default::default()
                        };
                        self.dispatch(pass, Entry::BiasGrad, (0, 0), params, bind, (nv, 1))?;
                    }
                    Ok(())
                })?;
            }
        }
        Ok(())
    }

    /// Records `record` into its own submission and waits for the previous one, so at most
    /// two are queued: each wait covers one block's work (bounded by the context's wait
    /// timeout however large the call), and the GPU always has the next block queued.
    fn submit(
        &self,
        in_flight: &mut Option<wgpu::SubmissionIndex>,
        record: impl FnOnce(&mut wgpu::CommandEncoder) -> Result<()>,
    ) -> Result<()> {
        let ctx = self.ctx;
        let index = ctx.scoped(|| {
            let mut encoder = ctx.device.create_command_encoder(&Default::default());
            record(&mut encoder)?;
            Ok(ctx.queue.submit([encoder.finish()]))
        })?;
        if let Some(previous) = in_flight.replace(index) {
            ctx.device
                .poll(wgpu::PollType::Wait {
                    submission_index: Some(previous),
                    timeout: Some(ctx.wait_timeout),
                })
                .map_err(|e| Error::Wait(e.to_string()))?;
        }
        Ok(())
    }

    /// The plain product `H C^T`, block by block into the scratch buffer (bench only).
    fn plain_product(&self) -> Result<()> {
        let (hk, ck) = self.kinds();
        let mut in_flight = None;
        for chunk in Self::pieces(self.rows, self.plan.chunk) {
            for block in Self::pieces(self.vocab, self.plan.block) {
                self.submit(&mut in_flight, |encoder| {
                    let mut pass = encoder.begin_compute_pass(&Default::default());
                    let (dim, (nr, nv)) = (self.dim, (chunk.1, block.1));
                    let params = Params::product((nr, nv, dim), (dim, 1), (1, dim), nv);
                    let (h, c) = (self.hidden(chunk.0, nr), self.classifier(block.0, nv));
                    let slices = [h, c, self.scratch(nr, nv)];
                    self.matmul(&mut pass, (hk, ck), params, slices, (nv, nr))
                })?;
            }
        }
        Ok(())
    }

    /// A `matmul` dispatch: `out (+)= A B` for `[a, b, out]`, A and B of storage kinds
    /// `kinds`, over `extent` (columns, rows) of `out`.
    fn matmul(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        kinds: (u32, u32),
        params: Params,
        [a, b, out]: [Slice<'_>; 3],
        extent: (usize, usize),
    ) -> Result<()> {
        let bind = Bind {
            a: Some(a),
            b: Some(b),
            out: Some(out),
            ..Default::default()
        };
        self.dispatch(pass, Entry::Matmul, kinds, params, bind, extent)
    }

    /// Records one dispatch: `extent` is (columns, rows) of its output for the tiled kernels
    /// (64 x 64 per workgroup), (threads, 1) for the 1-D ones (64 per workgroup).
    fn dispatch(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        entry: Entry,
        (a, b): (u32, u32),
        params: Params,
        bind: Bind<'_>,
        extent: (usize, usize),
    ) -> Result<()> {
        let ctx = self.ctx;
        let pipeline = ctx.linear_pipeline(entry, a, b, self.product)?;
        let uniform = ctx.buffer_with(
            "linear params",
            bytemuck::bytes_of(&params),
            wgpu::BufferUsages::UNIFORM,
        );
        let align = ctx.storage_alignment();
        let read = |r| resource(r, &self.placeholder_read, align);
        let write = |r| resource(r, &self.placeholder_write, align);
        let resources = [
            uniform.as_entire_binding(),
            read(bind.a),
            read(bind.b),
            read(bind.bias),
            read(bind.weight),
            read(bind.labels),
            read(bind.rowinfo),
            write(bind.out),
            write(bind.stats),
        ];
        let entries: Vec<_> = (0u32..)
            .zip(resources)
            .map(|(binding, resource)| wgpu::BindGroupEntry { binding, resource })
            .collect();
        let group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("linear_xent"),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        let groups = |n: usize| u32::try_from(n.div_ceil(TILE)).ok().filter(|&g| g <= 65535);
        let (x, y) = match (groups(extent.0), groups(extent.1)) {
            (Some(x), Some(y)) => (x, y),
            _ => {
                return Err(Error::ShapeOverflow {
                    rows: extent.1,
                    cols: extent.0,
                });
            }
        };
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &group, &[]);
        pass.dispatch_workgroups(x, y, 1);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_fits_one_binding() {
        // Everything fits: one chunk, the widest block.
        assert_eq!(
            plan(100, 64, 5000, 1 << 27).unwrap(),
            Plan {
                chunk: 100,
                block: 2048
            }
        );
        // A small vocabulary is one block.
        assert_eq!(
            plan(100, 64, 300, 1 << 27).unwrap(),
            Plan {
                chunk: 100,
                block: 300
            }
        );
        // 4096 rows x 2048 x 4 bytes = 32 MiB > 16 MiB: chunks of 2048 rows.
        assert_eq!(
            plan(4096, 128, 131072, 16 << 20).unwrap(),
            Plan {
                chunk: 2048,
                block: 2048
            }
        );
        // A tiny binding narrows the block until 128 rows fit.
        let p = plan(1000, 200, 1000, 262_144).unwrap();
        assert_eq!(
            p,
            Plan {
                chunk: 256,
                block: 256
            }
        );
        // A hidden size so large that 256 classifier rows overflow the binding is an error.
        assert!(matches!(
            plan(10, 1 << 20, 1000, 1 << 27),
            Err(Error::InvalidOption { name: "dim", .. })
        ));
    }
}
