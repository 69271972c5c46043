//! The reduction strategies (how the lanes of the GPU share out the rows), the table `Auto`
//! follows, and their names (`wg8`, `subgroup`, ...) for the command line. Where autotune is
//! on (`ContextOptions::autotune`, src/kernels/autotune.rs), `Auto` is timed on the adapter
//! instead, and this table is its fallback and the candidate it prefers.

use std::fmt;
use std::str::FromStr;

use super::geometry::{self, MAX_WORKGROUP_LANES};
use super::software;
use crate::error::{Error, Result};

/// How the lanes of the GPU share out the rows: the reduction layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Strategy {
    /// Chosen per call from the row length and the adapter: the table of
    /// [`Strategy::resolve`], or where `ContextOptions::autotune` is on, the fastest
    /// strategy timed on this adapter for the shape's bucket (`Context::autotune_choice`),
    /// chosen once and kept, so the same shape always runs the same kernel.
    #[default]
    Auto,
    /// `lanes` lanes of a workgroup share one row and reduce through barrier trees in
    /// workgroup memory; a 256-lane workgroup holds `256 / lanes` rows. Works everywhere.
    /// `lanes: 1` (`wg1`) is one lane per row, with no reduction and no barrier at all, in
    /// workgroups of 8 or 256 lanes chosen by the row count (see
    /// [`geometry::workgroup_lanes`]).
    Workgroup {
        /// Lanes per row: a power of two from 1 to 1024.
        lanes: u32,
    },
    /// One subgroup per row, reducing with subgroup operations: no barriers, no workgroup
    /// memory. Needs `Features::SUBGROUP` and a fixed subgroup size.
    Subgroup,
    /// One workgroup of `lanes` lanes per row, the row held in registers between the two
    /// passes (up to [`geometry::MAX_CACHE_BLOCKS`] vec4s per lane, so rows of at most
    /// `64 * lanes` columns), so the logits are read once: the medium-row layout of the
    /// fused softmax kernels of Triton, QuACK or Liger. Works everywhere.
    Cached {
        /// Lanes per workgroup (and per row): a power of two from 32 to 1024.
        lanes: u32,
    },
    /// Long rows split over several workgroups of `lanes` lanes, each owning
    /// [`geometry::SPLIT_CHUNK_COLS`] columns: a first dispatch stores each chunk's
    /// (max, sum-exp) pair, a second merges a row's pairs and writes the chunk. Keeps the
    /// whole GPU busy when a few rows hold all the work.
    Split {
        /// Lanes per workgroup (and per chunk): a power of two from 32 to 1024.
        lanes: u32,
    },
    /// `Split`, its two dispatches recorded per group of rows whose logits fit a cache
    /// budget ([`geometry::split_group_rows`]; `ContextOptions::split_cache_bytes`, default
    /// [`geometry::SPLIT_CACHE_BYTES`]): pass 1 and pass 2 alternate group by group, so
    /// pass 2 re-reads logits that pass 1 read moments before, from the GPU's L2 cache
    /// rather than memory. The same bits as `Split { lanes }` (each row's work and the
    /// merge order of its partials do not change); fewer workgroups per dispatch. A row split
    /// over workgroups cannot be read from memory only once: that needs a grid-wide barrier
    /// between the passes, which WGSL does not have (BENCHMARKS.md, "Issue 14 item 3").
    SplitCache {
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
        v.push(Strategy::SplitCache { lanes: 256 });
        if subgroups {
            v.push(Strategy::Subgroup);
        }
        v
    }

    /// Whether this is a split layout (`Split` or `SplitCache`): two dispatches, partials in
    /// the scales buffer.
    pub fn is_split(self) -> bool {
        matches!(self, Strategy::Split { .. } | Strategy::SplitCache { .. })
    }

    /// The table's concrete strategy (autotune's fallback: `Context::resolve_strategy` gives
    /// the choice a context actually makes) for `rows` rows of `cols` columns on an adapter of
    /// `device_type`, with or without usable subgroups (`subgroup_size`: the one subgroup
    /// size the host may rely on, `Context::subgroup_size`; `None` where the adapter has no
    /// `Features::SUBGROUP`, a size that varies at run time, or a size it does not run, see
    /// `context::usable_subgroup_size`). The size matters on software adapters: the
    /// subgroup strategy is taken only while its `subgroup_size` lanes per row keep within
    /// llvmpipe's loop limit.
    ///
    /// | adapter | shape | choice | why |
    /// |---|---|---|---|
    /// | software (CPU) | within the loop limit | `Workgroup { lanes: 1 }` | one lane per row: fastest at every shape of the bench on lavapipe and llvmpipe GL, and the only layout that takes units of two blocks (`io_*x8.wgsl`). llvmpipe runs 8 lanes as one SIMD vector and every storage access as a loop over them, so lanes sharing a row gain no bandwidth and only add reductions |
    /// | software (CPU) | longer rows, or fewer than [`software::SOFTWARE_FEW_ROWS`] rows of more than [`software::SOFTWARE_LONG_COLS`] columns | `Subgroup`, else `Workgroup { lanes: 8 }`, else `Workgroup { lanes: 256 }`: the first whose lanes stay within llvmpipe's loop limit ([`software::SOFTWARE_LOOP_TURNS`]) | a few long rows in one lane each would leave most of llvmpipe's SIMD lanes and threads idle |
    /// | GPU | rows < 1024, cols >= 65,536 | `SplitCache { lanes: 256 }` | few long rows: one team per row would leave most of the GPU idle; the passes alternate per cache-sized group of rows (a batch within the budget runs as `Split`) |
    /// | GPU | 4,096 < cols <= 16,384 | `Cached { lanes: 256 }` | medium rows: one workgroup per row, the row in registers, the logits read once |
    /// | GPU, subgroups | otherwise | `Subgroup` | no barriers |
    /// | GPU, no subgroups | cols <= 256 | `Workgroup { lanes: 8 }` | short rows: many rows per workgroup keep lanes busy |
    /// | GPU, no subgroups | cols <= 4096 | `Workgroup { lanes: 32 }` | medium rows |
    /// | GPU, no subgroups | longer | `Workgroup { lanes: 256 }` | long rows: the whole workgroup on one row |
    ///
    /// The software rows live in [`software::strategy`]; the measurements behind them are in
    /// BENCHMARKS.md ("Software adapters: the strategy table"), not here, where they would go
    /// stale. On software adapters the split layout measured slower at every shape. The GPU
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
        if device_type == wgpu::DeviceType::Cpu {
            return software::strategy(rows, cols, subgroup_size);
        }
        let subgroups = subgroup_size.is_some();
        match () {
            _ if rows < 1024 && cols >= 65536 => Strategy::SplitCache { lanes: 256 },
            _ if cols > 4096 && cols <= geometry::cached_max_cols(256) as usize => {
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
            Strategy::SplitCache { lanes } => write!(f, "splitcache{lanes}"),
        }
    }
}

impl FromStr for Strategy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::InvalidOption {
            name: "strategy",
            value: s.to_string(),
            reason: "expected auto, subgroup, wgN (N a power of two, 1..=1024), cachedN, \
                     splitN or splitcacheN (N a power of two, 32..=1024)",
        };
        if s == "auto" {
            return Ok(Strategy::Auto);
        }
        if s == "subgroup" {
            return Ok(Strategy::Subgroup);
        }
        // (prefix, smallest lanes, constructor); a prefix before any prefix of itself.
        type Make = fn(u32) -> Strategy;
        let families: [(&str, u32, Make); 4] = [
            ("wg", 1, |lanes| Strategy::Workgroup { lanes }),
            ("cached", 32, |lanes| Strategy::Cached { lanes }),
            ("splitcache", 32, |lanes| Strategy::SplitCache { lanes }),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::geometry as row_softmax;
    use wgpu::DeviceType::{Cpu, DiscreteGpu};

    #[test]
    fn auto_follows_the_table() {
        use Strategy::{Cached, SplitCache, Subgroup, Workgroup};
        let lane = Workgroup { lanes: 1 };
        // (rows, cols, subgroup size, adapter type, what Auto picks)
        #[rustfmt::skip]
        let cases = [
            (4096, 1000, Some(8), Cpu, lane),
            (8, 262_144, Some(8), Cpu, lane),
            (4096, 1000, None, Cpu, lane),
            // A few long rows share lanes; a few short ones do not.
            (4, 32_769, Some(8), Cpu, Subgroup),
            (1, 131_072, None, Cpu, Workgroup { lanes: 8 }),
            (3, 32_768, Some(8), Cpu, lane),
            (5, 131_072, Some(8), Cpu, lane),
            (64, 262_144, Some(32), DiscreteGpu, SplitCache { lanes: 256 }),
            (4096, 262_144, Some(32), DiscreteGpu, Subgroup),
            (9, 128, None, DiscreteGpu, Workgroup { lanes: 8 }),
            (9000, 4096, None, DiscreteGpu, Workgroup { lanes: 32 }),
            (9000, 32000, None, DiscreteGpu, Workgroup { lanes: 256 }),
            (9000, 8192, Some(32), DiscreteGpu, Cached { lanes: 256 }),
            // Past llvmpipe's loop limit for one lane per row: 8 lanes, then 256 (and not
            // 4-lane subgroups: they would not fit).
            (2, 600_000, Some(8), Cpu, Subgroup),
            (2, 3_000_000, Some(4), Cpu, Workgroup { lanes: 8 }),
            (2, 600_000, None, Cpu, Workgroup { lanes: 8 }),
            (1, 10_000_000, Some(8), Cpu, Workgroup { lanes: 256 }),
        ];
        for (rows, cols, subgroup, device, want) in cases {
            assert_eq!(
                Strategy::Auto.resolve(rows, cols, subgroup, device),
                want,
                "{rows} x {cols}, subgroup size {subgroup:?}, {device:?}"
            );
        }
        // An explicit strategy is kept.
        assert_eq!(Subgroup.resolve(1, 1, None, Cpu), Subgroup);
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
    fn strategy_names_round_trip() {
        for s in Strategy::all(true).into_iter().chain([Strategy::Auto]) {
            assert_eq!(s.to_string().parse::<Strategy>().ok(), Some(s));
        }
        for bad in [
            "wg3",
            "wg2048",
            "split16",
            "split",
            "wg",
            "fast",
            "cached16",
            "cached",
            "splitcache",
            "splitcache16",
            "splitcache2048",
        ] {
            assert!(bad.parse::<Strategy>().is_err(), "{bad}");
        }
    }
}
