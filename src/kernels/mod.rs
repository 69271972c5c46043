//! The compute kernels: their WGSL, their variants, and how a call becomes dispatches.
//! Internal: the crate's public API is [`crate::Context`]; this module is visible only for
//! the tests, the benchmark and the command line (`#[doc(hidden)]`).
//!
//! Read in this order (README's Layout draws the same):
//! - [`variant`]: the typed variant model: [`ShaderVariant`] (one row_softmax WGSL text: the
//!   team and io axes, each an enum) inside [`ModuleKey`],
//!   [`PipelineKey`] (a module specialised: entry point, geometry, loss options), and
//!   [`Io::for_rows`], the rule for the io axis (`row_softmax::choose_variant` applies it
//!   and picks the team: the one place a dispatch's variant is chosen);
//! - [`source`]: the fragment files each axis contributes and the generated storage
//!   declarations (no text rewriting);
//! - [`strategy`]: the reduction strategies and the table `Auto` follows;
//! - [`autotune`]: `Auto` chosen by timing the candidates on the adapter instead;
//! - [`geometry`]: lanes per row and per workgroup, grids, cache and split sizes;
//! - [`software`]: the paths that exist only for software adapters (llvmpipe), fenced;
//! - [`layouts`]: bind group layouts and [`Slice`] (aligned bindings of buffer ranges);
//! - one module per pipeline family, each recording its dispatches:
//!   [`row_softmax`] (softmax and fused cross-entropy), [`batch_sum`] (the sums over rows of
//!   a reduced loss), [`copy`] (the benchmark's speed-of-light copy).

pub mod autotune;
pub mod batch_sum;
pub mod copy;
pub mod geometry;
pub mod layouts;
pub mod row_softmax;
pub mod software;
pub mod source;
pub mod strategy;
pub mod variant;

pub use geometry::{
    MAX_GRID_DIM, MAX_WORKGROUP_LANES, SUBGROUP_WORKGROUP_LANES, WORKGROUP_LANES, grid,
};
pub use layouts::{Binding, Layouts, Slice};
pub use strategy::Strategy;
pub use variant::{
    Access, Io, ModuleKey, PipelineKey, Place, Precision, ShaderVariant, Specialisation, TeamKind,
    Words, all_pipeline_keys,
};
