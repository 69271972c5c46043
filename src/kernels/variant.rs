//! The typed variant model: every axis a row_softmax module or pipeline can vary along, as
//! fields of plain types.
//!
//! - a **module** ([`ModuleKey`]) is one WGSL text: for row_softmax a [`ShaderVariant`], a
//!   team ([`TeamKind`]) and an io ([`Io`]: [`Precision`], [`Place`], [`Access`] with its
//!   [`Words`]), every axis an enum; `source.rs` turns it into WGSL, one `match` per axis (its
//!   table says which fragment each value contributes); `ml-softmax shader` prints one;
//! - a **pipeline** ([`PipelineKey`]) is a module, an entry point and the values of its
//!   override constants: the dispatch geometry (workgroup, team, cache) and the loss options
//!   ([`Specialisation`]).
//!
//! Which variant a dispatch gets is decided in one place, `row_softmax::choose_variant`,
//! before anything is recorded: the team by the strategy (`geometry::team_kind`), the io by
//! [`Io::for_rows`] (from the bindings' alignment, with the software io paths of
//! `software::SoftwareIo`); `row_softmax::record` takes the variant. The geometry follows
//! the strategy (`geometry::shape_of`), the options the caller's
//! [`crate::CrossEntropyOptions`] (`Specialisation::of`; the uniforms: `Params::for_loss`).

use super::geometry;
use super::geometry::{MAX_WORKGROUP_LANES, WORKGROUP_LANES};

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

/// Where the output goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Place {
    /// Its own binding (`out`); the logits are read-only.
    Separate,
    /// Over the logits (read_write), one `[rows, cols]` buffer instead of two.
    InPlace,
}

/// The word size 4-element blocks are held in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Words {
    /// 32-bit words (`words32.wgsl`).
    Bits32,
    /// 64-bit words (`words64.wgsl`, needs `Features::SHADER_INT64`; software adapters,
    /// see [`crate::Context::words64`]).
    Bits64,
}

/// How logits and output are read and written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// One element at a time (`io_<p>.wgsl`).
    Scalar,
    /// Whole 4-element blocks (`io_<p>x4.wgsl`), held in `Words`, when the buffers allow it
    /// (see [`Io::for_rows`]).
    Vec4(Words),
    /// Units of two blocks in 64-bit words (`io_<p>x8.wgsl` with `io_pairs.wgsl`: 32 bytes of
    /// f32, 16 of halves), read and written two blocks at a time: one lane per row
    /// (`TEAM_SIZE` 1) on software adapters only.
    Pairs,
}

/// How elements are stored (the io file of a row_softmax module): three axes, each an enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Io {
    /// The element format.
    pub precision: Precision,
    /// Whether the output overwrites the logits.
    pub place: Place,
    /// Scalars, blocks or pairs of blocks.
    pub access: Access,
}

impl Io {
    /// Every io variant the shaders have (bf16 has no in-place variant).
    pub const ALL: [Io; 20] = {
        const ACCESS: [Access; 4] = [
            Access::Scalar,
            Access::Vec4(Words::Bits32),
            Access::Vec4(Words::Bits64),
            Access::Pairs,
        ];
        const PLACES: [Place; 2] = [Place::Separate, Place::InPlace];
        let mut all = [Io::new(Precision::F32, Place::Separate, Access::Scalar); 20];
        let mut n = 0;
        let mut p = 0;
        while p < 3 {
            let precision = [Precision::F32, Precision::F16, Precision::Bf16][p];
            let mut a = 0;
            while a < 4 {
                let mut i = 0;
                while i < 2 {
                    if !(p == 2 && i == 1) {
                        all[n] = Io::new(precision, PLACES[i], ACCESS[a]);
                        n += 1;
                    }
                    i += 1;
                }
                a += 1;
            }
            p += 1;
        }
        all
    };

    const fn new(precision: Precision, place: Place, access: Access) -> Self {
        Io {
            precision,
            place,
            access,
        }
    }

    /// The io file for a dispatch. Data takes a vector file when logits and output can be
    /// bound as whole 4-element vectors (`vector_bases`: their element offsets in such
    /// bindings, from [`Slice::bind_vectors`](super::Slice::bind_vectors)) at the same offset
    /// modulo 4, so that every block of 4 columns the row code reads is one vector of each;
    /// everything else takes scalar access. (bf16 in place has no vector file, as it has no
    /// scalar one.) The vectors are 64-bit words when `words64`; then units of two blocks
    /// (io_f32x8.wgsl and its half twins) are taken when `unit_bases` (the bases in bindings
    /// of whole units, from [`Slice::bind_units`](super::Slice::bind_units)) line up modulo 8
    /// and the dispatch has one lane per row.
    pub fn for_rows(
        precision: Precision,
        in_place: bool,
        vector_bases: Option<(u32, u32)>,
        words64: bool,
        unit_bases: Option<(u32, u32)>,
        one_lane_per_row: bool,
    ) -> Self {
        let place = if in_place {
            Place::InPlace
        } else {
            Place::Separate
        };
        let vec4 = vector_bases.is_some_and(|(logits, out)| logits % 4 == out % 4)
            && !(precision == Precision::Bf16 && in_place);
        let pairs =
            one_lane_per_row && unit_bases.is_some_and(|(logits, out)| logits % 8 == out % 8);
        let access = match (vec4, words64) {
            (false, _) => Access::Scalar,
            (true, false) => Access::Vec4(Words::Bits32),
            (true, true) if pairs => Access::Pairs,
            (true, true) => Access::Vec4(Words::Bits64),
        };
        Io::new(precision, place, access)
    }

    /// Whether logits and output are bound as blocks (vec4 or pairs).
    pub fn vec4(self) -> bool {
        self.access != Access::Scalar
    }

    /// Whether the blocks are held as 64-bit words.
    pub fn words64(self) -> bool {
        matches!(self.access, Access::Vec4(Words::Bits64) | Access::Pairs)
    }

    /// Whether logits and output are bound as units of two blocks.
    pub fn pairs(self) -> bool {
        self.access == Access::Pairs
    }

    /// Whether the output overwrites the logits.
    pub fn in_place(self) -> bool {
        self.place == Place::InPlace
    }

    /// Whether the io file has the `F16_BITS` override (io_f16x4.wgsl or io_f16x8.wgsl, with
    /// f16.wgsl).
    pub fn has_f16_bits(self) -> bool {
        self.precision == Precision::F16 && self.vec4()
    }
}

/// One row_softmax module: every axis its WGSL text varies along, each an enum. The loss
/// options and the dispatch geometry are not here: they are override constants of one
/// text ([`PipelineKey`]). `source.rs` maps each axis to what it contributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShaderVariant {
    /// How the lanes of a row reduce together (the team file).
    pub team: TeamKind,
    /// How elements are stored (the io file and the generated declarations).
    pub io: Io,
}

impl ShaderVariant {
    /// Every row_softmax module.
    pub fn all() -> Vec<ShaderVariant> {
        [TeamKind::Workgroup, TeamKind::Subgroup]
            .into_iter()
            .flat_map(|team| Io::ALL.map(|io| ShaderVariant { team, io }))
            .collect()
    }
}

/// A shader module: one WGSL source, possibly several files put together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModuleKey {
    /// Row softmax / cross-entropy: io file + team file + row_softmax.wgsl.
    RowSoftmax(ShaderVariant),
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
        let mut all: Vec<ModuleKey> = ShaderVariant::all()
            .into_iter()
            .map(ModuleKey::RowSoftmax)
            .collect();
        all.extend([
            ModuleKey::BatchSum,
            ModuleKey::Copy { words64: false },
            ModuleKey::Copy { words64: true },
        ]);
        all
    }

    /// A label for wgpu's error messages.
    pub fn label(self) -> String {
        match self {
            ModuleKey::RowSoftmax(v) => format!("row_softmax {:?} {:?}", v.team, v.io),
            ModuleKey::BatchSum => "batch_sum".into(),
            ModuleKey::Copy { words64 } => format!("copy words64={words64}"),
        }
    }

    /// Whether the module needs `Features::SHADER_F16`.
    pub fn needs_f16(self) -> bool {
        matches!(self, ModuleKey::RowSoftmax(v) if v.io.precision == Precision::F16)
    }

    /// Whether the module needs `Features::SHADER_INT64` (64-bit words).
    pub fn needs_int64(self) -> bool {
        match self {
            ModuleKey::RowSoftmax(v) => v.io.words64(),
            ModuleKey::Copy { words64 } => words64,
            ModuleKey::BatchSum => false,
        }
    }

    /// Whether the module needs `Features::SUBGROUP`.
    pub fn needs_subgroups(self) -> bool {
        matches!(self, ModuleKey::RowSoftmax(v) if v.team == TeamKind::Subgroup)
    }

    /// The entry points of the module.
    pub fn entry_points(self) -> &'static [&'static str] {
        match self {
            ModuleKey::RowSoftmax(ShaderVariant {
                team: TeamKind::Workgroup,
                ..
            }) => &[
                "softmax_main",
                "cross_entropy_main",
                "split_stats_main",
                "split_write_main",
            ],
            ModuleKey::RowSoftmax(_) => &["softmax_main", "cross_entropy_main"],
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
    /// workgroup and also sums the batch (see [`geometry::one_workgroup`]).
    pub whole_batch: bool,
    /// The row_softmax specialisation (which options the code handles).
    pub options: Specialisation,
    /// `F16_BITS` (io_f16x4.wgsl only, see [`Io::has_f16_bits`]): convert halves with
    /// f16.wgsl's bit operations instead of `unpack2x16float` / `pack2x16float`.
    pub f16_bits: bool,
}

/// The loss options a row_softmax pipeline is specialised for (its override constants). The
/// other options (label smoothing, z-loss, the ignore index) are `Params`
/// fields: their specialisation measured no faster (BENCHMARKS.md, "Pipeline space").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Specialisation {
    /// `HAS_WEIGHTS`: class weights.
    pub weights: bool,
    /// `SOFTCAP`: soft-capping.
    pub softcap: bool,
    /// `PROBS`: probability targets.
    pub probs: bool,
}

impl Specialisation {
    /// The specialisation for `options`, with probability targets or class indices: the one
    /// place that says which option turns on which override.
    pub fn of(options: &crate::CrossEntropyOptions, probs: bool) -> Self {
        Specialisation {
            weights: options.weight.is_some(),
            softcap: options.softcap > 0.0,
            probs,
        }
    }

    /// Every combination, for the shader validation test.
    pub fn all() -> Vec<Specialisation> {
        (0..8u8)
            .map(|bits| Specialisation {
                weights: bits & 1 != 0,
                softcap: bits & 2 != 0,
                probs: bits & 4 != 0,
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
        if let ModuleKey::RowSoftmax(ShaderVariant { team, io }) = self.module {
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
        }
        c
    }
}

/// Every pipeline this crate can build, for an adapter whose subgroup size is
/// `subgroup_size` (`None`: no subgroup strategy). The shader test validates each one.
pub fn all_pipeline_keys(subgroup_size: Option<u32>) -> Vec<PipelineKey> {
    let mut keys = Vec::new();
    for io in Io::ALL {
        // A workgroup-team key of this io file, with default options.
        let key = |entry, workgroup_size, team_size, cache_blocks, whole_batch| PipelineKey {
            module: ModuleKey::RowSoftmax(ShaderVariant {
                team: TeamKind::Workgroup,
                io,
            }),
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
        let max_lanes = if io.pairs() { 1 } else { MAX_WORKGROUP_LANES };
        let mut lanes = 1;
        while lanes <= max_lanes {
            // One lane per row takes several workgroup sizes (see workgroup_lanes).
            let mut sizes = vec![lanes.max(WORKGROUP_LANES)];
            if lanes == 1 {
                sizes = vec![
                    geometry::ROW_PER_LANE_FEW_LANES,
                    geometry::ROW_PER_LANE_LANES,
                ];
            }
            for workgroup_size in sizes {
                keys.extend(entries(workgroup_size, lanes, 0));
            }
            // The cached layout (each cache size) and the split entries run with the whole
            // workgroup as the team.
            if lanes >= 32 {
                let mut cache_blocks = 1;
                while cache_blocks <= geometry::MAX_CACHE_BLOCKS {
                    keys.extend(entries(lanes, lanes, cache_blocks));
                    cache_blocks *= 2;
                }
                keys.extend((2..4).map(|entry| key(entry, lanes, lanes, 0, false)));
            }
            lanes *= 2;
        }
        if let Some(size) = subgroup_size.filter(|_| !io.pairs()) {
            for entry in 0..2 {
                keys.push(PipelineKey {
                    module: ModuleKey::RowSoftmax(ShaderVariant {
                        team: TeamKind::Subgroup,
                        io,
                    }),
                    entry,
                    workgroup_size: geometry::subgroup_shape(size).0,
                    team_size: geometry::subgroup_shape(size).1,
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
        if let ModuleKey::RowSoftmax(ShaderVariant { io, .. }) = key.module {
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

    #[test]
    fn vector_io_only_where_logits_and_output_line_up_in_whole_vectors() {
        let f32_io = |bases| Io::for_rows(Precision::F32, false, bases, false, None, false).vec4();
        assert!(f32_io(Some((0, 0))));
        assert!(f32_io(Some((2, 6))), "both start 2 elements into a vec4");
        assert!(
            !f32_io(Some((0, 6))),
            "blocks of the output would straddle vec4s"
        );
        assert!(!f32_io(None), "a buffer too short for whole vec4s");
        assert!(Io::for_rows(Precision::F16, true, Some((2, 2)), false, None, false).vec4());
        assert!(Io::for_rows(Precision::Bf16, false, Some((0, 0)), false, None, false).vec4());
        assert!(
            !Io::for_rows(Precision::Bf16, true, Some((0, 0)), false, None, false).vec4(),
            "bf16 has no in-place file"
        );
        assert!(
            !Io::for_rows(Precision::F32, false, None, true, None, false).words64(),
            "scalar files have no word size"
        );
        assert!(Io::for_rows(Precision::F32, false, Some((0, 0)), true, None, false).words64());
        // 32-byte units: f32 in 64-bit words, one lane per row, bases equal modulo 8.
        let pairs = |units, one_lane| {
            Io::for_rows(Precision::F32, false, Some((0, 0)), true, units, one_lane).pairs()
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
            .pairs(),
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
}
