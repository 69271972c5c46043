//! Everything that exists only for software adapters (llvmpipe: lavapipe on Vulkan, llvmpipe
//! GL), fenced here so that the GPU paths read without it; chosen in one place each:
//!
//! - the **io paths** measured faster there ([`SoftwareIo`], chosen once per context from
//!   `ContextOptions::software_io`): blocks held as 64-bit words (`words64.wgsl`), units of
//!   two blocks for one lane per row (the pair files `io_*x8.wgsl` with `io_pairs.wgsl`,
//!   taken by `Io::for_rows` only with 64-bit words), and halves converted by bit operations
//!   (`f16.wgsl`'s `F16_BITS`);
//! - the **strategy table** for CPU adapters ([`strategy`], called by `Strategy::resolve`);
//! - the **loop limit** of llvmpipe ([`SOFTWARE_LOOP_TURNS`], checked by
//!   [`check_loop_turns`] before every row dispatch on a CPU adapter).
//!
//! Why each exists, with the measurements: BENCHMARKS.md ("Software adapters").

use super::geometry::{MAX_CACHE_BLOCKS, SPLIT_CHUNK_COLS};
use super::strategy::Strategy;
use crate::error::{Error, Result};

/// The software io paths of a context: both on by default on CPU adapters only (GPUs keep
/// 32-bit words and their f16 instructions; not measured there). Results are the same bits
/// either way (tests/gpu.rs checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SoftwareIo {
    /// Blocks as 64-bit words (`words64.wgsl`, needs `Features::SHADER_INT64`), and with
    /// them the pair files for one lane per row.
    pub words64: bool,
    /// Halves converted by bit operations (`f16.wgsl`, `F16_BITS`).
    pub f16_bits: bool,
}

impl SoftwareIo {
    /// The choice for a device: `forced` (`ContextOptions::software_io`) or, when `None`,
    /// whether the adapter is a CPU.
    pub fn choose(
        forced: Option<bool>,
        device_type: wgpu::DeviceType,
        features: wgpu::Features,
    ) -> Self {
        let on = forced.unwrap_or(device_type == wgpu::DeviceType::Cpu);
        SoftwareIo {
            words64: on && features.contains(wgpu::Features::SHADER_INT64),
            f16_bits: on,
        }
    }
}

/// Software adapters: fewer rows than this, when longer than [`SOFTWARE_LONG_COLS`], share
/// lanes ([`strategy`]): one lane per row was behind `Subgroup` for 1 to 4 long rows and
/// ahead or even at 8 (BENCHMARKS.md, "Software adapters: where few long rows share lanes").
pub const SOFTWARE_FEW_ROWS: usize = 5;
/// Software adapters: rows longer than this count as long for [`SOFTWARE_FEW_ROWS`]: where
/// `Subgroup` overtook one lane per row on lavapipe once rows moved in 32-byte units
/// (BENCHMARKS.md, same section).
pub const SOFTWARE_LONG_COLS: usize = 32_768;

/// `Strategy::Auto` on a software adapter: one lane per row unless the rows are few and
/// long or one lane would pass the loop limit; then the first of `Subgroup`, 8 lanes and
/// 256 lanes whose lanes stay within [`SOFTWARE_LOOP_TURNS`]. llvmpipe runs 8 lanes as one
/// SIMD vector and every storage access as a loop over them, so lanes sharing a row gain no
/// bandwidth and only add reductions; but a few long rows in one lane each would leave most
/// of its SIMD lanes and threads idle. The split layout measured slower at every shape
/// there. Measurements: BENCHMARKS.md ("Software adapters: the strategy table").
pub fn strategy(rows: usize, cols: usize, subgroup_size: Option<u32>) -> Strategy {
    let fits = |team: u32| loop_turns(cols as u64, team.into(), 0) <= SOFTWARE_LOOP_TURNS;
    let few_long_rows = rows < SOFTWARE_FEW_ROWS && cols > SOFTWARE_LONG_COLS;
    match () {
        _ if fits(1) && !few_long_rows => Strategy::Workgroup { lanes: 1 },
        _ if subgroup_size.is_some_and(fits) => Strategy::Subgroup,
        _ if fits(8) => Strategy::Workgroup { lanes: 8 },
        _ => Strategy::Workgroup { lanes: 256 },
    }
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

/// Refuses a dispatch whose lanes would pass llvmpipe's loop limit (on CPU adapters only):
/// `cols` columns per row in teams of `team` lanes, split into chunks for `split`.
pub fn check_loop_turns(
    adapter: &wgpu::AdapterInfo,
    strategy: Strategy,
    cols: u32,
    team: u32,
) -> Result<()> {
    let cols = u64::from(cols);
    let turns = if strategy.is_split() {
        let chunk = u64::from(SPLIT_CHUNK_COLS);
        loop_turns(cols.min(chunk), team.into(), cols.div_ceil(chunk))
    } else {
        loop_turns(cols, team.into(), 0)
    };
    if adapter.device_type == wgpu::DeviceType::Cpu && turns > SOFTWARE_LOOP_TURNS {
        return Err(Error::Unsupported {
            adapter: adapter.name.clone(),
            what: format!(
                "strategy {strategy} needs up to {turns} loop turns per lane for {cols} columns, \
                 and software adapters (llvmpipe) end a shader's loops after {SOFTWARE_LOOP_TURNS}: \
                 use a strategy with more lanes per row (Auto picks one)"
            ),
        });
    }
    Ok(())
}
