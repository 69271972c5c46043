//! `ml-softmax bench`: every strategy, the automatic choice and a copy kernel, per shape.
//!
//! For each shape the logits, labels and outputs live on the device; one repetition is one
//! submission of the whole device-resident cross-entropy (mean denominator, row kernel, loss
//! sum), timed by GPU timestamps written into the encoder before and after it when the
//! adapter has `TIMESTAMP_QUERY_INSIDE_ENCODERS`, else (or with `--wall`) by host wall time
//! around record + submit + wait. The copy kernel moves the same bytes (reads `rows * cols`
//! elements, writes as many) under the same timer, in the widest access the kernels make (32
//! bytes of 64-bit words on software adapters: `Context::words64`, the fastest copy there;
//! else 16 bytes of 32-bit words), so `copy_ratio = copy time / this time` is the share of the
//! adapter's own speed of light that the kernel reaches. Where the words are 64-bit,
//! `copy-u32` is the copy in 16-byte units of 32-bit words.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use ml_softmax::wgpu;
use ml_softmax::{
    Context, CrossEntropyOptions, DeviceCrossEntropy, DeviceTargets, Precision, Strategy,
};

use crate::GpuArgs;
use crate::cli_outputs::Outputs;

/// The shapes of the matrix: short rows to the longest vocabularies, and a latency case.
const DEFAULT_SHAPES: &str = "16384x128,8192x1000,4096x4096,1024x32000,256x131072,64x262144,8x1000";

#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    gpu: GpuArgs,
    /// Comma-separated ROWSxCOLS shapes.
    #[arg(long, default_value = DEFAULT_SHAPES)]
    shapes: String,
    /// Timed repetitions per kernel and shape (after one warm-up), taken round-robin.
    #[arg(long, default_value_t = 10, value_parser = at_least_one)]
    reps: usize,
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
    /// Storage format of logits and gradient: f32, f16 or bf16 (the copy kernel then moves
    /// the same number of bytes).
    #[arg(long, default_value = "f32")]
    precision: String,
    /// Leave out the io paths of software adapters (64-bit words, f16 converted by bit
    /// operations: `ContextOptions::software_io`), to measure what they buy.
    #[arg(long)]
    no_software_io: bool,
}

/// A count of at least 1.
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// One line of the report.
struct Row {
    strategy: String,
    rows: usize,
    cols: usize,
    /// Bytes read and written: `2 * rows * cols * element size`.
    bytes: u64,
    median_ms: f64,
    gbps: f64,
    copy_ratio: f64,
}

pub fn run(args: &BenchArgs) -> Result<(), String> {
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
    let precision = match args.precision.as_str() {
        "f32" => Precision::F32,
        "f16" => Precision::F16,
        "bf16" => Precision::Bf16,
        other => return Err(format!("unknown precision {other:?}: f32, f16 or bf16")),
    };
    let timer = Timer::new(&ctx, args.wall);
    let adapter = ctx.describe();
    println!("adapter: {adapter}");
    println!("timer: {}", timer.describe());
    println!("precision: {}", args.precision);
    let words = if ctx.words64() { 64 } else { 32 };
    println!(
        "words: kernels and copy move {words}-bit words{}",
        if ctx.words64() {
            " (the copy in 32-byte units; copy-u32: in 16-byte units of 32-bit words)"
        } else {
            " (the copy in 16-byte units)"
        }
    );
    println!(
        "{:>14} {:>10} {:>10} {:>10} {:>9} {:>8}",
        "shape", "strategy", "median ms", "MB moved", "GB/s", "of copy"
    );
    let mut report = Vec::new();
    for &(rows, cols) in &shapes {
        let data = Buffers::new(&ctx, rows, cols, precision);
        let bytes = 2 * (rows * cols) as u64 * precision.bytes();
        // Every kernel of this shape, the copy first. They are timed round-robin (one run of
        // each per round), so a slow spell of the machine hits all of them alike.
        type Record<'a> = Box<dyn Fn(&mut wgpu::CommandEncoder) -> Result<(), String> + 'a>;
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
        let mut kernels: Vec<(String, Record)> = vec![("copy".into(), copy(ctx.words64()))];
        if ctx.words64() {
            kernels.push(("copy-u32".into(), copy(false)));
        }
        for &strategy in &strategies {
            let (ctx, data, options) = (&ctx, &data, &options);
            kernels.push((
                strategy.to_string(),
                Box::new(move |encoder: &mut wgpu::CommandEncoder| {
                    ctx.encode_cross_entropy(encoder, &data.device(), rows, cols, options, strategy)
                        .map_err(|e| e.to_string())
                }),
            ));
        }
        // Warm-up (builds the pipelines); a kernel this adapter cannot run is reported.
        let mut live = Vec::new();
        for (name, record) in kernels {
            match timer.time(&ctx, &record) {
                Ok(_) => live.push((name, record, Vec::with_capacity(args.reps))),
                Err(e) => println!("{:>14} {:>10} skipped: {e}", format!("{rows}x{cols}"), name),
            }
        }
        for _ in 0..args.reps {
            for (_, record, times) in &mut live {
                times.push(timer.time(&ctx, &**record)?);
            }
        }
        let medians: Vec<(String, f64)> = live
            .into_iter()
            .map(|(name, _, mut times)| {
                times.sort_by(f64::total_cmp);
                (name, times[times.len() / 2])
            })
            .collect();
        let copy_ms = medians
            .first()
            .map(|m| m.1)
            .ok_or("the copy kernel did not run")?;
        for (strategy, ms) in medians {
            let gbps = bytes as f64 / (ms * 1e-3) / 1e9;
            println!(
                "{:>14} {:>10} {:>10.3} {:>10.1} {:>9.2} {:>7.0}%",
                format!("{rows}x{cols}"),
                strategy,
                ms,
                bytes as f64 / 1e6,
                gbps,
                100.0 * copy_ms / ms
            );
            report.push(Row {
                strategy,
                rows,
                cols,
                bytes,
                median_ms: ms,
                gbps,
                copy_ratio: copy_ms / ms,
            });
        }
    }
    outputs.set_bytes(
        "--json",
        json_report(&adapter, timer.describe(), &args.precision, words, &report),
    );
    outputs.set_bytes("--plot", svg_plot(&adapter, &report));
    outputs.write()
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

/// IEEE half bits of `v`, for the bench's logits (|v| <= 4): normal halves rounded to
/// nearest, tiny values flushed to zero.
fn f16_bits(v: f32) -> u16 {
    let bits = v.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32 - 127 + 15;
    if exp <= 0 {
        return sign;
    }
    let mantissa = ((bits & 0x7f_ffff) + 0x1000) >> 13; // rounded to 10 bits
    sign | (((exp as u32) << 10) + mantissa) as u16
}

/// bfloat16 bits of `v` (the top half of the f32, rounded to nearest even).
fn bf16_bits(v: f32) -> u16 {
    let bits = v.to_bits();
    ((bits + 0x7fff + ((bits >> 16) & 1)) >> 16) as u16
}

impl Buffers {
    fn new(ctx: &Context, rows: usize, cols: usize, precision: Precision) -> Self {
        use wgpu::util::DeviceExt;
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let logits: Vec<f32> = (0..rows * cols)
            .map(|_| ((next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 8.0)
            .collect();
        let labels: Vec<i32> = (0..rows).map(|_| (next() % cols as u64) as i32).collect();
        let mut bytes: Vec<u8> = match precision {
            Precision::F32 => bytemuck::cast_slice(&logits).to_vec(),
            Precision::F16 => logits
                .iter()
                .flat_map(|&v| f16_bits(v).to_le_bytes())
                .collect(),
            Precision::Bf16 => logits
                .iter()
                .flat_map(|&v| bf16_bits(v).to_le_bytes())
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
        Self {
            logits: init("logits", &bytes, storage),
            labels: init("labels", bytemuck::cast_slice(&labels), storage),
            grad: ctx.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("grad"),
                size: padded as u64,
                usage: storage,
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
            logits: &self.logits,
            precision: self.precision,
            targets: DeviceTargets::Classes(&self.labels),
            grad: Some(&self.grad),
            loss: Some(&self.loss),
            row_loss: None,
            lse: None,
            upstream: None,
        }
    }
}

/// GPU timestamps around the recorded work when the adapter can write them inside an
/// encoder (and `--wall` is not given), host wall time around record + submit + wait
/// otherwise.
struct Timer {
    queries: Option<(wgpu::QuerySet, wgpu::Buffer, wgpu::Buffer, f64)>,
}

impl Timer {
    fn new(ctx: &Context, wall: bool) -> Self {
        let needed =
            wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS;
        let timestamps = !wall && ctx.device().features().contains(needed);
        let queries = timestamps.then(|| {
            let set = ctx.device().create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("bench timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: 2,
            });
            let resolve = ctx.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("timestamps"),
                size: 16,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            let read = ctx.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("timestamps readback"),
                size: 16,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let period = f64::from(ctx.queue().get_timestamp_period());
            (set, resolve, read, period)
        });
        Self { queries }
    }

    fn describe(&self) -> &'static str {
        if self.queries.is_some() {
            "GPU timestamps around each submission's work"
        } else {
            "host wall time around record + submit + wait (--wall, or no timestamp queries)"
        }
    }

    /// One timed run of `record`, in milliseconds.
    fn time(
        &self,
        ctx: &Context,
        record: impl Fn(&mut wgpu::CommandEncoder) -> Result<(), String>,
    ) -> Result<f64, String> {
        let start = Instant::now();
        let mut encoder = ctx
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        if let Some((set, ..)) = &self.queries {
            encoder.write_timestamp(set, 0);
        }
        record(&mut encoder)?;
        if let Some((set, resolve, read, _)) = &self.queries {
            encoder.write_timestamp(set, 1);
            encoder.resolve_query_set(set, 0..2, resolve, 0);
            encoder.copy_buffer_to_buffer(resolve, 0, read, 0, 16);
        }
        let index = ctx.queue().submit([encoder.finish()]);
        ctx.device()
            .poll(wgpu::PollType::Wait {
                submission_index: Some(index),
                timeout: Some(std::time::Duration::from_secs(120)),
            })
            .map_err(|e| e.to_string())?;
        let wall_ms = start.elapsed().as_secs_f64() * 1e3;
        match &self.queries {
            Some((_, _, read, period)) => Ok(read_ticks(ctx, read)? as f64 * period * 1e-6),
            None => Ok(wall_ms),
        }
    }
}

fn read_ticks(ctx: &Context, read: &wgpu::Buffer) -> Result<u64, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    read.map_async(wgpu::MapMode::Read, .., move |r| {
        let _ = tx.send(r);
    });
    ctx.device()
        .poll(wgpu::PollType::wait_indefinitely())
        .map_err(|e| e.to_string())?;
    rx.recv()
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let ticks = {
        let view = read.get_mapped_range(..).map_err(|e| e.to_string())?;
        let t: Vec<u64> = bytemuck::pod_collect_to_vec(&view);
        t[1].saturating_sub(t[0])
    };
    read.unmap();
    Ok(ticks)
}

/// Every figure as a JSON array of records (non-finite figures become `null`).
fn json_report(adapter: &str, timer: &str, precision: &str, words: u32, report: &[Row]) -> Vec<u8> {
    let records: Vec<serde_json::Value> = report
        .iter()
        .map(|r| {
            serde_json::json!({
                "adapter": adapter,
                "timer": timer,
                "strategy": r.strategy,
                "rows": r.rows,
                "cols": r.cols,
                "precision": precision,
                "words": words,
                "median_ms": r.median_ms,
                "bytes": r.bytes,
                "gbps": r.gbps,
                "copy_ratio": r.copy_ratio,
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
