//! The compute kernels: their WGSL sources, specialisations, bind group layouts, and the
//! choice of reduction strategy.
//!
//! One module per pipeline family:
//! - [`row_softmax`]: per-row softmax and fused cross-entropy (`shaders/row_softmax.wgsl`,
//!   with an io file in front (`io_f32.wgsl`, `io_f16.wgsl`, `io_bf16.wgsl` and their vector
//!   twins `io_*x4.wgsl`, which take `words32.wgsl` or `words64.wgsl` behind them, and the
//!   pair files `io_*x8.wgsl` for one lane per row on software adapters (with
//!   `words64.wgsl` and `io_pairs.wgsl`); `io_single.wgsl` behind the others; the bf16 ones
//!   after `bf16.wgsl`, the f16 vector ones before `f16.wgsl`) and a team file,
//!   `team_workgroup.wgsl` or `team_subgroup.wgsl`, and `kahan.wgsl`);
//! - [`batch_sum`]: sums over rows for the reduced loss (`shaders/batch_sum.wgsl`, after
//!   `kahan.wgsl`);
//! - [`copy`]: the benchmark's speed-of-light copy (`shaders/copy.wgsl`, after the line
//!   that says its unit).

pub mod batch_sum;
pub mod copy;
pub mod row_softmax;

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

const ROW_SOFTMAX: &str = include_str!("../../shaders/row_softmax.wgsl");
const TEAM_WORKGROUP: &str = include_str!("../../shaders/team_workgroup.wgsl");
const TEAM_SUBGROUP: &str = include_str!("../../shaders/team_subgroup.wgsl");
const IO_F32: &str = include_str!("../../shaders/io_f32.wgsl");
const IO_F32X4: &str = include_str!("../../shaders/io_f32x4.wgsl");
const IO_F32X8: &str = include_str!("../../shaders/io_f32x8.wgsl");
const IO_F16X8: &str = include_str!("../../shaders/io_f16x8.wgsl");
const IO_BF16X8: &str = include_str!("../../shaders/io_bf16x8.wgsl");
const IO_SINGLE: &str = include_str!("../../shaders/io_single.wgsl");
const IO_PAIRS: &str = include_str!("../../shaders/io_pairs.wgsl");
const IO_F16: &str = include_str!("../../shaders/io_f16.wgsl");
const IO_F16X4: &str = include_str!("../../shaders/io_f16x4.wgsl");
const BF16: &str = include_str!("../../shaders/bf16.wgsl");
const F16_BITS: &str = include_str!("../../shaders/f16.wgsl");
const IO_BF16: &str = include_str!("../../shaders/io_bf16.wgsl");
const IO_BF16X4: &str = include_str!("../../shaders/io_bf16x4.wgsl");
const KAHAN: &str = include_str!("../../shaders/kahan.wgsl");
const BATCH_SUM: &str = include_str!("../../shaders/batch_sum.wgsl");
const COPY: &str = include_str!("../../shaders/copy.wgsl");
const WORDS32: &str = include_str!("../../shaders/words32.wgsl");
const WORDS64: &str = include_str!("../../shaders/words64.wgsl");

/// Lanes per workgroup of the workgroup-tree strategy (or the team size, when larger).
pub const WORKGROUP_LANES: u32 = 256;
/// Lanes per workgroup of the subgroup strategy, which depends on the subgroup size: one
/// row per subgroup, so 64 / size rows per workgroup (16 at 4 lanes, 8 on lavapipe's default
/// 8, 2 on NVIDIA's 32, 1 on AMD's 64), and one whole subgroup when the subgroup is larger
/// (`row_softmax::subgroup_shape`).
pub const SUBGROUP_WORKGROUP_LANES: u32 = 64;
/// The largest workgroup the shaders' workgroup-memory scratch supports.
pub const MAX_WORKGROUP_LANES: u32 = 1024;
/// Workgroups per grid dimension that every adapter accepts (WebGPU's limit).
pub const MAX_GRID_DIM: u32 = 65535;

/// How the lanes of a row reduce together (the team file of a row_softmax module).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TeamKind {
    /// `team_workgroup.wgsl`: barrier trees in workgroup memory.
    Workgroup,
    /// `team_subgroup.wgsl`: one subgroup per row (needs `Features::SUBGROUP`).
    Subgroup,
}

/// The storage format of logits and outputs (gradient, probabilities). Arithmetic is f32
/// in every case; targets, weights and per-row values are always f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    /// 32-bit floats.
    #[default]
    F32,
    /// IEEE half floats (`f16` in WGSL); needs `Features::SHADER_F16`.
    F16,
    /// bfloat16, two per u32 word (WGSL has no bf16 type); works on every adapter.
    Bf16,
}

impl Precision {
    /// Bytes per element.
    pub fn bytes(self) -> u64 {
        match self {
            Precision::F32 => 4,
            Precision::F16 | Precision::Bf16 => 2,
        }
    }
}

/// How elements are stored (the io file of a row_softmax module).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Io {
    /// The element format.
    pub precision: Precision,
    /// Whether the output overwrites the logits.
    pub in_place: bool,
    /// Logits and output bound as arrays of 4-element vectors (io_f32x4.wgsl,
    /// io_f16x4.wgsl, io_bf16x4.wgsl), when the buffers allow it (see [`Io::for_rows`]).
    pub vec4: bool,
    /// The vectors held as 64-bit words (words64.wgsl, needs `Features::SHADER_INT64`)
    /// instead of 32-bit ones (words32.wgsl); see [`crate::Context::words64`]. Only with
    /// `vec4`.
    pub words64: bool,
    /// Bound as units of two blocks (io_f32x8.wgsl, io_f16x8.wgsl, io_bf16x8.wgsl: 32 bytes
    /// of f32, 16 of halves), read and written two blocks at a time: for one lane per row
    /// (`TEAM_SIZE` 1) only, with `words64`.
    pub pairs: bool,
}

impl Io {
    /// Every io variant the shaders have (bf16 has no in-place variant; scalar files have
    /// no word size).
    pub const ALL: [Io; 20] = [
        Io::new(Precision::F32, false, false, false, false),
        Io::new(Precision::F32, true, false, false, false),
        Io::new(Precision::F32, false, true, false, false),
        Io::new(Precision::F32, true, true, false, false),
        Io::new(Precision::F32, false, true, true, false),
        Io::new(Precision::F32, true, true, true, false),
        Io::new(Precision::F32, false, true, true, true),
        Io::new(Precision::F32, true, true, true, true),
        Io::new(Precision::F16, false, false, false, false),
        Io::new(Precision::F16, true, false, false, false),
        Io::new(Precision::F16, false, true, false, false),
        Io::new(Precision::F16, true, true, false, false),
        Io::new(Precision::F16, false, true, true, false),
        Io::new(Precision::F16, true, true, true, false),
        Io::new(Precision::F16, false, true, true, true),
        Io::new(Precision::F16, true, true, true, true),
        Io::new(Precision::Bf16, false, false, false, false),
        Io::new(Precision::Bf16, false, true, false, false),
        Io::new(Precision::Bf16, false, true, true, false),
        Io::new(Precision::Bf16, false, true, true, true),
    ];

    const fn new(
        precision: Precision,
        in_place: bool,
        vec4: bool,
        words64: bool,
        pairs: bool,
    ) -> Self {
        Io {
            precision,
            in_place,
            vec4,
            words64,
            pairs,
        }
    }

    /// The io file for a dispatch. Data takes a vector file when logits and output can be
    /// bound as whole 4-element vectors (`vector_bases`: their element offsets in such
    /// bindings, from [`Slice::bind_vectors`]) at the same offset modulo 4, so that every
    /// block of 4 columns the row code reads is one vector of each; everything else takes
    /// scalar access. (bf16 in place has no vector file, as it has no scalar one.) The
    /// vectors are 64-bit words when `words64`; then units of two blocks (io_f32x8.wgsl
    /// and its half twins) are taken when `unit_bases` (the bases in bindings of whole
    /// units, from [`Slice::bind_units`]) line up modulo 8 and the dispatch has one lane per
    /// row.
    pub fn for_rows(
        precision: Precision,
        in_place: bool,
        vector_bases: Option<(u32, u32)>,
        words64: bool,
        unit_bases: Option<(u32, u32)>,
        one_lane_per_row: bool,
    ) -> Self {
        let vec4 = vector_bases.is_some_and(|(logits, out)| logits % 4 == out % 4)
            && !(precision == Precision::Bf16 && in_place);
        let words64 = vec4 && words64;
        let pairs = words64
            && one_lane_per_row
            && unit_bases.is_some_and(|(logits, out)| logits % 8 == out % 8);
        Io::new(precision, in_place, vec4, words64, pairs)
    }

    /// Whether the io file has the `F16_BITS` override (io_f16x4.wgsl or io_f16x8.wgsl, with
    /// f16.wgsl).
    pub fn has_f16_bits(self) -> bool {
        self.precision == Precision::F16 && self.vec4
    }

    /// The WGSL text of the io file.
    fn source(self) -> String {
        let text = match self.precision {
            Precision::F32 if self.pairs => IO_F32X8,
            Precision::F32 if self.vec4 => IO_F32X4,
            Precision::F32 => IO_F32,
            Precision::F16 if self.pairs => IO_F16X8,
            Precision::F16 if self.vec4 => IO_F16X4,
            Precision::F16 => IO_F16,
            Precision::Bf16 if self.pairs => IO_BF16X8,
            Precision::Bf16 if self.vec4 => IO_BF16X4,
            Precision::Bf16 => IO_BF16,
        };
        let text = if self.precision == Precision::Bf16 {
            format!("{BF16}\n{text}")
        } else {
            text.to_string()
        };
        // After the io file, whose `enable f16;` must open the module (WGSL declarations
        // may be used before they appear).
        let text = if self.vec4 {
            format!("{text}\n{}", words(self.words64))
        } else {
            text
        };
        let text = if self.has_f16_bits() {
            format!("{text}\n{F16_BITS}")
        } else {
            text
        };
        let text = if self.pairs {
            format!("{text}\n{IO_PAIRS}")
        } else {
            format!("{text}\n{IO_SINGLE}")
        };
        if self.in_place { in_place(&text) } else { text }
    }
}

/// The file that says how the vector io files hold a block.
fn words(words64: bool) -> &'static str {
    if words64 { WORDS64 } else { WORDS32 }
}

/// The in-place variant of an io file (see io_f32.wgsl): `logits` becomes read_write, the
/// `out` binding (6) is dropped, and every store goes to `logits`.
fn in_place(io: &str) -> String {
    io.lines()
        .filter(|line| !line.contains("@binding(6)"))
        .map(|line| {
            line.replace(
                "var<storage, read> logits",
                "var<storage, read_write> logits",
            )
            .replace("out[", "logits[")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A shader module: one WGSL source, possibly several files put together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModuleKey {
    /// Row softmax / cross-entropy: io file + team file + row_softmax.wgsl.
    RowSoftmax {
        /// The team file.
        team: TeamKind,
        /// The io file.
        io: Io,
    },
    /// Batch sums for the reductions.
    BatchSum,
    /// The copy kernel.
    Copy {
        /// 32-byte units of 64-bit words (as io_f32x8.wgsl moves) instead of 16-byte
        /// units of 32-bit words.
        words64: bool,
    },
}

impl ModuleKey {
    /// Every module, for the shader validation test.
    pub fn all() -> Vec<ModuleKey> {
        let mut all = Vec::new();
        for team in [TeamKind::Workgroup, TeamKind::Subgroup] {
            for io in Io::ALL {
                all.push(ModuleKey::RowSoftmax { team, io });
            }
        }
        all.extend([
            ModuleKey::BatchSum,
            ModuleKey::Copy { words64: false },
            ModuleKey::Copy { words64: true },
        ]);
        all
    }

    /// The complete WGSL text of the module.
    pub fn source(self) -> String {
        match self {
            ModuleKey::RowSoftmax { team, io } => {
                let io = io.source();
                let team = match team {
                    TeamKind::Workgroup => TEAM_WORKGROUP,
                    TeamKind::Subgroup => TEAM_SUBGROUP,
                };
                format!("{io}\n{team}\n{KAHAN}\n{ROW_SOFTMAX}")
            }
            ModuleKey::BatchSum => format!("{KAHAN}\n{BATCH_SUM}"),
            ModuleKey::Copy { words64 } => {
                let unit = if words64 { "vec4<u64>" } else { "vec4<u32>" };
                format!("alias Unit = {unit};\n{COPY}")
            }
        }
    }

    /// A label for wgpu's error messages.
    pub fn label(self) -> String {
        match self {
            ModuleKey::RowSoftmax { team, io } => format!("row_softmax {team:?} {io:?}"),
            ModuleKey::BatchSum => "batch_sum".into(),
            ModuleKey::Copy { words64 } => format!("copy words64={words64}"),
        }
    }

    /// Whether the module needs `Features::SHADER_F16`.
    pub fn needs_f16(self) -> bool {
        matches!(
            self,
            ModuleKey::RowSoftmax {
                io: Io {
                    precision: Precision::F16,
                    ..
                },
                ..
            }
        )
    }

    /// Whether the module needs `Features::SHADER_INT64` (64-bit words).
    pub fn needs_int64(self) -> bool {
        match self {
            ModuleKey::RowSoftmax { io, .. } => io.words64,
            ModuleKey::Copy { words64 } => words64,
            ModuleKey::BatchSum => false,
        }
    }

    /// Whether the module needs `Features::SUBGROUP`.
    pub fn needs_subgroups(self) -> bool {
        matches!(
            self,
            ModuleKey::RowSoftmax {
                team: TeamKind::Subgroup,
                ..
            }
        )
    }

    /// The entry points of the module.
    pub fn entry_points(self) -> &'static [&'static str] {
        match self {
            ModuleKey::RowSoftmax {
                team: TeamKind::Workgroup,
                ..
            } => &[
                "softmax_main",
                "cross_entropy_main",
                "split_stats_main",
                "split_write_main",
            ],
            ModuleKey::RowSoftmax { .. } => &["softmax_main", "cross_entropy_main"],
            ModuleKey::BatchSum => &["target_weight_sum", "loss_sum"],
            ModuleKey::Copy { .. } => &["copy_main"],
        }
    }
}

/// One pipeline: a module, an entry point and the values of its override constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PipelineKey {
    /// The module.
    pub module: ModuleKey,
    /// Index into [`ModuleKey::entry_points`].
    pub entry: usize,
    /// `WORKGROUP_SIZE`.
    pub workgroup_size: u32,
    /// `TEAM_SIZE` (workgroup-team module only).
    pub team_size: u32,
    /// `CACHE_BLOCKS` (row_softmax only): vec4s of its row each lane holds in registers
    /// between the passes (`Strategy::Cached`); 0 reads the row twice.
    pub cache_blocks: u32,
    /// `WHOLE_BATCH` (row_softmax cross-entropy only): the dispatch is the whole batch in one
    /// workgroup and also sums the batch (see [`row_softmax::one_workgroup`]).
    pub whole_batch: bool,
    /// The row_softmax specialisation (which options the code handles).
    pub options: Specialisation,
    /// `F16_BITS` (io_f16x4.wgsl only, see [`Io::has_f16_bits`]): convert halves with
    /// f16.wgsl's bit operations instead of `unpack2x16float` / `pack2x16float`.
    pub f16_bits: bool,
}

/// The loss options a row_softmax pipeline is specialised for (its override constants).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Specialisation {
    /// `HAS_WEIGHTS`: class weights.
    pub weights: bool,
    /// `SOFTCAP`: soft-capping.
    pub softcap: bool,
    /// `PROBS`: probability targets.
    pub probs: bool,
    /// `SMOOTHING`: label smoothing.
    pub smoothing: bool,
}

impl Specialisation {
    /// Every combination, for the shader validation test.
    pub fn all() -> Vec<Specialisation> {
        (0..16u8)
            .map(|bits| Specialisation {
                weights: bits & 1 != 0,
                softcap: bits & 2 != 0,
                probs: bits & 4 != 0,
                smoothing: bits & 8 != 0,
            })
            .collect()
    }
}

impl PipelineKey {
    /// A key of a module with no specialisation but its workgroup size (batch_sum, copy).
    pub fn plain(module: ModuleKey, entry: usize) -> Self {
        PipelineKey {
            module,
            entry,
            workgroup_size: WORKGROUP_LANES,
            team_size: 0,
            cache_blocks: 0,
            whole_batch: false,
            options: Specialisation::default(),
            f16_bits: false,
        }
    }

    /// The entry point's name.
    pub fn entry_point(&self) -> &'static str {
        self.module.entry_points()[self.entry]
    }

    /// The pipeline-overridable constants of this specialisation.
    pub fn constants(&self) -> Vec<(&'static str, f64)> {
        let mut c = vec![("WORKGROUP_SIZE", f64::from(self.workgroup_size))];
        if let ModuleKey::RowSoftmax { team, io } = self.module {
            let flag = |on: bool| if on { 1.0 } else { 0.0 };
            if team == TeamKind::Workgroup {
                c.push(("TEAM_SIZE", f64::from(self.team_size)));
            }
            if io.has_f16_bits() {
                c.push(("F16_BITS", flag(self.f16_bits)));
            }
            c.push(("CACHE_BLOCKS", f64::from(self.cache_blocks)));
            c.push(("WHOLE_BATCH", flag(self.whole_batch)));
            c.push(("HAS_WEIGHTS", flag(self.options.weights)));
            c.push(("SOFTCAP", flag(self.options.softcap)));
            c.push(("PROBS", flag(self.options.probs)));
            c.push(("SMOOTHING", flag(self.options.smoothing)));
        }
        c
    }
}

/// Software adapters: fewer rows than this, when longer than [`SOFTWARE_LONG_COLS`], share
/// lanes (see [`Strategy::resolve`]). Measured on lavapipe, `wg1` against `Subgroup` (ratio
/// to the 32-bit copy, before 32-byte units): 1 row 11-14% against 38-41% from 131,072
/// columns, 3x65536 27-29% against 39%, 4x32000 / 4x131072 / 4x262144 38/24/27% against
/// 44/31/34%; at 8 rows `wg1` is ahead or
/// even (8x262144 38% against 33%, 8x100000 31% against 32%; on llvmpipe GL 29% against
/// `wg8`'s 23%). 5 to 7 rows are unmeasured.
pub const SOFTWARE_FEW_ROWS: usize = 5;
/// Software adapters: rows longer than this count as long for [`SOFTWARE_FEW_ROWS`]. With
/// 32-byte units (05682af), one lane per row against `Subgroup` on lavapipe, two runs of
/// `--strategies wg1,subgroup`: 1x20000 0.176 against 0.188-0.214 ms, 2x24000 0.209-0.246
/// against 0.222-0.314, 4x24000 0.243-0.276 against 0.292-0.375, 2x32000 0.261-0.294 against
/// 0.246-0.343, 3x32000 0.282-0.284 against 0.297-0.298, 4x32000 0.343-0.405 against
/// 0.439-0.476, 1x32000 0.228-0.283 against 0.162-0.303 (even); from 65,536 columns
/// `Subgroup` stays ahead (3x65536 0.43-0.55 against 0.50-0.66 ms, 4x131072 0.87-1.26 against
/// 1.05-1.37). Before the 32-byte units the line was at 16,384 columns.
pub const SOFTWARE_LONG_COLS: usize = 32_768;

/// How the lanes of the GPU share out the rows: the reduction layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Strategy {
    /// Chosen per call from the row length and the adapter (see [`Strategy::resolve`]).
    #[default]
    Auto,
    /// `lanes` lanes of a workgroup share one row and reduce through barrier trees in
    /// workgroup memory; a 256-lane workgroup holds `256 / lanes` rows. Works everywhere.
    /// `lanes: 1` (`wg1`) is one lane per row, with no reduction and no barrier at all, in
    /// workgroups of 8 or 256 lanes chosen by the row count (see
    /// [`row_softmax::workgroup_lanes`]).
    Workgroup {
        /// Lanes per row: a power of two from 1 to 1024.
        lanes: u32,
    },
    /// One subgroup per row, reducing with subgroup operations: no barriers, no workgroup
    /// memory. Needs `Features::SUBGROUP` and a fixed subgroup size.
    Subgroup,
    /// One workgroup of `lanes` lanes per row, the row held in registers between the two
    /// passes (up to [`row_softmax::MAX_CACHE_BLOCKS`] vec4s per lane, so rows of at most
    /// `64 * lanes` columns), so the logits are read once: the medium-row layout of the
    /// fused softmax kernels of Triton, QuACK or Liger. Works everywhere.
    Cached {
        /// Lanes per workgroup (and per row): a power of two from 32 to 1024.
        lanes: u32,
    },
    /// Long rows split over several workgroups of `lanes` lanes, each owning
    /// [`row_softmax::SPLIT_CHUNK_COLS`] columns: a first dispatch stores each chunk's
    /// (max, sum-exp) pair, a second merges a row's pairs and writes the chunk. Keeps the
    /// whole GPU busy when a few rows hold all the work.
    Split {
        /// Lanes per workgroup (and per chunk): a power of two from 32 to 1024.
        lanes: u32,
    },
}

impl Strategy {
    /// Every concrete strategy (not `Auto`) that `subgroups` allows, for tests and the bench.
    pub fn all(subgroups: bool) -> Vec<Strategy> {
        let mut v: Vec<Strategy> = [1, 8, 32, 256]
            .into_iter()
            .map(|lanes| Strategy::Workgroup { lanes })
            .collect();
        v.push(Strategy::Cached { lanes: 256 });
        v.push(Strategy::Split { lanes: 256 });
        if subgroups {
            v.push(Strategy::Subgroup);
        }
        v
    }

    /// The concrete strategy for `rows` rows of `cols` columns on an adapter of
    /// `device_type`, with or without usable subgroups (`subgroup_size`: the one subgroup
    /// size the host may rely on, `Context::subgroup_size`; `None` where the adapter has no
    /// `Features::SUBGROUP`, a size that varies at run time, or a size it does not run, see
    /// `context::usable_subgroup_size`). The size matters on software adapters: the
    /// subgroup strategy is taken only while its `subgroup_size` lanes per row keep within
    /// llvmpipe's loop limit.
    ///
    /// | adapter | shape | choice | why |
    /// |---|---|---|---|
    /// | software (CPU) | within the loop limit | `Workgroup { lanes: 1 }` | one lane per row: fastest at every shape of the bench on lavapipe and on llvmpipe GL (BENCHMARKS.md; e.g. 4096x4096 on lavapipe: 71% of copy, against 53% for `Subgroup` and 48% for `wg8`, and the only layout that takes units of two blocks, `io_*x8.wgsl`). llvmpipe runs 8 lanes as one SIMD vector and every storage access as a loop over them, so lanes sharing a row gain no bandwidth and only add reductions (subgroup operations, or barriers that are coroutine switches there) |
    /// | software (CPU) | longer rows, or fewer than [`SOFTWARE_FEW_ROWS`] rows of more than [`SOFTWARE_LONG_COLS`] columns | `Subgroup`, else `Workgroup { lanes: 8 }`, else `Workgroup { lanes: 256 }`: the first whose lanes stay within llvmpipe's 65,535 loop turns ([`row_softmax::SOFTWARE_LOOP_TURNS`]; one lane per row fits up to about 500,000 columns, 8 lanes up to about 4 million). For a few long rows one lane per row would leave most of llvmpipe's 8 SIMD lanes and one of its 2 threads idle: 1x131072 ran at 14% of copy in `wg1` and 41% in `Subgroup`, 2x262144 at 17% and 36% (llvmpipe GL, `wg8`: 1x131072 17% -> 42%) |
    /// | GPU | rows < 1024, cols >= 65,536 | `Split { lanes: 256 }` | few long rows: one team per row would leave most of the GPU idle |
    /// | GPU | 4,096 < cols <= 16,384 | `Cached { lanes: 256 }` | medium rows: one workgroup per row, the row in registers, the logits read once |
    /// | GPU, subgroups | otherwise | `Subgroup` | no barriers |
    /// | GPU, no subgroups | cols <= 256 | `Workgroup { lanes: 8 }` | short rows: many rows per workgroup keep lanes busy |
    /// | GPU, no subgroups | cols <= 4096 | `Workgroup { lanes: 32 }` | medium rows |
    /// | GPU, no subgroups | longer | `Workgroup { lanes: 256 }` | long rows: the whole workgroup on one row |
    ///
    /// On software adapters the split layout measured slower at every shape (its barrier
    /// trees and second dispatch cost more than llvmpipe gains from spreading a row). The GPU
    /// rows are the usual choices of row-softmax kernels (QuACK, OneFlow: a warp for medium
    /// rows, a block with the row in registers up to 16k columns, several blocks per row when
    /// rows are few) and are NOT measured here: no hardware GPU was at hand when they were
    /// written. (`Cached` measured no faster than reading twice on lavapipe, where the second
    /// read hits the CPU cache.)
    pub fn resolve(
        self,
        rows: usize,
        cols: usize,
        subgroup_size: Option<u32>,
        device_type: wgpu::DeviceType,
    ) -> Strategy {
        if self != Strategy::Auto {
            return self;
        }
        let software = device_type == wgpu::DeviceType::Cpu;
        let subgroups = subgroup_size.is_some();
        let fits = |team: u32| {
            row_softmax::loop_turns(cols as u64, team.into(), 0) <= row_softmax::SOFTWARE_LOOP_TURNS
        };
        let few_long_rows = rows < SOFTWARE_FEW_ROWS && cols > SOFTWARE_LONG_COLS;
        match () {
            _ if software && fits(1) && !few_long_rows => Strategy::Workgroup { lanes: 1 },
            _ if software && subgroup_size.is_some_and(fits) => Strategy::Subgroup,
            _ if software && fits(8) => Strategy::Workgroup { lanes: 8 },
            _ if software => Strategy::Workgroup { lanes: 256 },
            _ if rows < 1024 && cols >= 65536 => Strategy::Split { lanes: 256 },
            _ if cols > 4096 && cols <= row_softmax::cached_max_cols(256) as usize => {
                Strategy::Cached { lanes: 256 }
            }
            _ if subgroups => Strategy::Subgroup,
            _ if cols <= 256 => Strategy::Workgroup { lanes: 8 },
            _ if cols <= 4096 => Strategy::Workgroup { lanes: 32 },
            _ => Strategy::Workgroup { lanes: 256 },
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Strategy::Auto => f.write_str("auto"),
            Strategy::Workgroup { lanes } => write!(f, "wg{lanes}"),
            Strategy::Subgroup => f.write_str("subgroup"),
            Strategy::Cached { lanes } => write!(f, "cached{lanes}"),
            Strategy::Split { lanes } => write!(f, "split{lanes}"),
        }
    }
}

impl FromStr for Strategy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::InvalidOption {
            name: "strategy",
            value: s.to_string(),
            reason: "expected auto, subgroup, wgN (N a power of two, 1..=1024), cachedN or \
                     splitN (N a power of two, 32..=1024)",
        };
        if s == "auto" {
            return Ok(Strategy::Auto);
        }
        if s == "subgroup" {
            return Ok(Strategy::Subgroup);
        }
        // (prefix, smallest lanes, constructor)
        type Make = fn(u32) -> Strategy;
        let families: [(&str, u32, Make); 3] = [
            ("wg", 1, |lanes| Strategy::Workgroup { lanes }),
            ("cached", 32, |lanes| Strategy::Cached { lanes }),
            ("split", 32, |lanes| Strategy::Split { lanes }),
        ];
        let (digits, smallest, make) = families
            .iter()
            .find_map(|&(prefix, smallest, make)| {
                s.strip_prefix(prefix).map(|d| (d, smallest, make))
            })
            .ok_or_else(bad)?;
        let lanes: u32 = digits.parse().map_err(|_| bad())?;
        if !(lanes.is_power_of_two() && (smallest..=MAX_WORKGROUP_LANES).contains(&lanes)) {
            return Err(bad());
        }
        Ok(make(lanes))
    }
}

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
            row_softmax: layout(device, "row_softmax", row_softmax::BINDINGS),
            row_softmax_inplace: layout(
                device,
                "row_softmax in place",
                row_softmax::BINDINGS_IN_PLACE,
            ),
            batch_sum: layout(device, "batch_sum", batch_sum::BINDINGS),
            copy: layout(device, "copy", copy::BINDINGS),
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
            ModuleKey::RowSoftmax { io, .. } if io.in_place => &self.row_softmax_inplace,
            ModuleKey::RowSoftmax { .. } => &self.row_softmax,
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

fn layout(
    device: &wgpu::Device,
    label: &str,
    bindings: &[(u32, Binding)],
) -> (wgpu::BindGroupLayout, wgpu::PipelineLayout) {
    let entries: Vec<wgpu::BindGroupLayoutEntry> = bindings
        .iter()
        .map(|&(binding, b)| wgpu::BindGroupLayoutEntry {
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

/// Every pipeline this crate can build, for an adapter whose subgroup size is
/// `subgroup_size` (`None`: no subgroup strategy). The shader test validates each one.
pub fn all_pipeline_keys(subgroup_size: Option<u32>) -> Vec<PipelineKey> {
    let mut keys = Vec::new();
    for io in Io::ALL {
        // A workgroup-team key of this io file, with default options.
        let key = |entry, workgroup_size, team_size, cache_blocks, whole_batch| PipelineKey {
            module: ModuleKey::RowSoftmax {
                team: TeamKind::Workgroup,
                io,
            },
            entry,
            workgroup_size,
            team_size,
            cache_blocks,
            whole_batch,
            options: Specialisation::default(),
            f16_bits: false,
        };
        // Softmax, cross-entropy, and the whole-batch cross-entropy.
        let entries = |workgroup_size, team_size, cache_blocks| {
            [(0, false), (1, false), (1, true)].map(|(entry, whole_batch)| {
                key(entry, workgroup_size, team_size, cache_blocks, whole_batch)
            })
        };
        // The pair files (io_*x8.wgsl) serve one lane per row only.
        let max_lanes = if io.pairs { 1 } else { MAX_WORKGROUP_LANES };
        let mut lanes = 1;
        while lanes <= max_lanes {
            // One lane per row takes several workgroup sizes (see workgroup_lanes).
            let mut sizes = vec![lanes.max(WORKGROUP_LANES)];
            if lanes == 1 {
                sizes = vec![
                    row_softmax::ROW_PER_LANE_FEW_LANES,
                    row_softmax::ROW_PER_LANE_LANES,
                ];
            }
            for workgroup_size in sizes {
                keys.extend(entries(workgroup_size, lanes, 0));
            }
            // The cached layout (each cache size) and the split entries run with the whole
            // workgroup as the team.
            if lanes >= 32 {
                let mut cache_blocks = 1;
                while cache_blocks <= row_softmax::MAX_CACHE_BLOCKS {
                    keys.extend(entries(lanes, lanes, cache_blocks));
                    cache_blocks *= 2;
                }
                keys.extend((2..4).map(|entry| key(entry, lanes, lanes, 0, false)));
            }
            lanes *= 2;
        }
        if let Some(size) = subgroup_size.filter(|_| !io.pairs) {
            for entry in 0..2 {
                keys.push(PipelineKey {
                    module: ModuleKey::RowSoftmax {
                        team: TeamKind::Subgroup,
                        io,
                    },
                    entry,
                    workgroup_size: row_softmax::subgroup_shape(size).0,
                    team_size: row_softmax::subgroup_shape(size).1,
                    cache_blocks: 0,
                    whole_batch: false,
                    options: Specialisation::default(),
                    f16_bits: false,
                });
            }
        }
    }
    keys.extend((0..2).map(|entry| PipelineKey::plain(ModuleKey::BatchSum, entry)));
    for words64 in [false, true] {
        keys.push(PipelineKey::plain(ModuleKey::Copy { words64 }, 0));
    }
    // Every option specialisation of every row_softmax key, and both f16 conversions where
    // the io file has the choice.
    let mut all = Vec::new();
    for key in keys {
        if let ModuleKey::RowSoftmax { io, .. } = key.module {
            let f16_bits: &[bool] = if io.has_f16_bits() {
                &[false, true]
            } else {
                &[false]
            };
            for &f16_bits in f16_bits {
                all.extend(
                    Specialisation::all()
                        .into_iter()
                        .map(|options| PipelineKey {
                            options,
                            f16_bits,
                            ..key
                        }),
                );
            }
        } else {
            all.push(key);
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use wgpu::DeviceType::{Cpu, DiscreteGpu};

    #[test]
    fn auto_follows_the_table() {
        let auto = Strategy::Auto;
        let row_per_lane = Strategy::Workgroup { lanes: 1 };
        assert_eq!(auto.resolve(4096, 1000, Some(8), Cpu), row_per_lane);
        assert_eq!(auto.resolve(8, 262_144, Some(8), Cpu), row_per_lane);
        assert_eq!(auto.resolve(4096, 1000, None, Cpu), row_per_lane);
        // A few long rows share lanes; a few short ones do not.
        assert_eq!(auto.resolve(4, 32_769, Some(8), Cpu), Strategy::Subgroup);
        assert_eq!(
            auto.resolve(1, 131_072, None, Cpu),
            Strategy::Workgroup { lanes: 8 }
        );
        assert_eq!(auto.resolve(3, 32_768, Some(8), Cpu), row_per_lane);
        assert_eq!(auto.resolve(5, 131_072, Some(8), Cpu), row_per_lane);
        assert_eq!(
            auto.resolve(64, 262_144, Some(32), DiscreteGpu),
            Strategy::Split { lanes: 256 }
        );
        assert_eq!(
            auto.resolve(4096, 262_144, Some(32), DiscreteGpu),
            Strategy::Subgroup
        );
        assert_eq!(
            auto.resolve(9, 128, None, DiscreteGpu),
            Strategy::Workgroup { lanes: 8 }
        );
        assert_eq!(
            auto.resolve(9000, 4096, None, DiscreteGpu),
            Strategy::Workgroup { lanes: 32 }
        );
        assert_eq!(
            auto.resolve(9000, 32000, None, DiscreteGpu),
            Strategy::Workgroup { lanes: 256 }
        );
        assert_eq!(
            auto.resolve(9000, 8192, Some(32), DiscreteGpu),
            Strategy::Cached { lanes: 256 }
        );
        // Past llvmpipe's loop limit for one lane per row: 8 lanes, then 256.
        assert_eq!(auto.resolve(2, 600_000, Some(8), Cpu), Strategy::Subgroup);
        assert_eq!(
            auto.resolve(2, 3_000_000, Some(4), Cpu),
            Strategy::Workgroup { lanes: 8 },
            "4-lane subgroups would not fit"
        );
        assert_eq!(
            auto.resolve(2, 600_000, None, Cpu),
            Strategy::Workgroup { lanes: 8 }
        );
        assert_eq!(
            auto.resolve(1, 10_000_000, Some(8), Cpu),
            Strategy::Workgroup { lanes: 256 }
        );
        // An explicit strategy is kept.
        assert_eq!(
            Strategy::Subgroup.resolve(1, 1, None, Cpu),
            Strategy::Subgroup
        );
    }

    /// What depends on the subgroup size, at every size adapters have: the subgroup
    /// strategy's workgroup (a whole number of subgroups, rows per workgroup as the grid
    /// assumes), and Auto's choice, on GPUs and on software adapters (where the subgroup
    /// strategy is taken for a few long rows only while `size` lanes per row keep within
    /// llvmpipe's loop limit: 32,733 steps of 16 columns per lane).
    #[test]
    fn the_subgroup_strategy_at_every_subgroup_size() {
        let auto = Strategy::Auto;
        for (size, rows_per_workgroup, longest_row) in [
            (4, 16, 2_094_912),
            (8, 8, 4_189_824),
            (16, 4, 8_379_648),
            (32, 2, 16_759_296),
            (64, 1, 33_518_592),
            (128, 1, 67_037_184),
        ] {
            let (workgroup, team) = row_softmax::subgroup_shape(size);
            assert_eq!(team, size, "one subgroup per row");
            assert_eq!(workgroup % size, 0, "{size}: whole subgroups");
            assert_eq!(workgroup / team, rows_per_workgroup, "{size}");
            assert!(workgroup <= MAX_WORKGROUP_LANES);
            // GPUs: the subgroup strategy for rows it suits, at any size.
            assert_eq!(
                auto.resolve(9000, 1000, Some(size), DiscreteGpu),
                Strategy::Subgroup,
                "{size}"
            );
            // Software: a few long rows, as long as `size` lanes keep within the loop limit.
            assert_eq!(
                auto.resolve(2, longest_row, Some(size), Cpu),
                Strategy::Subgroup,
                "{size}"
            );
            let past = auto.resolve(2, longest_row + 1, Some(size), Cpu);
            assert!(
                matches!(past, Strategy::Workgroup { lanes: 8 | 256 }),
                "{size}: {past}"
            );
        }
        // Without a usable size (no feature, a varying size, llvmpipe past 16 lanes) the
        // subgroup strategy is never chosen.
        assert_eq!(
            auto.resolve(9000, 1000, None, DiscreteGpu),
            Strategy::Workgroup { lanes: 32 }
        );
        assert_eq!(
            auto.resolve(2, 600_000, None, Cpu),
            Strategy::Workgroup { lanes: 8 }
        );
    }

    #[test]
    fn vector_io_only_where_logits_and_output_line_up_in_whole_vectors() {
        let f32_io = |bases| Io::for_rows(Precision::F32, false, bases, false, None, false).vec4;
        assert!(f32_io(Some((0, 0))));
        assert!(f32_io(Some((2, 6))), "both start 2 elements into a vec4");
        assert!(
            !f32_io(Some((0, 6))),
            "blocks of the output would straddle vec4s"
        );
        assert!(!f32_io(None), "a buffer too short for whole vec4s");
        assert!(Io::for_rows(Precision::F16, true, Some((2, 2)), false, None, false).vec4);
        assert!(Io::for_rows(Precision::Bf16, false, Some((0, 0)), false, None, false).vec4);
        assert!(
            !Io::for_rows(Precision::Bf16, true, Some((0, 0)), false, None, false).vec4,
            "bf16 has no in-place file"
        );
        assert!(
            !Io::for_rows(Precision::F32, false, None, true, None, false).words64,
            "scalar files have no word size"
        );
        assert!(Io::for_rows(Precision::F32, false, Some((0, 0)), true, None, false).words64);
        // 32-byte units: f32 in 64-bit words, one lane per row, bases equal modulo 8.
        let pairs = |units, one_lane| {
            Io::for_rows(Precision::F32, false, Some((0, 0)), true, units, one_lane).pairs
        };
        assert!(pairs(Some((4, 12)), true));
        assert!(
            !pairs(Some((4, 8)), true),
            "units of the output would straddle rows' blocks"
        );
        assert!(!pairs(Some((0, 0)), false), "only for one lane per row");
        assert!(!pairs(None, true), "a buffer too short for whole units");
        assert!(
            !Io::for_rows(
                Precision::F32,
                false,
                Some((0, 0)),
                false,
                Some((0, 0)),
                true
            )
            .pairs,
            "only with 64-bit words"
        );
        // Every io a dispatch can get has its shader (bf16 in place is refused before).
        for precision in [Precision::F32, Precision::F16, Precision::Bf16] {
            for in_place in [false, true] {
                for bases in [Some((0, 0)), None] {
                    for (words64, one_lane) in [(false, false), (true, false), (true, true)] {
                        let io = Io::for_rows(precision, in_place, bases, words64, bases, one_lane);
                        let refused = precision == Precision::Bf16 && in_place;
                        assert!(refused || Io::ALL.contains(&io), "{io:?}");
                    }
                }
            }
        }
        assert!(Io::ALL.contains(&Io::for_rows(
            Precision::F32,
            true,
            Some((0, 0)),
            false,
            None,
            false
        )));
    }

    #[test]
    fn one_lane_per_row_spreads_few_rows_over_small_workgroups() {
        use row_softmax::workgroup_lanes;
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
        use row_softmax::one_workgroup;
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
        assert!(!one_workgroup(Strategy::Subgroup, 1));
    }

    #[test]
    fn the_register_cache_covers_the_row_in_powers_of_two() {
        use row_softmax::cache_blocks;
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

    #[test]
    fn strategy_names_round_trip() {
        for s in Strategy::all(true).into_iter().chain([Strategy::Auto]) {
            assert_eq!(s.to_string().parse::<Strategy>().ok(), Some(s));
        }
        for bad in [
            "wg3", "wg2048", "split16", "split", "wg", "fast", "cached16", "cached",
        ] {
            assert!(bad.parse::<Strategy>().is_err(), "{bad}");
        }
    }
}
