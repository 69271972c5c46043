//! The runnable steps of docs/reductions.md, a guide to GPU reductions: softmax and the
//! cross-entropy gradient from one thread per row to a row split over workgroups.
//!
//! ```text
//! cargo run --release --example reductions -- [--backend vulkan] [--shapes 2048x1000,16x262144]
//!     [--steps 1,2,3,3v,4,5,6] [--reps 5] [--plot reductions.svg] [--wall] [--seed N]
//! ```
//!
//! Each step (examples/reductions/*.wgsl) runs on fresh random data, is checked against the
//! f64 reference (`ml_softmax::reference`), and is timed against the driver's buffer copy
//! (`copy_buffer_to_buffer`) of the same bytes, timed the same way; GB/s counts one read of
//! the logits and one write of the gradient. A step that cannot run at a shape on the adapter
//! says why instead of giving a number.

#[path = "reductions/steps.rs"]
mod steps;

use std::fmt::Write as _;
use std::time::Instant;

use clap::Parser;
use ml_softmax::{BackendChoice, Context, ContextOptions, Strategy};
use steps::{Buffers, Data, Prepared, STEPS};

#[derive(Parser)]
#[command(about = "The steps of docs/reductions.md, checked and timed")]
struct Args {
    /// auto, vulkan, metal, dx12 or gl.
    #[arg(long, default_value = "auto")]
    backend: BackendChoice,
    /// ROWSxCOLS, comma-separated.
    #[arg(
        long,
        default_value = "4096x1000,512x8192,128x32768,32x131072,16x262144"
    )]
    shapes: String,
    /// The steps to run, comma-separated (1, 2, 3, 3v, 4, 5, 6; default: all).
    #[arg(long)]
    steps: Option<String>,
    /// Timed runs per step and shape (the median is shown).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    reps: u32,
    /// Write an SVG plot of GB/s against row length, one line per step.
    #[arg(long)]
    plot: Option<std::path::PathBuf>,
    /// Host wall time even where the adapter has GPU timestamps.
    #[arg(long)]
    wall: bool,
    /// Seed of the random data (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
}

struct Point {
    step: &'static str,
    cols: usize,
    gbps: f64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let shapes = parse_shapes(&args.shapes)?;
    let chosen: Vec<&steps::Step> = match &args.steps {
        None => STEPS.iter().collect(),
        Some(list) => {
            list.split(',')
                .map(|name| {
                    STEPS.iter().find(|s| s.name == name.trim()).ok_or_else(|| {
                        format!("--steps: no step {name:?} (1, 2, 3, 3v, 4, 5 or 6)")
                    })
                })
                .collect::<Result<_, _>>()?
        }
    };
    let ctx = Context::with_options(&ContextOptions {
        backend: args.backend,
        ..Default::default()
    })?;
    let timer = Timer::new(&ctx, args.wall);
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    println!("adapter: {}", ctx.describe());
    println!("timer: {}", timer.describe());
    println!(
        "seed: {seed}  (GB/s: 2 x rows x cols x 4 bytes / time; copy = copy_buffer_to_buffer of those bytes)"
    );
    println!(
        "{:>4} {:<28} {:>10} {:>9} {:>8} {:>8}  check (max error: grad, loss)",
        "step", "", "shape", "ms", "GB/s", "of copy"
    );
    let mut points = Vec::new();
    let mut failed = 0;
    for (i, &(rows, cols)) in shapes.iter().enumerate() {
        let data = Data::random(rows, cols, seed.wrapping_add(i as u64));
        let bufs = Buffers::new(&ctx, &data, steps::SPLIT_CHUNK);
        let shape = format!("{rows}x{cols}");
        // Build and check every step; those that cannot run say why.
        let mut live: Vec<(&steps::Step, Prepared, String, Vec<f64>)> = Vec::new();
        for &step in &chosen {
            let checked = steps::prepare(&ctx, step, &bufs).and_then(|p| {
                let e = steps::check(&ctx, &p, &bufs, &data)?;
                Ok((p, e))
            });
            match checked {
                Ok((p, e)) => {
                    let verdict = if e.ok() { "ok" } else { "WRONG" };
                    if !e.ok() {
                        failed += 1;
                    }
                    let note = format!("{verdict} ({:.1e}, {:.1e})", e.grad, e.loss);
                    live.push((step, p, note, Vec::new()));
                }
                Err(why) => println!(
                    "{:>4} {:<28} {shape:>10} {:>9} {:>8} {:>8}  not run: {why}",
                    step.name, step.title, "-", "-", "-"
                ),
            }
        }
        // Timed round-robin, the copy first in each round, so a slow spell hits all alike.
        let copy = |e: &mut wgpu::CommandEncoder| {
            e.copy_buffer_to_buffer(&bufs.logits, 0, &bufs.grad, 0, bufs.bytes);
            Ok(())
        };
        let mut copy_times: Vec<f64> = Vec::new();
        timer.time(&ctx, copy)?; // warm-up
        for (_, p, ..) in &live {
            timer.time(&ctx, |e| p.record(&ctx, &bufs, e))?;
        }
        for _ in 0..args.reps {
            copy_times.push(timer.time(&ctx, copy)?);
            for (_, p, _, times) in &mut live {
                times.push(timer.time(&ctx, |e| p.record(&ctx, &bufs, e))?);
            }
        }
        let copy_ms = median(&mut copy_times);
        let gbps = |ms: f64| 2.0 * bufs.bytes as f64 / (ms * 1e-3) / 1e9;
        println!(
            "{:>4} {:<28} {shape:>10} {copy_ms:>9.3} {:>8.2} {:>7.0}%",
            "copy",
            "copy_buffer_to_buffer",
            gbps(copy_ms),
            100.0
        );
        points.push(Point {
            step: "copy",
            cols,
            gbps: gbps(copy_ms),
        });
        for (step, _, note, mut times) in live {
            let ms = median(&mut times);
            let title = if step.kind == steps::Kind::Production {
                let chosen = Strategy::Auto.resolve(
                    rows,
                    cols,
                    ctx.subgroup_size(),
                    ctx.adapter_info().device_type,
                );
                format!("production (auto: {chosen})")
            } else {
                step.title.to_string()
            };
            println!(
                "{:>4} {title:<28} {shape:>10} {ms:>9.3} {:>8.2} {:>7.0}%  {note}",
                step.name,
                gbps(ms),
                100.0 * copy_ms / ms
            );
            points.push(Point {
                step: step.name,
                cols,
                gbps: gbps(ms),
            });
        }
    }
    if let Some(path) = &args.plot {
        std::fs::write(path, svg(&ctx.describe(), timer.describe(), &points))?;
        println!("plot: {}", path.display());
    }
    if failed > 0 {
        return Err(format!("{failed} step(s) differ from the f64 reference").into());
    }
    Ok(())
}

fn parse_shapes(text: &str) -> Result<Vec<(usize, usize)>, String> {
    text.split(',')
        .map(|s| {
            let bad = || format!("--shapes: {s:?} is not ROWSxCOLS (e.g. 64x1000)");
            let (r, c) = s.trim().split_once('x').ok_or_else(bad)?;
            let (r, c): (usize, usize) =
                (r.parse().map_err(|_| bad())?, c.parse().map_err(|_| bad())?);
            if r == 0 || c == 0 || r.checked_mul(c).is_none_or(|n| n >= 1 << 29) {
                return Err(format!(
                    "--shapes: {s}: rows and cols at least 1, rows x cols below 2^29"
                ));
            }
            Ok((r, c))
        })
        .collect()
}

fn median(times: &mut [f64]) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// GPU timestamps around the recorded work where the adapter can write them inside an
/// encoder (and `--wall` is not given), else host wall time around record + submit + wait.
struct Timer {
    queries: Option<(wgpu::QuerySet, wgpu::Buffer, wgpu::Buffer, f64)>,
}

impl Timer {
    fn new(ctx: &Context, wall: bool) -> Self {
        let needed =
            wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS;
        let dev = ctx.device();
        let queries = (!wall && dev.features().contains(needed)).then(|| {
            let set = dev.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: 2,
            });
            let buffer = |usage| {
                dev.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("timestamps"),
                    size: 16,
                    usage,
                    mapped_at_creation: false,
                })
            };
            let resolve = buffer(wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC);
            let read = buffer(wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST);
            (
                set,
                resolve,
                read,
                f64::from(ctx.queue().get_timestamp_period()),
            )
        });
        Timer { queries }
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
        record: impl Fn(&mut wgpu::CommandEncoder) -> Result<(), steps::Refusal>,
    ) -> Result<f64, String> {
        let start = Instant::now();
        let dev = ctx.device();
        let mut encoder = dev.create_command_encoder(&Default::default());
        if let Some((set, ..)) = &self.queries {
            encoder.write_timestamp(set, 0);
        }
        record(&mut encoder).map_err(|e| e.to_string())?;
        if let Some((set, resolve, read, _)) = &self.queries {
            encoder.write_timestamp(set, 1);
            encoder.resolve_query_set(set, 0..2, resolve, 0);
            encoder.copy_buffer_to_buffer(resolve, 0, read, 0, 16);
        }
        let index = ctx.queue().submit([encoder.finish()]);
        dev.poll(wgpu::PollType::Wait {
            submission_index: Some(index),
            timeout: Some(std::time::Duration::from_secs(300)),
        })
        .map_err(|e| e.to_string())?;
        let wall_ms = start.elapsed().as_secs_f64() * 1e3;
        let Some((_, _, read, period)) = &self.queries else {
            return Ok(wall_ms);
        };
        let (tx, rx) = std::sync::mpsc::channel();
        read.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        dev.poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| e.to_string())?;
        rx.recv()
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let ticks: Vec<u64> = {
            let view = read.get_mapped_range(..).map_err(|e| e.to_string())?;
            bytemuck::pod_collect_to_vec(&view)
        };
        read.unmap();
        Ok(ticks[1].saturating_sub(ticks[0]) as f64 * period * 1e-6)
    }
}

/// GB/s against row length, one line per step, the copy dashed.
fn svg(adapter: &str, timer: &str, points: &[Point]) -> String {
    let (w, h, m) = (760.0, 460.0, 60.0);
    // Both axes logarithmic: on software adapters the driver's copy (a memcpy) runs 10 to
    // 100 times faster than any kernel, which a linear axis would flatten to the floor.
    let gbps = || points.iter().map(|p| p.gbps).filter(|g| *g > 0.0);
    let g0 = gbps().fold(f64::MAX, f64::min).min(1.0).log10().floor();
    let g1 = gbps().fold(1e-9, f64::max).log10().ceil().max(g0 + 1.0);
    let (lo, hi) = points.iter().fold((f64::MAX, 1.0f64), |(lo, hi), p| {
        (lo.min(p.cols as f64), hi.max(p.cols as f64))
    });
    let (l0, l1) = (lo.log2(), hi.log2().max(lo.log2() + 1.0));
    let x = |c: usize| m + ((c as f64).log2() - l0) / (l1 - l0) * (w - 4.0 * m);
    let y = |g: f64| h - m - (g.max(1e-9).log10() - g0) / (g1 - g0) * (h - 2.0 * m);
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{m}\" y=\"18\">GB/s (read + write, log scale) against cols, per step: {}</text>\n\
         <text x=\"{m}\" y=\"34\" fill=\"#555\">{}</text>\n\
         <line x1=\"{m}\" y1=\"{base}\" x2=\"{right}\" y2=\"{base}\" stroke=\"#888\"/><line x1=\"{m}\" y1=\"{m}\" x2=\"{m}\" y2=\"{base}\" stroke=\"#888\"/>\n",
        escape(adapter),
        escape(timer),
        base = h - m,
        right = w - 3.0 * m,
    );
    for k in g0 as i32..=g1 as i32 {
        let g = 10f64.powi(k);
        let _ = writeln!(s, "<text x=\"8\" y=\"{:.1}\">{g}</text>", y(g) + 4.0);
    }
    let mut cols: Vec<usize> = points.iter().map(|p| p.cols).collect();
    cols.sort_unstable();
    cols.dedup();
    for c in cols {
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{c}</text>",
            x(c),
            h - m + 16.0
        );
    }
    let colors = [
        "#000", "#d62728", "#1f77b4", "#2ca02c", "#17becf", "#ff7f0e", "#9467bd", "#8c564b",
    ];
    let mut names: Vec<&str> = Vec::new();
    for p in points {
        if !names.contains(&p.step) {
            names.push(p.step);
        }
    }
    for (i, name) in names.iter().enumerate() {
        let color = colors[i % colors.len()];
        let pts: Vec<String> = points
            .iter()
            .filter(|p| p.step == *name)
            .map(|p| format!("{:.1},{:.1}", x(p.cols), y(p.gbps)))
            .collect();
        let dash = if *name == "copy" {
            " stroke-dasharray=\"6 3\""
        } else {
            ""
        };
        let _ = writeln!(
            s,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"{dash}/>",
            pts.join(" ")
        );
        for p in &pts {
            let (px, py) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(
                s,
                "<circle cx=\"{px}\" cy=\"{py}\" r=\"3\" fill=\"{color}\"/>"
            );
        }
        let label = if *name == "copy" {
            "copy".to_string()
        } else {
            format!("step {name}")
        };
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"{color}\">{label}</text>",
            w - 2.6 * m,
            m + 16.0 * i as f64
        );
    }
    s.push_str("</svg>\n");
    s
}
