//! Autotune: `Strategy::Auto` chosen by timing the candidates on the adapter in use, once per
//! shape bucket, instead of by the fixed table ([`Strategy::resolve`], tuned on lavapipe).
//!
//! The data flow of one choice ([`Context::autotune_choice`]):
//! 1. the call's shape becomes a `Bucket` (rows and cols rounded up to powers of two, rows
//!    capped so the bucket's logits fit [`TUNE_MAX_BYTES`], the storage precision);
//! 2. a bucket already chosen (this context, or loaded from the file) answers at once: a
//!    choice never changes for the life of a context, nor across runs with a file, so
//!    timing noise can act only when a bucket is first tuned, and every later call of the
//!    bucket runs the same kernel and gives the same bits;
//! 3. otherwise the candidates (`candidates`: every strategy the adapter may run at the
//!    bucket's shape, the table's choice first) each run the device-resident cross-entropy
//!    on random logits of the bucket's shape: once to build the pipelines (a candidate the
//!    library refuses there, e.g. past llvmpipe's loop limit, is dropped), [`WARMUP_RUNS`]
//!    warm-up runs (after the first, one more than [`PRUNE`] times slower than the fastest
//!    is dropped), then [`REPS`] timed runs round-robin (GPU timestamps where the device
//!    has `TIMESTAMP_QUERY_INSIDE_ENCODERS`, else host wall time around submit + wait);
//! 4. the fastest median wins, but the table's choice is kept unless beaten by more than
//!    [`TABLE_MARGIN`]; if tuning fails (the reason is logged on stderr), the bucket follows
//!    the table for the context's life (not written to the file);
//! 5. with [`Autotune::Persist`], the file is rewritten atomically (temp file + rename).
//!
//! The file is JSON: `{"format": FORMAT, "adapters": {KEY: {"ROWSxCOLS PRECISION":
//! {"strategy": "wg8", "median_ms": {"wg8": 0.4, ...}}}}}`, where KEY names the adapter
//! (name, vendor and device ids, driver, backend), what changes which kernel runs (usable
//! subgroup size, the software io paths) and this crate's version; entries of other keys
//! are kept untouched. A file that cannot be read or parsed, or whose entries for this
//! adapter are malformed, makes context creation fail with [`Error::AutotuneFile`] naming
//! the file and the problem: the library never overwrites a file it does not understand.
//! A failed write of the file is logged on stderr; the call itself succeeds.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use super::geometry::{cached_max_cols, split_group_rows};
use super::{Precision, Strategy};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::ops::{DeviceCrossEntropy, DeviceTargets};
use crate::options::CrossEntropyOptions;

/// Whether `Strategy::Auto` is chosen by timing on the adapter ([`ContextOptions::autotune`]).
///
/// [`ContextOptions::autotune`]: crate::ContextOptions::autotune
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Autotune {
    /// Tune on hardware adapters, the table on software ones (CPU adapters: lavapipe,
    /// llvmpipe GL, WARP), where the table was measured. The default.
    #[default]
    OnHardware,
    /// Always the table ([`Strategy::resolve`]).
    Off,
    /// Tune on every adapter; choices live as long as the context. The first call that
    /// meets a bucket blocks while the candidates run (the async calls too, natively; in a
    /// browser, where nothing may block, autotune is always off).
    On,
    /// Tune on every adapter, and keep the choices in this JSON file across runs (read when
    /// the context is created, rewritten after each new choice).
    Persist(PathBuf),
}

/// `off`, `on`, `hardware` ([`Autotune::OnHardware`]) or a file name ([`Autotune::Persist`]):
/// what the command line reads from `ML_SOFTMAX_AUTOTUNE`.
impl std::str::FromStr for Autotune {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "off" => Autotune::Off,
            "on" => Autotune::On,
            "hardware" => Autotune::OnHardware,
            "" => {
                return Err(Error::InvalidOption {
                    name: "autotune",
                    value: s.into(),
                    reason: "expected off, on, hardware or the name of an autotune file",
                });
            }
            file => Autotune::Persist(file.into()),
        })
    }
}

/// Where a choice of `Strategy::Auto` came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChoiceSource {
    /// The fixed table: autotune is off for this context.
    Table,
    /// Timed on this adapter by this context.
    Tuned,
    /// Read from the autotune file.
    File,
    /// Tuning failed (the reason was logged): the table's choice, kept for this context.
    Fallback,
}

/// What `Strategy::Auto` runs for a shape: [`Context::autotune_choice`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AutotuneChoice {
    /// The concrete strategy.
    pub strategy: Strategy,
    /// Where it came from.
    pub source: ChoiceSource,
    /// How long tuning its bucket took (`None` unless `source` is `Tuned`).
    pub tuning: Option<Duration>,
}

/// Counts of an autotuning context: [`Context::autotune_stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AutotuneStats {
    /// Buckets timed by this context.
    pub tunings: usize,
    /// Buckets read from the autotune file when the context was created.
    pub loaded: usize,
}

/// What a choice depends on. Rows and cols are rounded up to powers of two: the winner
/// changes with the order of magnitude of the shape (few long rows vs many short ones), not
/// with its exact size; the representative shape is the bucket's largest, so a candidate
/// that runs there (register cache, loop limit) runs at every shape of the bucket. Rows are
/// capped so that the logits fit [`TUNE_MAX_BYTES`] (cols are kept: they decide which
/// strategies fit), and shapes past the cap share the capped bucket: more rows of the same
/// length change the time, not the order of the candidates. The precision changes the bytes
/// each lane moves per column, so the balance between memory and reduction. Not in the
/// bucket: the loss options and softmax vs cross-entropy (they add the same per-element work
/// to every strategy; the device cross-entropy with class targets and a mean is timed), and
/// the io path, which follows from the context (its key names the software io paths).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Bucket {
    rows: usize,
    cols: usize,
    precision: Precision,
}

/// The most bytes of logits one tuning run moves (the gradient as many again).
pub const TUNE_MAX_BYTES: u64 = 64 << 20;
/// Untimed runs of each candidate after the one that builds its pipelines.
pub const WARMUP_RUNS: usize = 2;
/// Timed runs of each candidate, round-robin; the median counts.
pub const REPS: usize = 5;
/// A candidate slower than the fastest by more than this factor in the first warm-up round
/// is not timed further.
pub const PRUNE: f64 = 4.0;
/// The table's choice is kept unless another candidate's median is faster by this share.
pub const TABLE_MARGIN: f64 = 0.03;
/// The `format` field of the autotune file.
pub const FORMAT: &str = "ml-softmax autotune 1";

impl Bucket {
    pub(crate) fn of(rows: usize, cols: usize, precision: Precision) -> Self {
        let cols = cols.max(1).next_power_of_two();
        let row_bytes = cols as u64 * precision.bytes();
        let cap = (TUNE_MAX_BYTES / row_bytes).max(1);
        // The largest power of two within the cap (cap >= 1).
        let cap = 1usize << (63 - cap.leading_zeros());
        let rows = rows.max(1).next_power_of_two().min(cap);
        Self {
            rows,
            cols,
            precision,
        }
    }

    /// The key of this bucket in the autotune file.
    fn key(&self) -> String {
        format!(
            "{}x{} {}",
            self.rows,
            self.cols,
            precision_name(self.precision)
        )
    }

    fn parse(key: &str) -> Option<Self> {
        let (shape, precision) = key.split_once(' ')?;
        let (rows, cols) = shape.split_once('x')?;
        let precision = match precision {
            "f32" => Precision::F32,
            "f16" => Precision::F16,
            "bf16" => Precision::Bf16,
            _ => return None,
        };
        let bucket = Self::of(rows.parse().ok()?, cols.parse().ok()?, precision);
        (bucket.key() == key).then_some(bucket)
    }
}

fn precision_name(p: Precision) -> &'static str {
    match p {
        Precision::F32 => "f32",
        Precision::F16 => "f16",
        Precision::Bf16 => "bf16",
    }
}

/// The autotune state of a context: its mode, its choices, and the file.
pub(crate) struct Autotuner {
    /// Off: the table. On: tune, with `file` when persisted.
    on: bool,
    file: Option<PathBuf>,
    /// This context's adapter and options, as the file names them.
    key: String,
    chosen: Mutex<HashMap<Bucket, AutotuneChoice>>,
    /// Held while a bucket is tuned, so two threads never tune (and choose) it twice.
    tuning: Mutex<()>,
    stats: Mutex<AutotuneStats>,
}

impl Autotuner {
    /// The state for a context on `info` (whose kernels see `subgroup_size` and the
    /// software io paths `software_io`), reading the file of [`Autotune::Persist`].
    pub(crate) fn new(
        mode: &Autotune,
        info: &wgpu::AdapterInfo,
        subgroup_size: Option<u32>,
        software_io: (bool, bool),
    ) -> Result<Self> {
        // A browser cannot block while candidates run: always the table there.
        let on = !cfg!(target_arch = "wasm32")
            && match mode {
                Autotune::OnHardware => info.device_type != wgpu::DeviceType::Cpu,
                Autotune::Off => false,
                Autotune::On | Autotune::Persist(_) => true,
            };
        let file = match mode {
            Autotune::Persist(path) if on => Some(path.clone()),
            _ => None,
        };
        let key = format!(
            "{} | vendor {:#06x} device {:#06x} | {:?} | driver {} {} | subgroup {:?} | \
             words64 {} f16-bits {} | ml-softmax {}",
            info.name,
            info.vendor,
            info.device,
            info.backend,
            info.driver,
            info.driver_info,
            subgroup_size,
            software_io.0,
            software_io.1,
            env!("CARGO_PKG_VERSION"),
        );
        let mut chosen = HashMap::new();
        if let Some(path) = &file {
            for (bucket, strategy) in load(path, &key)? {
                let source = ChoiceSource::File;
                let choice = AutotuneChoice {
                    strategy,
                    source,
                    tuning: None,
                };
                chosen.insert(bucket, choice);
            }
        }
        let stats = AutotuneStats {
            tunings: 0,
            loaded: chosen.len(),
        };
        Ok(Self {
            on,
            file,
            key,
            chosen: Mutex::new(chosen),
            tuning: Mutex::new(()),
            stats: Mutex::new(stats),
        })
    }
}

/// The choices for `key` in the file at `path` (none when it does not exist).
fn load(path: &Path, key: &str) -> Result<Vec<(Bucket, Strategy)>> {
    let Some(doc) = read_doc(path)? else {
        return Ok(Vec::new());
    };
    let bad = |problem: String| file_error(path, problem);
    let Some(entries) = doc["adapters"].get(key) else {
        return Ok(Vec::new());
    };
    let entries = entries.as_object().ok_or_else(|| {
        bad(format!(
            "has an entry for adapter \"{key}\" that is not an object"
        ))
    })?;
    entries
        .iter()
        .map(|(bucket_key, entry)| {
            let bucket = Bucket::parse(bucket_key)
                .ok_or_else(|| bad(format!("has \"{bucket_key}\", which is not a shape bucket")))?;
            let name = entry["strategy"].as_str().unwrap_or("");
            match name.parse::<Strategy>() {
                Ok(s) if s != Strategy::Auto => Ok((bucket, s)),
                _ => Err(bad(format!(
                    "has bucket \"{bucket_key}\" with no concrete strategy (\"{name}\")"
                ))),
            }
        })
        .collect()
}

/// The file's JSON document, checked to be one this version writes; `None` if absent.
fn read_doc(path: &Path) -> Result<Option<Value>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(file_error(path, format!("cannot be read: {e}"))),
    };
    let doc: Value =
        serde_json::from_str(&text).map_err(|e| file_error(path, format!("is not JSON: {e}")))?;
    if doc["format"] != FORMAT || !doc["adapters"].is_object() {
        return Err(file_error(
            path,
            format!(
                "is not an autotune file (no \"format\": \"{FORMAT}\" and \"adapters\" object)"
            ),
        ));
    }
    Ok(Some(doc))
}

fn file_error(path: &Path, problem: String) -> Error {
    Error::AutotuneFile {
        path: path.display().to_string(),
        problem,
    }
}

/// Writes `entry` for `bucket` among `key`'s choices in the file at `path`, with `known`
/// (this context's other choices) where the file lacks them, keeping every other entry
/// (the file is read again first, in case another process added some): a temp file beside
/// it, then a rename, so a reader never sees half a file.
fn store(
    path: &Path,
    key: &str,
    known: Map<String, Value>,
    bucket: String,
    entry: Value,
) -> Result<()> {
    let mut doc = read_doc(path)?.unwrap_or_else(|| json!({"format": FORMAT, "adapters": {}}));
    let mut entries = match doc["adapters"][key].take() {
        Value::Object(entries) => entries,
        _ => Map::new(),
    };
    for (b, v) in known {
        entries.entry(b).or_insert(v);
    }
    entries.insert(bucket, entry);
    doc["adapters"][key] = Value::Object(entries);
    let text = serde_json::to_string_pretty(&doc)
        .map_err(|e| file_error(path, format!("cannot be encoded: {e}")))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let written = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path));
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        file_error(path, format!("cannot be written: {e}"))
    })
}

/// The strategies tried for `bucket` on `ctx`, the table's choice first: every strategy of
/// [`Strategy::all`] (the subgroup one where the context has a usable subgroup size) plus
/// the register cache at 512 and 1024 lanes, less the cached layouts whose registers do not
/// hold the bucket's rows and the cache-ordered split where the bucket's logits fit one
/// group of its cache budget (it would run as `Split` there). Refusals that depend on more than the row length (llvmpipe's loop
/// limit, a device's workgroup size) show up as typed errors on the first run and drop the
/// candidate there.
pub(crate) fn candidates(ctx: &Context, bucket: Bucket) -> Vec<Strategy> {
    let table = table(ctx, bucket.rows, bucket.cols);
    let mut all = vec![table];
    let more = Strategy::all(ctx.has_subgroups())
        .into_iter()
        .chain([512, 1024].map(|lanes| Strategy::Cached { lanes }));
    for s in more {
        let fits = match s {
            Strategy::Cached { lanes } => bucket.cols <= cached_max_cols(lanes) as usize,
            Strategy::SplitCache { .. } => {
                let rows = u32::try_from(bucket.rows).unwrap_or(u32::MAX);
                let row_bytes = bucket.cols as u64 * bucket.precision.bytes();
                split_group_rows(rows, row_bytes, ctx.split_cache_bytes) < rows
            }
            _ => true,
        };
        if fits && !all.contains(&s) {
            all.push(s);
        }
    }
    all
}

/// The fixed table's choice on `ctx`.
fn table(ctx: &Context, rows: usize, cols: usize) -> Strategy {
    let device_type = ctx.adapter_info().device_type;
    Strategy::Auto.resolve(rows, cols, ctx.subgroup_size(), device_type)
}

impl Context {
    /// What `Strategy::Auto` runs for `rows x cols` logits stored as `precision` on this
    /// context, and where the choice came from: the table, or (with
    /// [`ContextOptions::autotune`](crate::ContextOptions::autotune) on) the candidates
    /// timed here, once per shape bucket. The first call for a bucket may take a while
    /// (each candidate builds its pipelines and runs a few times on up to 64 MiB of logits);
    /// later calls return the same choice at once.
    ///
    /// ```no_run
    /// use ml_softmax::{Autotune, Context, ContextOptions, Precision};
    /// let ctx = Context::with_options(&ContextOptions { autotune: Autotune::On, ..Default::default() })?;
    /// let choice = ctx.autotune_choice(4096, 32000, Precision::F32);
    /// println!("auto = {} ({:?})", choice.strategy, choice.source);
    /// # Ok::<(), ml_softmax::Error>(())
    /// ```
    pub fn autotune_choice(
        &self,
        rows: usize,
        cols: usize,
        precision: Precision,
    ) -> AutotuneChoice {
        let tuner = &self.autotune;
        let table = AutotuneChoice {
            strategy: table(self, rows, cols),
            source: ChoiceSource::Table,
            tuning: None,
        };
        // (f16 without SHADER_F16 runs nowhere: the call itself gives the typed error.)
        let no_f16 =
            precision == Precision::F16 && !self.features.contains(wgpu::Features::SHADER_F16);
        if !tuner.on || no_f16 {
            return table;
        }
        let bucket = Bucket::of(rows, cols, precision);
        let lookup = || tuner.chosen.lock().ok()?.get(&bucket).copied();
        // A bucket whose tuning failed follows the table shape by shape (a pure function of
        // the shape, so as reproducible as a choice that sticks).
        let settled = |choice: AutotuneChoice| match choice.source {
            ChoiceSource::Fallback => AutotuneChoice {
                source: ChoiceSource::Fallback,
                ..table
            },
            _ => choice,
        };
        if let Some(choice) = lookup() {
            return settled(choice);
        }
        // One tuning at a time; the bucket may have been chosen while this thread waited.
        let Ok(_guard) = tuner.tuning.lock() else {
            return table;
        };
        if let Some(choice) = lookup() {
            return settled(choice);
        }
        let start = Instant::now();
        let choice = match self.tune(bucket) {
            Ok((strategy, medians)) => {
                self.persist(bucket, strategy, medians);
                AutotuneChoice {
                    strategy,
                    source: ChoiceSource::Tuned,
                    tuning: Some(start.elapsed()),
                }
            }
            Err(e) => {
                eprintln!(
                    "ml-softmax: autotune of {} failed ({e}); the table's choice {} is kept",
                    bucket.key(),
                    table.strategy
                );
                AutotuneChoice {
                    source: ChoiceSource::Fallback,
                    ..table
                }
            }
        };
        if let Ok(mut stats) = tuner.stats.lock() {
            stats.tunings += 1;
        }
        if let Ok(mut chosen) = tuner.chosen.lock() {
            chosen.insert(bucket, choice);
        }
        choice
    }

    /// How many shape buckets this context has tuned, and how many it read from its file.
    pub fn autotune_stats(&self) -> AutotuneStats {
        self.autotune
            .stats
            .lock()
            .map_or_else(|_| Default::default(), |s| *s)
    }

    /// Times the candidates of `bucket`: the winner and every candidate's median (ms).
    fn tune(&self, bucket: Bucket) -> Result<(Strategy, Vec<(Strategy, f64)>)> {
        let data = TuneData::new(self, bucket)?;
        // 1. One run each builds the pipelines; a refused candidate is dropped.
        let mut live = Vec::new();
        for strategy in candidates(self, bucket) {
            match data.run(self, strategy, false) {
                Ok(_) => live.push(strategy),
                Err(e @ (Error::DeviceLost(_) | Error::Wait(_))) => return Err(e),
                Err(_) => {}
            }
        }
        // 2. Warm-up (a candidate more than PRUNE times slower than the fastest in the first
        //    round is dropped: it cannot win, and on software adapters it would cost most of
        //    the tuning time), then the timed runs round-robin, so a slow spell hits all alike.
        for round in 0..WARMUP_RUNS {
            let mut wall = Vec::with_capacity(live.len());
            for &strategy in &live {
                wall.push(data.run(self, strategy, false)?);
            }
            if round == 0 {
                let fastest = wall.iter().copied().fold(f64::INFINITY, f64::min);
                let mut keep = wall.iter().map(|&ms| ms <= PRUNE * fastest);
                live.retain(|_| keep.next().unwrap_or(true));
            }
        }
        let mut times = vec![Vec::with_capacity(REPS); live.len()];
        for _ in 0..REPS {
            for (&strategy, times) in live.iter().zip(&mut times) {
                times.push(data.run(self, strategy, true)?);
            }
        }
        let medians: Vec<(Strategy, f64)> = live
            .iter()
            .zip(times)
            .map(|(&s, mut t)| {
                t.sort_by(f64::total_cmp);
                (s, t[t.len() / 2])
            })
            .collect();
        // 3. The fastest, unless the table's choice (first, when it ran) is within the margin.
        let fastest = medians
            .iter()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .copied()
            .ok_or_else(|| Error::Unsupported {
                adapter: self.adapter_info().name.clone(),
                what: format!("no strategy ran at the shape bucket {}", bucket.key()),
            })?;
        let table = table(self, bucket.rows, bucket.cols);
        let winner = match medians.first() {
            Some(&(s, ms)) if s == table && fastest.1 >= ms * (1.0 - TABLE_MARGIN) => s,
            _ => fastest.0,
        };
        Ok((winner, medians))
    }

    /// Writes a new choice to the autotune file, if there is one; a failure is logged.
    fn persist(&self, bucket: Bucket, strategy: Strategy, medians: Vec<(Strategy, f64)>) {
        let tuner = &self.autotune;
        let Some(path) = &tuner.file else { return };
        // This context's choices from the file or tuned here (not the fallbacks).
        let Ok(chosen) = tuner.chosen.lock() else {
            return;
        };
        let known: Map<String, Value> = chosen
            .iter()
            .filter(|(_, c)| matches!(c.source, ChoiceSource::Tuned | ChoiceSource::File))
            .map(|(b, c)| (b.key(), json!({"strategy": c.strategy.to_string()})))
            .collect();
        drop(chosen);
        let medians: Map<String, Value> = medians
            .into_iter()
            .map(|(s, ms)| (s.to_string(), json!(ms)))
            .collect();
        let entry = json!({"strategy": strategy.to_string(), "median_ms": medians});
        if let Err(e) = store(path, &tuner.key, known, bucket.key(), entry) {
            eprintln!("ml-softmax: autotune choice not saved: {e}");
        }
    }
}

/// Device-resident inputs and outputs of the bucket's shape, and the timer.
struct TuneData {
    bucket: Bucket,
    logits: wgpu::Buffer,
    labels: wgpu::Buffer,
    grad: wgpu::Buffer,
    loss: wgpu::Buffer,
    /// Two timestamps (resolved to `resolve`) and the period in ns, where the device can
    /// write them inside an encoder.
    timestamps: Option<(wgpu::QuerySet, wgpu::Buffer, f64)>,
}

impl TuneData {
    fn new(ctx: &Context, bucket: Bucket) -> Result<Self> {
        let (rows, cols) = (bucket.rows, bucket.cols);
        let (logits, labels) = crate::reference::sample_batch(rows, cols, 0x5EED_0A07_07E5);
        let bytes: Vec<u8> = match bucket.precision {
            Precision::F32 => bytemuck::cast_slice(&logits).to_vec(),
            // Random halves of magnitude below 8 (exponents 10..=17 of 31: no inf, no NaN).
            Precision::F16 => logits
                .iter()
                .flat_map(|&v| {
                    let b = v.to_bits();
                    let half = (b >> 16) & 0x8000 | (10 + (b >> 20) % 8) << 10 | (b & 0x3ff);
                    (half as u16).to_le_bytes()
                })
                .collect(),
            // bf16 is the top half of an f32.
            Precision::Bf16 => logits
                .iter()
                .flat_map(|&v| ((v.to_bits() >> 16) as u16).to_le_bytes())
                .collect(),
        };
        let labels: Vec<i32> = labels.into_iter().map(|y| y as i32).collect();
        let storage = wgpu::BufferUsages::STORAGE;
        let needed =
            wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS;
        let timestamps = ctx.features.contains(needed).then(|| {
            let set = ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("autotune timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: 2,
            });
            let usage = wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC;
            let resolve = ctx.create_buffer("autotune timestamps", 16, usage);
            let period = f64::from(ctx.queue.get_timestamp_period());
            resolve.map(|r| (set, r, period))
        });
        Ok(Self {
            bucket,
            logits: ctx.buffer_with("autotune logits", &bytes, storage),
            labels: ctx.buffer_with("autotune labels", bytemuck::cast_slice(&labels), storage),
            grad: ctx.create_buffer(
                "autotune grad",
                bytes.len().next_multiple_of(4) as u64,
                storage,
            )?,
            loss: ctx.create_buffer("autotune loss", 4, wgpu::BufferUsages::COPY_DST)?,
            timestamps: timestamps.transpose()?,
        })
    }

    /// One run of the device cross-entropy with `strategy`, waited for; with `timed`, its
    /// time in ms (GPU timestamps around the recorded work, else host wall time around
    /// record + submit + wait).
    fn run(&self, ctx: &Context, strategy: Strategy, timed: bool) -> Result<f64> {
        let bufs = DeviceCrossEntropy {
            logits: self.logits.slice(..),
            precision: self.bucket.precision,
            targets: DeviceTargets::Classes(self.labels.slice(..)),
            grad: Some(self.grad.slice(..)),
            loss: Some(self.loss.slice(..)),
            row_loss: None,
            lse: None,
            upstream: None,
        };
        let (rows, cols) = (self.bucket.rows, self.bucket.cols);
        let options = CrossEntropyOptions::default();
        let stamps = self.timestamps.as_ref().filter(|_| timed);
        let start = Instant::now();
        let index = ctx.scoped(|| {
            let mut encoder = ctx.encoder();
            if let Some((set, _, _)) = stamps {
                encoder.write_timestamp(set, 0);
            }
            ctx.encode_cross_entropy(&mut encoder, &bufs, rows, cols, &options, strategy)?;
            if let Some((set, resolve, _)) = stamps {
                encoder.write_timestamp(set, 1);
                encoder.resolve_query_set(set, 0..2, resolve, 0);
            }
            Ok(ctx.queue.submit([encoder.finish()]))
        })?;
        ctx.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(index),
                timeout: Some(ctx.wait_timeout),
            })
            .map_err(|e| Error::Wait(e.to_string()))?;
        let wall = start.elapsed().as_secs_f64() * 1e3;
        let Some((_, resolve, period_ns)) = stamps else {
            return Ok(wall);
        };
        let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&ctx.read_back(resolve.slice(..))?);
        match ticks[..] {
            [start, end] => Ok(end.saturating_sub(start) as f64 * period_ns * 1e-6),
            _ => Err(Error::Validation("autotune read back no timestamps".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_round_up_cap_rows_and_name_themselves() {
        // (rows, cols, precision, bucket rows, bucket cols)
        #[rustfmt::skip]
        let cases = [
            (33, 517, Precision::F32, 64, 1024),
            (64, 1024, Precision::F32, 64, 1024),
            (1, 1, Precision::Bf16, 1, 1),
            // 64 MiB of f32 rows of 32768 columns is 512 rows; of bf16, 1024.
            (4096, 32000, Precision::F32, 512, 32768),
            (100_000, 32000, Precision::F32, 512, 32768),
            (4096, 32000, Precision::Bf16, 1024, 32768),
            // A row larger than the cap is a bucket of one row.
            (8, 1 << 25, Precision::F32, 1, 1 << 25),
        ];
        for (rows, cols, precision, want_rows, want_cols) in cases {
            let b = Bucket::of(rows, cols, precision);
            assert_eq!((b.rows, b.cols), (want_rows, want_cols), "{rows}x{cols}");
            assert_eq!(Bucket::parse(&b.key()), Some(b), "{}", b.key());
        }
        for bad in [
            "64x1000 f32",
            "64x1024",
            "64x1024 f64",
            "x1024 f32",
            "3x4 f32",
        ] {
            assert_eq!(Bucket::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_switch_parses() {
        assert_eq!("off".parse::<Autotune>().ok(), Some(Autotune::Off));
        assert_eq!("on".parse::<Autotune>().ok(), Some(Autotune::On));
        assert_eq!(
            "hardware".parse::<Autotune>().ok(),
            Some(Autotune::OnHardware)
        );
        assert_eq!(
            "tune.json".parse::<Autotune>().ok(),
            Some(Autotune::Persist("tune.json".into()))
        );
        assert!("".parse::<Autotune>().is_err());
    }
}
