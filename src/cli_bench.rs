//! `ml-softmax bench`: every strategy, the automatic choice and the copies, per shape.
//!
//! For each shape the logits, labels and outputs live on the device; one repetition of a
//! kernel is the whole device-resident cross-entropy (mean denominator, row kernel, loss sum)
//! as one call records it. Per shape:
//! 1. every kernel runs once (pipeline compilation; a kernel the adapter cannot run is
//!    reported and left out);
//! 2. warm-up: the GPU is kept busy with back-to-back submissions of every kernel (two in
//!    flight, so the queue never runs dry) for at least `--warmup-ms` and until the
//!    submissions' times settle (the last three within 5 % of each other), at most 20 times
//!    that long: a GPU's clock falls when idle and rises only under sustained load (an H200
//!    sat at 345 MHz after idle; ten reps with a wait after each never reached its 1980 MHz);
//!    how long it took is reported;
//! 3. `--reps` timed repetitions of each kernel, round-robin (every kernel once per round,
//!    so a slow spell hits all alike). With GPU timestamps (adapters with
//!    `TIMESTAMP_QUERY_INSIDE_ENCODERS`) each repetition is bracketed by timestamps inside a
//!    few large submissions, with no CPU wait between repetitions; with `--wall` (or without
//!    timestamps) each repetition is recorded, submitted and waited for on its own and timed
//!    by the host.
//!
//! Per kernel: min / median / max; a spread (interquartile range / median) above
//! [`SPREAD_LARGE`] is flagged. The limits: `copy-buffer` is the driver's own buffer copy
//! (`copy_buffer_to_buffer`) of the same bytes, `limit_ratio = copy-buffer time / this time`;
//! `copy` is a WGSL kernel moving the same bytes (reads `rows * cols` elements, writes as
//! many) in the widest access the kernels make (32 bytes of 64-bit words on software
//! adapters: `Context::words64`, the fastest copy there; else 16 bytes of 32-bit words),
//! `copy_ratio = copy time / this time`. Where the words are 64-bit, `copy-u32` is the copy in
//! 16-byte units of 32-bit words. `auto` is printed with the strategy it resolved to and
//! where that came from (`Context::autotune_choice`): the table, or autotuned on this
//! adapter (with the tuning time, taken before the shape's warm-up), or read from the
//! autotune file. `ML_SOFTMAX_AUTOTUNE` (off, on, hardware or a file) sets
//! `ContextOptions::autotune` for every command.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use ml_softmax::wgpu;
use ml_softmax::{
    AutotuneChoice, ChoiceSource, Context, CrossEntropyOptions, DeviceCrossEntropy, DeviceTargets,
    Precision, Strategy,
};

use crate::GpuArgs;
use crate::cli_outputs::Outputs;

/// The shapes of the matrix: short rows to the longest vocabularies, and a latency case.
const DEFAULT_SHAPES: &str = "16384x128,8192x1000,4096x4096,1024x32000,256x131072,64x262144,8x1000";

/// A kernel whose interquartile range exceeds this share of its median is flagged.
const SPREAD_LARGE: f64 = 0.10;

/// The warm-up has settled when the last this many submissions are within [`SETTLE_TOLERANCE`].
const SETTLE_COUNT: usize = 3;
/// ... of each other (largest / smallest - 1).
const SETTLE_TOLERANCE: f64 = 0.05;
/// The warm-up stops, settled or not, after this many times `--warmup-ms`.
const WARMUP_CAP: u32 = 20;
/// One timed submission holds at most this much GPU work (estimated from the warm-up), so a
/// slow adapter never meets the wait timeout.
const SUBMISSION_BUDGET: Duration = Duration::from_millis(500);
/// Wait at most this long for one submission.
const WAIT_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    gpu: GpuArgs,
    /// Comma-separated ROWSxCOLS shapes.
    #[arg(long, default_value = DEFAULT_SHAPES)]
    shapes: String,
    /// Timed repetitions per kernel and shape (after the warm-up), taken round-robin.
    #[arg(long, default_value_t = 10, value_parser = at_least_one)]
    reps: usize,
    /// Keep the GPU busy for at least this many milliseconds before timing a shape (and
    /// until the timings settle, at most 20 times this).
    #[arg(long, default_value_t = 300)]
    warmup_ms: u64,
    /// Write every figure as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Draw GB/s against cols per strategy, with the copy line, as SVG.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Only these strategies (comma-separated: auto, subgroup, wg1, wg8, ...); default all.
    #[arg(long)]
    strategies: Option<String>,
    /// Time each run by host wall time around record + submit + wait (what one call costs
    /// the caller), even where the adapter has GPU timestamps.
    #[arg(long)]
    wall: bool,
    /// Storage format of logits and gradient: f32, f16 or bf16 (the copies then move the
    /// same number of bytes).
    #[arg(long, value_enum, default_value_t = PrecisionArg::F32)]
    precision: PrecisionArg,
    /// Leave out the io paths of software adapters (64-bit words, f16 converted by bit
    /// operations: `ContextOptions::software_io`), to measure what they buy.
    #[arg(long)]
    no_software_io: bool,
    /// Time the host path instead of the kernels: the machine's transfer rates (host memcpy,
    /// upload through mapped staging, readback) and `Context::cross_entropy` (f32, host
    /// slices in and out) per shape, in GB/s of bytes in + out.
    #[arg(long)]
    host: bool,
    /// With --host: also time `cross_entropy` on a context whose host calls split the batch
    /// into chunks of at most this many MiB (several chunks, pipelined).
    #[arg(long, requires = "host")]
    chunk_mib: Option<u64>,
}

/// A count of at least 1.
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// How the warm-up of one shape went.
#[derive(Clone, Copy)]
struct Warmup {
    ms: f64,
    submissions: usize,
    settled: bool,
}

/// `--precision`.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum PrecisionArg {
    F32,
    F16,
    Bf16,
}

impl PrecisionArg {
    pub(crate) fn precision(self) -> Precision {
        match self {
            Self::F32 => Precision::F32,
            Self::F16 => Precision::F16,
            Self::Bf16 => Precision::Bf16,
        }
    }

    /// As the flag and the JSON write it: `f32`, `f16`, `bf16`.
    fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Bf16 => "bf16",
        }
    }
}

/// One line of the report.
struct Row {
    strategy: String,
    /// What `auto` (or a named strategy) ran as; `None` for the copies.
    resolved: Option<String>,
    /// For `auto`: where its strategy came from, and the tuning time.
    choice: Option<AutotuneChoice>,
    rows: usize,
    cols: usize,
    /// Bytes read and written: `2 * rows * cols * element size`.
    bytes: u64,
    stats: Stats,
    gbps: f64,
    copy_ratio: f64,
    limit_ratio: f64,
    warmup: Warmup,
}

/// Min, quartiles, median and max of one kernel's times, in ms.
#[derive(Clone, Copy)]
struct Stats {
    min: f64,
    median: f64,
    max: f64,
    /// Interquartile range / median.
    spread: f64,
}

impl Stats {
    /// The figures of `times` (not empty).
    fn of(mut times: Vec<f64>) -> Self {
        times.sort_by(f64::total_cmp);
        let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
        let median = times[times.len() / 2];
        Self {
            min: times[0],
            median,
            max: times[times.len() - 1],
            spread: (at(0.75) - at(0.25)) / median,
        }
    }

    fn large_spread(&self) -> bool {
        self.spread.is_nan() || self.spread > SPREAD_LARGE
    }
}

/// Records one run of a kernel into an encoder.
type Record<'a> = Box<dyn Fn(&mut wgpu::CommandEncoder) -> Result<(), String> + 'a>;

pub fn run(args: &BenchArgs) -> Result<(), String> {
    if args.host {
        return host::run(args);
    }
    let mut outputs = Outputs::plan(&[
        ("--json", args.json.as_deref()),
        ("--plot", args.plot.as_deref()),
    ])?;
    let ctx = args
        .gpu
        .context_with(args.no_software_io.then_some(false))?;
    let shapes = parse_shapes(&args.shapes)?;
    let mut strategies: Vec<Strategy> = vec![Strategy::Auto];
    strategies.extend(Strategy::all(ctx.has_subgroups()));
    if let Some(list) = &args.strategies {
        strategies = list
            .split(',')
            .map(|s| s.trim().parse::<Strategy>().map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
    }
    let precision = args.precision.precision();
    let timer = Timer::new(&ctx, args.wall);
    let adapter = ctx.describe();
    println!("adapter: {adapter}");
    println!("timer: {}", timer.describe());
    println!("precision: {}", args.precision.name());
    println!(
        "warm-up: back-to-back submissions for at least {} ms per shape, until the last \
         {SETTLE_COUNT} agree within {:.0}%; then {} reps per kernel, round-robin",
        args.warmup_ms,
        100.0 * SETTLE_TOLERANCE,
        args.reps
    );
    let words = if ctx.words64() { 64 } else { 32 };
    println!(
        "limits: copy-buffer = the driver's copy_buffer_to_buffer of the same bytes (of limit); \
         copy = a WGSL copy in {words}-bit words{} (of copy)",
        if ctx.words64() {
            ", 32-byte units (copy-u32: 16-byte units of 32-bit words)"
        } else {
            ", 16-byte units"
        }
    );
    println!(
        "{:>14} {:>16} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8}",
        "shape",
        "strategy",
        "min ms",
        "median ms",
        "max ms",
        "MB moved",
        "GB/s",
        "of copy",
        "of limit"
    );
    let mut report = Vec::new();
    for &(rows, cols) in &shapes {
        let shape = format!("{rows}x{cols}");
        let data = Buffers::new(&ctx, rows, cols, precision);
        let bytes = 2 * (rows * cols) as u64 * precision.bytes();
        let options = CrossEntropyOptions::default();
        // The copy in the widest access the kernels make (32 bytes of 64-bit words on
        // software adapters with SHADER_INT64: Context::words64), and then also in 16 bytes
        // of 32-bit words, to show the gap.
        let copy = |words64: bool| -> Record {
            let (ctx, data) = (&ctx, &data);
            Box::new(move |encoder: &mut wgpu::CommandEncoder| {
                ml_softmax::kernels::copy::record(
                    ctx,
                    encoder,
                    &data.logits,
                    &data.grad,
                    // The same bytes as f32 words.
                    (bytes / 2).div_ceil(4) as u32,
                    words64,
                )
                .map_err(|e| e.to_string())
            })
        };
        // Every kernel of this shape: the copies first (`copy` must stay first: the ratios
        // are taken against it and `copy-buffer`).
        let mut kernels: Vec<(String, Option<String>, Record)> =
            vec![("copy".into(), None, copy(ctx.words64()))];
        if ctx.words64() {
            kernels.push(("copy-u32".into(), None, copy(false)));
        }
        {
            let data = &data;
            // The same bytes, in copy_buffer_to_buffer's 4-byte granules (both buffers are
            // padded to 32 bytes).
            let size = (bytes / 2).next_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT);
            kernels.push((
                "copy-buffer".into(),
                None,
                Box::new(move |encoder: &mut wgpu::CommandEncoder| {
                    encoder.copy_buffer_to_buffer(&data.logits, 0, &data.grad, 0, size);
                    Ok(())
                }),
            ));
        }
        // Auto's choice first: with autotune on, this tunes the shape's bucket (untimed).
        let choice = strategies
            .contains(&Strategy::Auto)
            .then(|| ctx.autotune_choice(rows, cols, precision));
        if let Some(c) = choice {
            println!("{shape:>14} auto = {}: {}", c.strategy, describe_choice(&c));
        }
        for &strategy in &strategies {
            let (ctx, data, options) = (&ctx, &data, &options);
            let resolved = ctx
                .resolve_strategy_for(strategy, rows, cols, precision)
                .to_string();
            kernels.push((
                strategy.to_string(),
                Some(resolved),
                Box::new(move |encoder: &mut wgpu::CommandEncoder| {
                    ctx.encode_cross_entropy(encoder, &data.device(), rows, cols, options, strategy)
                        .map_err(|e| e.to_string())
                }),
            ));
        }
        // One run each (builds the pipelines); a kernel this adapter cannot run is reported.
        let mut live = Vec::new();
        for (name, resolved, record) in kernels {
            match run_once(&ctx, &record) {
                Ok(()) => live.push((name, resolved, record)),
                Err(e) => println!("{shape:>14} {name:>16} skipped: {e}"),
            }
        }
        let records: Vec<&Record> = live.iter().map(|k| &k.2).collect();
        let warmup = warm_up(&ctx, &records, Duration::from_millis(args.warmup_ms))?;
        println!(
            "{shape:>14} warm-up: {:.0} ms, {} submissions, {}",
            warmup.ms,
            warmup.submissions,
            if warmup.settled {
                "settled"
            } else {
                "NOT settled (timings still moving)"
            }
        );
        let round_ms = warmup.round_ms;
        let times = timer.time_rounds(&ctx, &records, args.reps, round_ms)?;
        let stats: Vec<Stats> = times.into_iter().map(Stats::of).collect();
        let copy_ms = stats
            .first()
            .map(|s| s.median)
            .ok_or("the copy kernel did not run")?;
        let limit_ms = live
            .iter()
            .zip(&stats)
            .find(|(k, _)| k.0 == "copy-buffer")
            .map(|(_, s)| s.median)
            .ok_or("the driver's copy (copy-buffer) did not run")?;
        let mut noisy = Vec::new();
        for ((strategy, resolved, _), st) in live.into_iter().zip(stats) {
            let gbps = bytes as f64 / (st.median * 1e-3) / 1e9;
            let label = match &resolved {
                Some(r) if *r != strategy => format!("{strategy}={r}"),
                _ => strategy.clone(),
            };
            println!(
                "{shape:>14} {label:>16} {:>9.3} {:>9.3} {:>9.3} {:>9.1} {:>9.2} {:>7.0}% {:>7.0}%{}",
                st.min,
                st.median,
                st.max,
                bytes as f64 / 1e6,
                gbps,
                100.0 * copy_ms / st.median,
                100.0 * limit_ms / st.median,
                if st.large_spread() { "  spread!" } else { "" }
            );
            if st.large_spread() {
                noisy.push(format!("{strategy} {:.0}%", 100.0 * st.spread));
            }
            report.push(Row {
                choice: choice.filter(|_| strategy == "auto"),
                strategy,
                resolved,
                rows,
                cols,
                bytes,
                stats: st,
                gbps,
                copy_ratio: copy_ms / st.median,
                limit_ratio: limit_ms / st.median,
                warmup: warmup.summary(),
            });
        }
        if !noisy.is_empty() {
            println!(
                "{shape:>14} large spread (interquartile range over {:.0}% of the median): {}",
                100.0 * SPREAD_LARGE,
                noisy.join(", ")
            );
        }
    }
    outputs.set_bytes(
        "--json",
        json_report(
            &adapter,
            timer.describe(),
            args.precision.name(),
            words,
            args.reps,
            &report,
        ),
    );
    outputs.set_bytes("--plot", svg_plot(&adapter, &report));
    outputs.write()
}

/// Where `auto`'s strategy came from, as the JSON's `auto_choice` says it.
fn choice_name(source: ChoiceSource) -> &'static str {
    match source {
        ChoiceSource::Table => "table",
        ChoiceSource::Tuned => "autotuned",
        ChoiceSource::File => "file",
        ChoiceSource::Fallback => "table (tuning failed)",
    }
}

/// `auto`'s choice in words: `autotuned in 1234 ms`, `table`, ...
fn describe_choice(choice: &AutotuneChoice) -> String {
    match choice.tuning {
        Some(t) => format!("autotuned in {:.0} ms", t.as_secs_f64() * 1e3),
        None => choice_name(choice.source).to_string(),
    }
}

/// Records, submits and waits for one run of `record`.
fn run_once(ctx: &Context, record: &Record) -> Result<(), String> {
    let mut encoder = ctx
        .device()
        .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
    record(&mut encoder)?;
    let index = ctx.queue().submit([encoder.finish()]);
    wait(ctx, index)
}

fn wait(ctx: &Context, index: wgpu::SubmissionIndex) -> Result<(), String> {
    ctx.device()
        .poll(wgpu::PollType::Wait {
            submission_index: Some(index),
            timeout: Some(WAIT_TIMEOUT),
        })
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// What [`warm_up`] found: how it went, and how long one round of every kernel takes.
struct WarmupResult {
    ms: f64,
    submissions: usize,
    settled: bool,
    round_ms: f64,
}

impl WarmupResult {
    fn summary(&self) -> Warmup {
        Warmup {
            ms: self.ms,
            submissions: self.submissions,
            settled: self.settled,
        }
    }
}

/// Keeps the GPU busy until its clock has risen: submissions of `rounds` rounds of every
/// kernel, two in flight so the queue never runs dry, for at least `least` and until the
/// last [`SETTLE_COUNT`] submissions took times within [`SETTLE_TOLERANCE`] of each other
/// (at most [`WARMUP_CAP`] times `least`). With the queue never empty, the time between two
/// submissions' completions is the GPU's time for one, seen from the host without
/// timestamps. Submissions are sized to take about 2 ms, so that host timing is fine enough.
fn warm_up(ctx: &Context, records: &[&Record], least: Duration) -> Result<WarmupResult, String> {
    let submit = |rounds: usize| -> Result<wgpu::SubmissionIndex, String> {
        let mut encoder = ctx
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        for _ in 0..rounds {
            for record in records {
                record(&mut encoder)?;
            }
        }
        Ok(ctx.queue().submit([encoder.finish()]))
    };
    let start = Instant::now();
    // How long one round takes (after run_once, the pipelines exist).
    let index = submit(1)?;
    wait(ctx, index)?;
    let first_round = start.elapsed().as_secs_f64() * 1e3;
    let rounds = ((2.0 / first_round.max(1e-3)).ceil() as usize).clamp(1, 1000);
    let mut in_flight: VecDeque<wgpu::SubmissionIndex> = VecDeque::new();
    in_flight.push_back(submit(rounds)?);
    in_flight.push_back(submit(rounds)?);
    let mut submissions = 3;
    let mut last = Instant::now();
    let mut intervals: Vec<f64> = Vec::new();
    let cap = least * WARMUP_CAP;
    let settled = loop {
        let index = in_flight.pop_front().ok_or("warm-up: nothing in flight")?;
        wait(ctx, index)?;
        let now = Instant::now();
        intervals.push((now - last).as_secs_f64() * 1e3);
        last = now;
        let recent = &intervals[intervals.len().saturating_sub(SETTLE_COUNT)..];
        // The first interval includes the first submission's queueing: not counted.
        let steady = intervals.len() > SETTLE_COUNT && {
            let lo = recent.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = recent.iter().copied().fold(0.0, f64::max);
            hi <= lo * (1.0 + SETTLE_TOLERANCE)
        };
        let elapsed = start.elapsed();
        if elapsed >= least && steady {
            break true;
        }
        if elapsed >= cap {
            break false;
        }
        in_flight.push_back(submit(rounds)?);
        submissions += 1;
    };
    for index in in_flight {
        wait(ctx, index)?;
    }
    let recent = &intervals[intervals.len().saturating_sub(SETTLE_COUNT)..];
    let round_ms = recent.iter().sum::<f64>() / recent.len() as f64 / rounds as f64;
    Ok(WarmupResult {
        ms: start.elapsed().as_secs_f64() * 1e3,
        submissions,
        settled,
        round_ms,
    })
}

fn parse_shapes(text: &str) -> Result<Vec<(usize, usize)>, String> {
    text.split(',')
        .map(|s| {
            let (r, c) = s
                .trim()
                .split_once('x')
                .ok_or_else(|| format!("shape {s:?} is not ROWSxCOLS"))?;
            let parse = |v: &str| {
                v.parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("shape {s:?}: {v:?} is not a positive integer"))
            };
            Ok((parse(r)?, parse(c)?))
        })
        .collect()
}

/// The device buffers of one shape, with random logits and labels.
struct Buffers {
    logits: wgpu::Buffer,
    labels: wgpu::Buffer,
    grad: wgpu::Buffer,
    loss: wgpu::Buffer,
    precision: Precision,
}

impl Buffers {
    fn new(ctx: &Context, rows: usize, cols: usize, precision: Precision) -> Self {
        use wgpu::util::DeviceExt;
        let (logits, labels) =
            ml_softmax::reference::sample_batch(rows, cols, 0x9E37_79B9_7F4A_7C15);
        let labels: Vec<i32> = labels.into_iter().map(|y| y as i32).collect();
        let mut bytes: Vec<u8> = match precision {
            Precision::F32 => bytemuck::cast_slice(&logits).to_vec(),
            Precision::F16 => logits
                .iter()
                .flat_map(|&v| half::f16::from_f32(v).to_bits().to_le_bytes())
                .collect(),
            Precision::Bf16 => logits
                .iter()
                .flat_map(|&v| half::bf16::from_f32(v).to_bits().to_le_bytes())
                .collect(),
        };
        // Both element buffers hold whole units of the copy kernel (32 bytes at most).
        let padded = bytes.len().next_multiple_of(32);
        bytes.resize(padded, 0);
        let init = |label, bytes: &[u8], usage| {
            ctx.device()
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(label),
                    contents: bytes,
                    usage,
                })
        };
        let storage = wgpu::BufferUsages::STORAGE;
        // COPY_SRC / COPY_DST: the driver's copy (copy-buffer) moves logits to grad.
        Self {
            logits: init("logits", &bytes, storage | wgpu::BufferUsages::COPY_SRC),
            labels: init("labels", bytemuck::cast_slice(&labels), storage),
            grad: ctx.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("grad"),
                size: padded as u64,
                usage: storage | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            loss: ctx.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("loss"),
                size: 4,
                usage: wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            precision,
        }
    }

    fn device(&self) -> DeviceCrossEntropy<'_> {
        DeviceCrossEntropy {
            logits: self.logits.slice(..),
            precision: self.precision,
            targets: DeviceTargets::Classes(self.labels.slice(..)),
            grad: Some(self.grad.slice(..)),
            loss: Some(self.loss.slice(..)),
            row_loss: None,
            lse: None,
            upstream: None,
        }
    }
}

/// GPU timestamps around each repetition when the adapter can write them inside an encoder
/// (and `--wall` is not given), host wall time around record + submit + wait otherwise.
struct Timer {
    /// The query set (of `queries` timestamps), its resolve and readback buffers, and the
    /// timestamp period in ns.
    timestamps: Option<Timestamps>,
}

struct Timestamps {
    set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    read: wgpu::Buffer,
    period_ns: f64,
}

/// Timestamps per query set: wgpu's most.
const QUERIES: u32 = wgpu::QUERY_SET_MAX_QUERIES;

impl Timer {
    fn new(ctx: &Context, wall: bool) -> Self {
        let needed =
            wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS;
        let timestamps = !wall && ctx.device().features().contains(needed);
        let timestamps = timestamps.then(|| {
            let set = ctx.device().create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("bench timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: QUERIES,
            });
            let size = u64::from(QUERIES) * 8;
            let resolve = ctx.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("timestamps"),
                size,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            let read = ctx.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("timestamps readback"),
                size,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let period_ns = f64::from(ctx.queue().get_timestamp_period());
            Timestamps {
                set,
                resolve,
                read,
                period_ns,
            }
        });
        Self { timestamps }
    }

    fn describe(&self) -> &'static str {
        if self.timestamps.is_some() {
            "GPU timestamps around each rep, many reps per submission"
        } else {
            "host wall time around record + submit + wait (--wall, or no timestamp queries)"
        }
    }

    /// `reps` timed runs of every kernel, round-robin; per kernel, its times in ms.
    /// `round_ms` (one round of every kernel, from the warm-up) sizes the submissions.
    fn time_rounds(
        &self,
        ctx: &Context,
        records: &[&Record],
        reps: usize,
        round_ms: f64,
    ) -> Result<Vec<Vec<f64>>, String> {
        let mut times = vec![Vec::with_capacity(reps); records.len()];
        let Some(ts) = &self.timestamps else {
            for _ in 0..reps {
                for (record, times) in records.iter().zip(&mut times) {
                    let start = Instant::now();
                    run_once(ctx, record)?;
                    times.push(start.elapsed().as_secs_f64() * 1e3);
                }
            }
            return Ok(times);
        };
        // Rounds per submission: as many as the query set holds and the time budget allows.
        let by_queries = (QUERIES as usize / (2 * records.len())).max(1);
        let by_time = (SUBMISSION_BUDGET.as_secs_f64() * 1e3 / round_ms.max(1e-6)) as usize;
        let per_submission = by_queries.min(by_time.max(1));
        let mut done = 0;
        while done < reps {
            let rounds = per_submission.min(reps - done);
            let mut encoder = ctx
                .device()
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
            let mut query = 0;
            for _ in 0..rounds {
                for record in records {
                    encoder.write_timestamp(&ts.set, query);
                    record(&mut encoder)?;
                    encoder.write_timestamp(&ts.set, query + 1);
                    query += 2;
                }
            }
            encoder.resolve_query_set(&ts.set, 0..query, &ts.resolve, 0);
            encoder.copy_buffer_to_buffer(&ts.resolve, 0, &ts.read, 0, u64::from(query) * 8);
            let index = ctx.queue().submit([encoder.finish()]);
            wait(ctx, index)?;
            let ticks = read_ticks(ctx, &ts.read, query as usize)?;
            for (i, pair) in ticks.chunks_exact(2).enumerate() {
                let ms = pair[1].saturating_sub(pair[0]) as f64 * ts.period_ns * 1e-6;
                times[i % records.len()].push(ms);
            }
            done += rounds;
        }
        Ok(times)
    }
}

/// The first `count` timestamps of `read`.
fn read_ticks(ctx: &Context, read: &wgpu::Buffer, count: usize) -> Result<Vec<u64>, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let bytes = count as u64 * 8;
    read.map_async(wgpu::MapMode::Read, ..bytes, move |r| {
        let _ = tx.send(r);
    });
    ctx.device()
        .poll(wgpu::PollType::wait_indefinitely())
        .map_err(|e| e.to_string())?;
    rx.recv()
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let ticks = {
        let view = read.get_mapped_range(..bytes).map_err(|e| e.to_string())?;
        bytemuck::pod_collect_to_vec(&view)
    };
    read.unmap();
    Ok(ticks)
}

/// Every figure as a JSON array of records (non-finite figures become `null`).
fn json_report(
    adapter: &str,
    timer: &str,
    precision: &str,
    words: u32,
    reps: usize,
    report: &[Row],
) -> Vec<u8> {
    let records: Vec<serde_json::Value> = report
        .iter()
        .map(|r| {
            serde_json::json!({
                "adapter": adapter,
                "timer": timer,
                "strategy": r.strategy,
                "resolved": r.resolved,
                "auto_choice": r.choice.map(|c| choice_name(c.source)),
                "tuning_ms": r.choice.and_then(|c| c.tuning).map(|t| t.as_secs_f64() * 1e3),
                "rows": r.rows,
                "cols": r.cols,
                "precision": precision,
                "words": words,
                "reps": reps,
                "warmup_ms": r.warmup.ms,
                "warmup_submissions": r.warmup.submissions,
                "warmup_settled": r.warmup.settled,
                "min_ms": r.stats.min,
                "median_ms": r.stats.median,
                "max_ms": r.stats.max,
                "spread": r.stats.spread,
                "spread_large": r.stats.large_spread(),
                "bytes": r.bytes,
                "gbps": r.gbps,
                "copy_ratio": r.copy_ratio,
                "limit_ratio": r.limit_ratio,
            })
        })
        .collect();
    let mut bytes = serde_json::to_vec_pretty(&records).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// GB/s against cols per strategy, with the copy line, as SVG.
fn svg_plot(adapter: &str, report: &[Row]) -> Vec<u8> {
    let (w, h, m) = (720.0, 440.0, 60.0);
    let max_gbps = report.iter().map(|r| r.gbps).fold(0.0, f64::max).max(1e-9) * 1.1;
    let (min_c, max_c) = report.iter().fold((f64::MAX, 1.0f64), |(lo, hi), r| {
        (lo.min(r.cols as f64), hi.max(r.cols as f64))
    });
    let (lx0, lx1) = (min_c.log2(), max_c.log2().max(min_c.log2() + 1.0));
    let x = |c: f64| m + (c.log2() - lx0) / (lx1 - lx0) * (w - 2.0 * m);
    let y = |g: f64| h - m - g / max_gbps * (h - 2.0 * m);
    let colors = [
        "#000", "#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
    ];
    let mut names: Vec<&str> = Vec::new();
    for r in report {
        if !names.contains(&r.strategy.as_str()) {
            names.push(&r.strategy);
        }
    }
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" \
         fill=\"white\"/>\n<text x=\"{m}\" y=\"20\">GB/s (read + write) against cols: {}</text>\n",
        escape(adapter)
    );
    let _ = writeln!(
        s,
        "<line x1=\"{m}\" y1=\"{0}\" x2=\"{1}\" y2=\"{0}\" stroke=\"#888\"/>\
         <line x1=\"{m}\" y1=\"{m}\" x2=\"{m}\" y2=\"{0}\" stroke=\"#888\"/>",
        h - m,
        w - m
    );
    for k in 0..=4 {
        let g = max_gbps * f64::from(k) / 4.0;
        let _ = writeln!(s, "<text x=\"5\" y=\"{:.1}\">{g:.2}</text>", y(g) + 4.0);
    }
    let mut cols: Vec<usize> = report.iter().map(|r| r.cols).collect();
    cols.sort_unstable();
    cols.dedup();
    for c in &cols {
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{c}</text>",
            x(*c as f64),
            h - m + 16.0
        );
    }
    for (i, name) in names.iter().enumerate() {
        let color = colors[i % colors.len()];
        // One point per column count: the shape with the most rows (the latency case
        // 8x1000 shares its column count with 8192x1000).
        let mut pts: Vec<(usize, usize, f64)> = report
            .iter()
            .filter(|r| r.strategy == *name)
            .map(|r| (r.cols, r.rows, r.gbps))
            .collect();
        pts.sort_by_key(|p| (p.0, std::cmp::Reverse(p.1)));
        pts.dedup_by_key(|p| p.0);
        let pts: Vec<(usize, f64)> = pts.into_iter().map(|(c, _, g)| (c, g)).collect();
        let line: Vec<String> = pts
            .iter()
            .map(|(c, g)| format!("{:.1},{:.1}", x(*c as f64), y(*g)))
            .collect();
        let dash = if name.starts_with("copy") {
            " stroke-dasharray=\"6 3\""
        } else {
            ""
        };
        let _ = writeln!(
            s,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"{dash}/>",
            line.join(" ")
        );
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"{color}\">{name}</text>",
            w - m + 5.0,
            m + 16.0 * i as f64
        );
    }
    s.push_str("</svg>\n");
    s.into_bytes()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `bench --host`: the host path against the machine's transfer rates.
mod host {
    use std::hint::black_box;
    use std::time::Instant;

    use ml_softmax::{Context, ContextOptions, CrossEntropyOptions, wgpu};

    use super::{BenchArgs, Stats, WAIT_TIMEOUT, parse_shapes};
    use crate::cli_outputs::Outputs;

    /// One measured figure: what, the bytes each repetition moves, its times.
    struct Figure {
        shape: String,
        what: String,
        bytes: u64,
        stats: Stats,
    }

    impl Figure {
        fn gbps(&self) -> f64 {
            self.bytes as f64 / (self.stats.median * 1e-3) / 1e9
        }
    }

    /// Per shape (bytes = the f32 logits of the shape, capped at the device's largest buffer):
    /// - `memcpy`: the host copying the bytes from one `Vec` to another;
    /// - `upload`: the bytes written into a mapped `MAP_WRITE | COPY_SRC` staging buffer
    ///   (mapped again with `map_async` for each repetition, as the host path reuses it),
    ///   unmapped, copied into a storage buffer by `copy_buffer_to_buffer`, waited for;
    /// - `readback`: a storage buffer copied into a `MAP_READ` staging buffer, mapped, and
    ///   copied out into a `Vec`;
    /// - `cross_entropy`: the host API, logits and labels in, gradient, row losses and lse
    ///   out (bytes in + out), one warm-up call first; with `--chunk-mib` again in chunks;
    /// - the floor: bytes in at the upload rate plus bytes out at the readback rate.
    pub(super) fn run(args: &BenchArgs) -> Result<(), String> {
        let mut outputs = Outputs::plan(&[("--json", args.json.as_deref())])?;
        let ctx = args.gpu.context()?;
        let shapes = parse_shapes(&args.shapes)?;
        let chunked = match args.chunk_mib {
            Some(mib) => Some(
                Context::from_device(
                    ctx.device().clone(),
                    ctx.queue().clone(),
                    &ContextOptions {
                        max_chunk_bytes: Some(mib << 20),
                        ..Default::default()
                    },
                )
                .map_err(|e| e.to_string())?,
            ),
            None => None,
        };
        println!("adapter: {}", ctx.describe());
        println!(
            "host path: {} reps per figure after one untimed run; GB/s of the bytes each moves",
            args.reps
        );
        println!(
            "{:>14} {:>26} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "shape", "what", "min ms", "median ms", "max ms", "MB moved", "GB/s"
        );
        let mut figures = Vec::new();
        for &(rows, cols) in &shapes {
            let shape = format!("{rows}x{cols}");
            let max = ctx.device().limits().max_buffer_size;
            let bytes = ((rows * cols * 4) as u64).min(max) / 4 * 4;
            let mut add = |what: String, bytes: u64, times: Vec<f64>| {
                let f = Figure {
                    shape: shape.clone(),
                    what,
                    bytes,
                    stats: Stats::of(times),
                };
                println!(
                    "{shape:>14} {:>26} {:>9.3} {:>9.3} {:>9.3} {:>9.1} {:>9.2}",
                    f.what,
                    f.stats.min,
                    f.stats.median,
                    f.stats.max,
                    f.bytes as f64 / 1e6,
                    f.gbps()
                );
                figures.push(f);
            };
            add("memcpy".into(), bytes, memcpy(bytes, args.reps));
            let (upload, readback) = transfers(&ctx, bytes, args.reps)?;
            let up_gbps = bytes as f64 / (Stats::of(upload.clone()).median * 1e-3) / 1e9;
            let down_gbps = bytes as f64 / (Stats::of(readback.clone()).median * 1e-3) / 1e9;
            add("upload (mapped staging)".into(), bytes, upload);
            add("readback".into(), bytes, readback);
            let (logits, labels) =
                ml_softmax::reference::sample_batch(rows, cols, 0x9E37_79B9_7F4A_7C15);
            // In: logits (f32) and labels (i64); out: gradient (f32), row losses and lse.
            let bytes_in = (rows * cols * 4 + rows * 8) as u64;
            let bytes_out = (rows * cols * 4 + rows * 8) as u64;
            let floor_ms = (bytes_in as f64 / up_gbps + bytes_out as f64 / down_gbps) / 1e6;
            let mut contexts = vec![("cross_entropy".to_string(), &ctx)];
            if let (Some(c), Some(mib)) = (&chunked, args.chunk_mib) {
                contexts.push((format!("cross_entropy {mib} MiB chunks"), c));
            }
            for (what, c) in contexts {
                let times = host_api(c, &logits, &labels, rows, cols, args.reps)?;
                let median = Stats::of(times.clone()).median;
                add(what, bytes_in + bytes_out, times);
                println!(
                    "{shape:>14} {:>26} {floor_ms:>9.3} ms at the measured upload and readback \
                     rates: the call takes {:.2}x that",
                    "transfer floor",
                    median / floor_ms
                );
            }
        }
        let json: Vec<serde_json::Value> = figures
            .iter()
            .map(|f| {
                serde_json::json!({
                    "adapter": ctx.describe(),
                    "shape": f.shape,
                    "what": f.what,
                    "bytes": f.bytes,
                    "reps": args.reps,
                    "min_ms": f.stats.min,
                    "median_ms": f.stats.median,
                    "max_ms": f.stats.max,
                    "gbps": f.gbps(),
                })
            })
            .collect();
        let mut bytes = serde_json::to_vec_pretty(&json).unwrap_or_default();
        bytes.push(b'\n');
        outputs.set_bytes("--json", bytes);
        outputs.write()
    }

    /// Times of `reps` host copies of `bytes` bytes, in ms (after one untimed copy).
    fn memcpy(bytes: u64, reps: usize) -> Vec<f64> {
        let src = vec![1u8; bytes as usize];
        let mut dst = vec![0u8; bytes as usize];
        dst.copy_from_slice(&src);
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                dst.copy_from_slice(black_box(&src));
                black_box(&mut dst);
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect()
    }

    /// Times of `reps` uploads and of `reps` readbacks of `bytes` bytes, in ms, each after
    /// one untimed run, as the host path moves its chunks (pool.rs).
    fn transfers(ctx: &Context, bytes: u64, reps: usize) -> Result<(Vec<f64>, Vec<f64>), String> {
        use wgpu::BufferUsages as U;
        let device = ctx.device();
        let buffer = |label, usage, mapped_at_creation| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes,
                usage,
                mapped_at_creation,
            })
        };
        let upload = buffer("upload", U::MAP_WRITE | U::COPY_SRC, true);
        let storage = buffer("storage", U::STORAGE | U::COPY_SRC | U::COPY_DST, false);
        let readback = buffer("readback", U::MAP_READ | U::COPY_DST, false);
        let data: Vec<u8> = (0..bytes).map(|i| i as u8).collect();
        let mut back = vec![0u8; bytes as usize];
        let wait = || {
            device
                .poll(wgpu::PollType::Wait {
                    submission_index: None,
                    timeout: Some(WAIT_TIMEOUT),
                })
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        let map = |buffer: &wgpu::Buffer, mode| -> Result<(), String> {
            let done = std::sync::Arc::new(std::sync::Mutex::new(None));
            let slot = std::sync::Arc::clone(&done);
            buffer.map_async(mode, .., move |r| {
                if let Ok(mut s) = slot.lock() {
                    *s = Some(r);
                }
            });
            wait()?;
            let result = done.lock().map_err(|e| e.to_string())?.take();
            match result {
                Some(Ok(())) => Ok(()),
                Some(Err(e)) => Err(format!("mapping a staging buffer: {e}")),
                None => Err("a staging buffer was never mapped".into()),
            }
        };
        let mut up_times = Vec::new();
        for rep in 0..=reps {
            let t = Instant::now();
            if rep > 0 {
                map(&upload, wgpu::MapMode::Write)?;
            }
            upload
                .get_mapped_range_mut(..)
                .map_err(|e| e.to_string())?
                .copy_from_slice(&data);
            upload.unmap();
            let mut encoder = device.create_command_encoder(&Default::default());
            encoder.copy_buffer_to_buffer(&upload, 0, &storage, 0, bytes);
            ctx.queue().submit([encoder.finish()]);
            wait()?;
            if rep > 0 {
                up_times.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        let mut down_times = Vec::new();
        for rep in 0..=reps {
            let t = Instant::now();
            let mut encoder = device.create_command_encoder(&Default::default());
            encoder.copy_buffer_to_buffer(&storage, 0, &readback, 0, bytes);
            ctx.queue().submit([encoder.finish()]);
            map(&readback, wgpu::MapMode::Read)?;
            back.copy_from_slice(&readback.get_mapped_range(..).map_err(|e| e.to_string())?);
            readback.unmap();
            if rep > 0 {
                down_times.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        if back != data {
            return Err("the readback differs from the upload".into());
        }
        Ok((up_times, down_times))
    }

    /// Times of `reps` calls of `Context::cross_entropy`, in ms (after one untimed call).
    fn host_api(
        ctx: &Context,
        logits: &[f32],
        labels: &[i64],
        rows: usize,
        cols: usize,
        reps: usize,
    ) -> Result<Vec<f64>, String> {
        let options = CrossEntropyOptions::default();
        let mut times = Vec::new();
        for rep in 0..=reps {
            let t = Instant::now();
            let out = ctx
                .cross_entropy(logits, labels, rows, cols, &options)
                .map_err(|e| e.to_string())?;
            black_box(&out);
            if rep > 0 {
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        Ok(times)
    }
}
