//! What a dispatch binds: the bind group and pipeline layouts of each module family (built
//! once per context), and [`Slice`], a range of a buffer split into an aligned binding and
//! the element offset the shader adds.

use super::variant::{ModuleKey, Place};
use super::{batch_sum, copy, row_softmax};

/// The bind group layouts and pipeline layouts of every family, built once per context.
pub struct Layouts {
    row_softmax: (wgpu::BindGroupLayout, wgpu::PipelineLayout),
    row_softmax_inplace: (wgpu::BindGroupLayout, wgpu::PipelineLayout),
    batch_sum: (wgpu::BindGroupLayout, wgpu::PipelineLayout),
    copy: (wgpu::BindGroupLayout, wgpu::PipelineLayout),
}

impl Layouts {
    /// Builds the layouts on `device`.
    pub fn new(device: &wgpu::Device) -> Self {
        Self {
            row_softmax: layout(
                device,
                "row_softmax",
                row_softmax::bindings(Place::Separate),
            ),
            row_softmax_inplace: layout(
                device,
                "row_softmax in place",
                row_softmax::bindings(Place::InPlace),
            ),
            batch_sum: layout(device, "batch_sum", (0..).zip(batch_sum::BINDINGS.to_vec())),
            copy: layout(device, "copy", (0..).zip(copy::BINDINGS.to_vec())),
        }
    }

    /// The bind group layout of a module.
    pub fn bind_group_layout(&self, module: ModuleKey) -> &wgpu::BindGroupLayout {
        &self.pair(module).0
    }

    /// The pipeline layout of a module.
    pub fn pipeline_layout(&self, module: ModuleKey) -> &wgpu::PipelineLayout {
        &self.pair(module).1
    }

    fn pair(&self, module: ModuleKey) -> &(wgpu::BindGroupLayout, wgpu::PipelineLayout) {
        match module {
            ModuleKey::RowSoftmax(v) if v.io.in_place() => &self.row_softmax_inplace,
            ModuleKey::RowSoftmax(_) => &self.row_softmax,
            ModuleKey::BatchSum => &self.batch_sum,
            ModuleKey::Copy { .. } => &self.copy,
        }
    }
}

/// How a shader binding is declared: a uniform, a read-only or a read-write storage buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// `var<uniform>`
    Uniform,
    /// `var<storage, read>`
    Read,
    /// `var<storage, read_write>`
    ReadWrite,
}

/// The layouts of a module whose bindings are these (number, kind).
fn layout(
    device: &wgpu::Device,
    label: &str,
    bindings: impl IntoIterator<Item = (u32, Binding)>,
) -> (wgpu::BindGroupLayout, wgpu::PipelineLayout) {
    let entries: Vec<wgpu::BindGroupLayoutEntry> = bindings
        .into_iter()
        .map(|(binding, b)| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: match b {
                    Binding::Uniform => wgpu::BufferBindingType::Uniform,
                    Binding::Read => wgpu::BufferBindingType::Storage { read_only: true },
                    Binding::ReadWrite => wgpu::BufferBindingType::Storage { read_only: false },
                },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        })
        .collect();
    let bgl = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some(label),
        entries: &entries,
    });
    let pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some(label),
        bind_group_layouts: &[Some(&bgl)],
        immediate_size: 0,
    });
    (bgl, pl)
}

/// A range of elements of a buffer, as one dispatch binds it.
///
/// Storage bindings must start at a multiple of `min_storage_buffer_offset_alignment`, but a
/// chunk of rows can start anywhere; so the binding starts at the aligned offset at or below
/// the chunk and the shader adds `base` elements. [`Slice::bind`] does that split.
#[derive(Debug, Clone, Copy)]
pub struct Slice<'a> {
    /// The buffer.
    pub buffer: &'a wgpu::Buffer,
    /// First element.
    pub start: u64,
    /// Number of elements.
    pub len: u64,
    /// Bytes per element: 4 (f32, i32) or 2 (f16, bf16).
    pub elem_bytes: u64,
}

impl<'a> Slice<'a> {
    /// A slice of 4-byte elements.
    pub fn words(buffer: &'a wgpu::Buffer, start: u64, len: u64) -> Self {
        Self {
            buffer,
            start,
            len,
            elem_bytes: 4,
        }
    }

    /// `len` elements from element `first` of this slice.
    pub fn part(self, first: u64, len: u64) -> Self {
        Slice {
            start: self.start + first,
            len,
            ..self
        }
    }

    /// The binding and the element offset (`base`) the shader must add. The binding's size
    /// is rounded up to whole 4-byte words, so 2-byte data needs buffers padded to 4 bytes.
    pub fn bind(&self, align: u64) -> (wgpu::BufferBinding<'a>, u32) {
        let start_bytes = self.start * self.elem_bytes;
        let offset = start_bytes / align * align;
        let base = (start_bytes - offset) / self.elem_bytes;
        let size = ((base + self.len.max(1)) * self.elem_bytes).next_multiple_of(4);
        (
            wgpu::BufferBinding {
                buffer: self.buffer,
                offset,
                size: wgpu::BufferSize::new(size),
            },
            base as u32,
        )
    }

    /// [`Slice::bind`] for the vector io files: the binding starts at a multiple of 16 bytes
    /// and holds whole 4-element vectors (its size rounded up to `4 * elem_bytes`), so every
    /// element of the slice is in some whole vector of it. `None` when the buffer ends before
    /// the rounded size.
    pub fn bind_vectors(&self, align: u64) -> Option<(wgpu::BufferBinding<'a>, u32)> {
        self.bind_whole(align, 4)
    }

    /// [`Slice::bind_vectors`] for the pair files' units of 8 elements (io_*x8.wgsl).
    pub fn bind_units(&self, align: u64) -> Option<(wgpu::BufferBinding<'a>, u32)> {
        self.bind_whole(align, 8)
    }

    /// A binding of whole `elems`-element pieces, starting at a multiple of 16 bytes and of
    /// their size.
    fn bind_whole(&self, align: u64, elems: u64) -> Option<(wgpu::BufferBinding<'a>, u32)> {
        let piece_bytes = elems * self.elem_bytes;
        let (mut binding, base) = self.bind(align.max(16).max(piece_bytes));
        let size = binding.size?.get().next_multiple_of(piece_bytes);
        if binding.offset + size > self.buffer.size() {
            return None;
        }
        binding.size = wgpu::BufferSize::new(size);
        Some((binding, base))
    }
}

/// A bind group entry of a whole buffer.
pub(super) fn whole(binding: u32, buffer: &wgpu::Buffer) -> wgpu::BindGroupEntry<'_> {
    wgpu::BindGroupEntry {
        binding,
        resource: buffer.as_entire_binding(),
    }
}

/// A bind group entry of part of a buffer.
pub(super) fn part(binding: u32, buffer: wgpu::BufferBinding<'_>) -> wgpu::BindGroupEntry<'_> {
    wgpu::BindGroupEntry {
        binding,
        resource: wgpu::BindingResource::Buffer(buffer),
    }
}
