//! What the GPU tests share: one context per adapter (built once per test binary, so each
//! pipeline is compiled once), fresh random data, and comparison with the f64 reference.
#![allow(dead_code)]

use std::io::Write;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use ml_softmax::{
    BackendChoice, Context, ContextOptions, CrossEntropyOptions, CrossEntropyOutput, Precision,
    Reduction,
};

/// A context on every adapter of the machine that opens a device, with `options`. An adapter
/// that enumerates but cannot open a device (NVIDIA's GL adapter under EGL: "Parent device
/// is lost") is reported on stderr and skipped (`ml_softmax::keep_opened`). Panics, saying
/// why and how to get an adapter, when none opens: a GPU test must never pass without
/// running.
pub fn open_contexts(options: &ContextOptions) -> Vec<Context> {
    let results = Context::each_adapter(BackendChoice::Auto, options);
    let (all, skipped) = ml_softmax::keep_opened(results).unwrap_or_else(|e| {
        panic!(
            "no GPU adapter opened a device: the GPU tests cannot run. {e}. On Debian/Ubuntu \
             install Mesa's software Vulkan driver: `apt-get install -y mesa-vulkan-drivers \
             libvulkan1`"
        )
    });
    // Written to the stderr handle itself, past the test harness's output capture.
    let mut err = std::io::stderr();
    for line in &skipped {
        let _ = writeln!(
            err,
            "GPU tests skip an adapter that opens no device: {line}"
        );
    }
    all
}

/// Every adapter of the machine that opens a device, with output poisoning on (see
/// [`open_contexts`]: the others are reported and skipped; none at all panics).
pub fn contexts() -> &'static [Context] {
    static CONTEXTS: OnceLock<Vec<Context>> = OnceLock::new();
    CONTEXTS.get_or_init(|| {
        // Autotune off: these tests name the strategies they mean, and `Auto` here is the
        // table, on hardware GPUs too (tests/autotune.rs covers the timed choice, which can
        // only pick among the strategies these tests check one by one).
        let options = ContextOptions {
            poison_outputs: true,
            autotune: ml_softmax::Autotune::Off,
            ..Default::default()
        };
        let all = open_contexts(&options);
        // Written to the stderr handle itself, past the test harness's output capture, so
        // every run shows which adapters the GPU tests ran on.
        let mut err = std::io::stderr();
        for ctx in &all {
            let _ = writeln!(
                err,
                "GPU tests run on: {}; {}",
                ctx.describe(),
                subgroups(ctx)
            );
        }
        // CI's runs at each emulated subgroup size name the size they mean to cover: an
        // environment that ignored LP_NATIVE_VECTOR_WIDTH must not pass as that size.
        if let Ok(want) = std::env::var("ML_SOFTMAX_EXPECT_SUBGROUP_SIZE") {
            let want: u32 = want
                .parse()
                .expect("ML_SOFTMAX_EXPECT_SUBGROUP_SIZE: a number");
            assert!(
                all.iter()
                    .any(|c| c.adapter_info().subgroup_max_size == want),
                "ML_SOFTMAX_EXPECT_SUBGROUP_SIZE={want}, but no adapter reports {want}-lane \
                 subgroups (is LP_NATIVE_VECTOR_WIDTH={} set, and lavapipe installed?)",
                32 * want
            );
        }
        all
    })
}

/// The adapter's subgroup size, and whether the subgroup strategy runs at it: what the GPU
/// tests print beside each adapter, so a run says which subgroup size it covered.
pub fn subgroups(ctx: &Context) -> String {
    let info = ctx.adapter_info();
    let reported = if info.subgroup_min_size == info.subgroup_max_size {
        format!("{}", info.subgroup_min_size)
    } else {
        format!("{}..{}", info.subgroup_min_size, info.subgroup_max_size)
    };
    match (ctx.subgroup_size(), ctx.subgroup_refusal()) {
        (Some(size), _) => format!("subgroup size {size} (subgroup strategy runs)"),
        (None, why) => format!(
            "subgroup size {reported} reported, subgroup strategy not run: {}",
            why.unwrap_or("?")
        ),
    }
}

/// A small, fast PRNG (SplitMix64) seeded from the clock, so each run draws fresh data; the
/// seed is printed so a failure can be replayed with `ML_SOFTMAX_SEED=...`.
pub struct Rng(u64);

impl Rng {
    pub fn new(case: &str) -> Self {
        let seed = std::env::var("ML_SOFTMAX_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        eprintln!("{case}: seed {seed}");
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Normal(0, sigma), by Box-Muller.
    pub fn normal(&mut self, sigma: f64) -> f32 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (sigma * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }

    pub fn logits(&mut self, n: usize, sigma: f64) -> Vec<f32> {
        (0..n).map(|_| self.normal(sigma)).collect()
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn labels(&mut self, rows: usize, cols: usize) -> Vec<i64> {
        (0..rows).map(|_| self.below(cols) as i64).collect()
    }
}

/// `a` equals `b` within `atol + rtol * |b|`, NaN equal to NaN; reports the first mismatch.
pub fn assert_close(what: &str, gpu: &[f32], reference: &[f32], atol: f32, rtol: f32) {
    assert_eq!(gpu.len(), reference.len(), "{what}: lengths differ");
    for (i, (&g, &r)) in gpu.iter().zip(reference).enumerate() {
        let ok = if r.is_nan() || g.is_nan() {
            r.is_nan() && g.is_nan()
        } else if r.is_infinite() {
            g == r
        } else {
            approx::relative_eq!(g, r, epsilon = atol, max_relative = rtol)
        };
        assert!(ok, "{what}[{i}]: gpu {g} vs reference {r}");
    }
}

/// Compares a whole cross-entropy output. `grad_scale` is the size of the gradient entries
/// (1 / rows for a mean): the absolute tolerance scales with it.
pub fn assert_output_close(
    what: &str,
    gpu: &CrossEntropyOutput,
    reference: &CrossEntropyOutput,
    grad_scale: f32,
) {
    assert_close(&format!("{what} lse"), &gpu.lse, &reference.lse, 1e-5, 1e-5);
    assert_close(
        &format!("{what} row_loss"),
        &gpu.row_loss,
        &reference.row_loss,
        1e-5,
        1e-5,
    );
    assert_close(
        &format!("{what} loss"),
        &[gpu.loss],
        &[reference.loss],
        1e-6,
        2e-5,
    );
    assert_close(
        &format!("{what} grad"),
        &gpu.grad,
        &reference.grad,
        2e-6 * grad_scale,
        1e-4,
    );
}

// ---- added for tests/properties.rs and tests/soak.rs ----

impl Rng {
    /// A generator with a given seed: the property tests draw the seed, so that a failing
    /// case prints everything needed to replay it.
    pub fn seeded(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
}

/// A mean over nothing (every row ignored, or all target weights 0): loss 0 and a zero
/// gradient, exactly.
pub fn assert_zero_loss_and_grad(what: &str, out: &CrossEntropyOutput) {
    assert_eq!(out.loss, 0.0, "{what}");
    assert!(
        out.grad.iter().all(|&g| g == 0.0),
        "{what}: gradient not zero"
    );
}

/// `gpu[i]` equals `reference[i]` within `tol(i)` (absolute), NaN equal to NaN and an
/// infinity equal only to itself; reports the first mismatch with its tolerance. For the
/// property tests, whose tolerances come from an error model per element.
pub fn assert_within(what: &str, gpu: &[f32], reference: &[f32], tol: impl Fn(usize) -> f64) {
    assert_eq!(gpu.len(), reference.len(), "{what}: lengths differ");
    for (i, (&g, &r)) in gpu.iter().zip(reference).enumerate() {
        let (ok, t) = if r.is_nan() || g.is_nan() {
            (r.is_nan() && g.is_nan(), f64::NAN)
        } else if r.is_infinite() || g.is_infinite() {
            (g == r, 0.0)
        } else {
            let t = tol(i);
            ((f64::from(g) - f64::from(r)).abs() <= t, t)
        };
        assert!(
            ok,
            "{what}[{i}]: gpu {g:e} vs reference {r:e} (|diff| {:e}, tolerance {t:e})",
            (f64::from(g) - f64::from(r)).abs()
        );
    }
}

/// Resident set size of this process in KiB (`VmRSS` of /proc/self/status; Linux only).
pub fn vm_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Peak resident set size of this process in KiB (`VmHWM`; Linux only).
pub fn vm_hwm_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Reads a whole f32 buffer back (after the work that fills it).
pub fn read(ctx: &Context, buffer: &ml_softmax::wgpu::Buffer) -> Vec<f32> {
    use ml_softmax::wgpu;
    let d = ctx.device();
    let staging = d.create_buffer(&wgpu::BufferDescriptor {
        label: Some("readback"),
        size: buffer.size(),
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut encoder = d.create_command_encoder(&Default::default());
    encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, buffer.size());
    ctx.queue().submit([encoder.finish()]);
    staging.map_async(wgpu::MapMode::Read, .., |r| r.unwrap());
    d.poll(wgpu::PollType::wait_indefinitely()).unwrap();
    let v = bytemuck::pod_collect_to_vec(&staging.get_mapped_range(..).unwrap());
    staging.unmap();
    v
}

/// Round-trips f32 through the half format, returning the bits and the exact f32 values.
pub fn to_half(z: &[f32], precision: Precision) -> (Vec<u16>, Vec<f32>) {
    let bits: Vec<u16> = match precision {
        Precision::F16 => z
            .iter()
            .map(|&v| half::f16::from_f32(v).to_bits())
            .collect(),
        Precision::Bf16 => z
            .iter()
            .map(|&v| half::bf16::from_f32(v).to_bits())
            .collect(),
        Precision::F32 => panic!("to_half of f32"),
    };
    let values = from_half(&bits, precision);
    (bits, values)
}

/// The f32 values of half-format bits.
pub fn from_half(bits: &[u16], precision: Precision) -> Vec<f32> {
    bits.iter()
        .map(|&b| match precision {
            Precision::F16 => half::f16::from_bits(b).to_f32(),
            _ => half::bf16::from_bits(b).to_f32(),
        })
        .collect()
}

/// Relative tolerance of a value rounded once to the half format (half an ulp, doubled for
/// the f32 error before the rounding).
pub fn half_rel(precision: Precision) -> f32 {
    match precision {
        Precision::F16 => 1.0 / 1024.0,
        _ => 1.0 / 128.0,
    }
}

/// Contexts on every adapter (outputs poisoned) whose host calls go in chunks of at most
/// `max_chunk_bytes`; says on stderr which adapters the `what` tests run on.
pub fn chunked_contexts(what: &str, max_chunk_bytes: u64) -> Vec<Context> {
    let options = ContextOptions {
        poison_outputs: true,
        max_chunk_bytes: Some(max_chunk_bytes),
        ..Default::default()
    };
    contexts_with(what, &options)
}

/// Contexts on every adapter opened with `options`; says on stderr (past the test harness's
/// output capture) which adapters the `what` tests run on.
pub fn contexts_with(what: &str, options: &ContextOptions) -> Vec<Context> {
    let all = open_contexts(options);
    let mut err = std::io::stderr();
    for ctx in &all {
        let _ = writeln!(err, "{what} tests run on: {}", ctx.describe());
    }
    all
}

/// The two ways a mean's denominator is 0 for `labels` over `cols` classes: every row
/// ignored (no weights), and class weights that are 0 at every row's target.
pub fn zero_denominator_cases(labels: Vec<i64>, cols: usize) -> [(Vec<i64>, Option<Vec<f32>>); 2] {
    let mut weight = vec![1.0f32; cols];
    for &y in &labels {
        weight[y as usize] = 0.0;
    }
    [(vec![-100i64; labels.len()], None), (labels, Some(weight))]
}

/// The softmax of half-precision `bits` (`rows x cols`) with `strategy`, checked against
/// `want`, the reference softmax of the values the GPU reads: `assert_close` at 1e-7
/// absolute and [`half_rel`] relative.
pub fn check_half_softmax(
    ctx: &Context,
    what: &str,
    bits: &[u16],
    precision: Precision,
    (rows, cols): (usize, usize),
    strategy: ml_softmax::Strategy,
    want: &[f32],
) {
    let kind = ml_softmax::SoftmaxKind::Softmax;
    let p = ctx
        .softmax_half(bits, precision, rows, cols, kind, strategy)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let what = format!("{what} softmax");
    assert_close(
        &what,
        &from_half(&p, precision),
        want,
        1e-7,
        half_rel(precision),
    );
}

/// Compares a half-precision cross-entropy output (gradient as f16 / bf16 bits) with the f64
/// reference of the same half values: loss and lse as f32 results, the gradient within the
/// rounding to the half format.
pub fn assert_half_output_close(
    what: &str,
    got: &CrossEntropyOutput<u16>,
    cpu: &CrossEntropyOutput,
    precision: Precision,
) {
    assert_close(
        &format!("{what} loss"),
        &[got.loss],
        &[cpu.loss],
        1e-6,
        2e-5,
    );
    assert_close(&format!("{what} lse"), &got.lse, &cpu.lse, 1e-5, 1e-5);
    let grad = from_half(&got.grad, precision);
    assert_close(
        &format!("{what} grad"),
        &grad,
        &cpu.grad,
        1e-7,
        half_rel(precision),
    );
}

/// The softmax kind of a test's `log` flag.
pub fn softmax_kind(log: bool) -> ml_softmax::SoftmaxKind {
    if log {
        ml_softmax::SoftmaxKind::LogSoftmax
    } else {
        ml_softmax::SoftmaxKind::Softmax
    }
}

/// Loss options to test: the defaults, each option alone, two combinations that interact, and
/// all of them at once; `weight` has `cols` random entries.
pub fn option_sets(cols: usize, rng: &mut Rng) -> Vec<(&'static str, CrossEntropyOptions)> {
    let weight: Vec<f32> = (0..cols)
        .map(|_| 0.25 + 2.0 * rng.uniform() as f32)
        .collect();
    let base = CrossEntropyOptions::default;
    vec![
        ("defaults", base()),
        (
            "ignore_index",
            CrossEntropyOptions {
                ignore_index: 2,
                ..base()
            },
        ),
        (
            "label_smoothing",
            CrossEntropyOptions {
                label_smoothing: 0.1,
                ..base()
            },
        ),
        (
            "weight",
            CrossEntropyOptions {
                weight: Some(weight.clone()),
                ..base()
            },
        ),
        (
            "z_loss",
            CrossEntropyOptions {
                z_loss: 1e-2,
                ..base()
            },
        ),
        (
            "softcap",
            CrossEntropyOptions {
                softcap: 3.0,
                ..base()
            },
        ),
        (
            "weight+smoothing+ignore",
            CrossEntropyOptions {
                weight: Some(weight.clone()),
                label_smoothing: 0.2,
                ignore_index: 2,
                ..base()
            },
        ),
        (
            "softcap+z_loss+ignore",
            CrossEntropyOptions {
                softcap: 2.5,
                z_loss: 1e-3,
                ignore_index: 2,
                ..base()
            },
        ),
        (
            "everything",
            CrossEntropyOptions {
                weight: Some(weight),
                label_smoothing: 0.2,
                ignore_index: 2,
                z_loss: 1e-3,
                softcap: 2.5,
                ..base()
            },
        ),
    ]
}

/// [`option_sets`] without the sets named in `leave_out`.
pub fn option_sets_but(
    cols: usize,
    rng: &mut Rng,
    leave_out: &[&str],
) -> Vec<(&'static str, CrossEntropyOptions)> {
    let mut sets = option_sets(cols, rng);
    sets.retain(|(name, _)| !leave_out.contains(name));
    sets
}

/// `options` with each reduction in turn (mean, sum, none).
pub fn each_reduction(options: &CrossEntropyOptions) -> Vec<(Reduction, CrossEntropyOptions)> {
    [Reduction::Mean, Reduction::Sum, Reduction::None]
        .into_iter()
        .map(|reduction| {
            let options = CrossEntropyOptions {
                reduction,
                ..options.clone()
            };
            (reduction, options)
        })
        .collect()
}
