//! `ml-softmax`: the command line. `ml-softmax --help` lists the subcommands.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ml_softmax::npy::{self, NpyData};
use ml_softmax::{
    BackendChoice, Context, ContextOptions, CrossEntropyOptions, Precision, Reduction, Strategy,
    Targets, reference,
};

mod cli_bench;
use cli_bench as bench;

#[derive(Parser)]
#[command(
    name = "ml-softmax",
    version,
    about = "Softmax, cross-entropy loss and gradient on any GPU through wgpu"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The worked example, then a large random batch on the GPU checked against the CPU.
    Demo {
        #[command(flatten)]
        gpu: GpuArgs,
        /// Rows of the random batch.
        #[arg(long, default_value_t = 4096)]
        rows: usize,
        /// Columns (classes) of the random batch.
        #[arg(long, default_value_t = 32000)]
        cols: usize,
    },
    /// Lists the adapters wgpu sees, with their key limits and features.
    Adapters {
        /// Only this backend.
        #[arg(long, default_value = "auto")]
        backend: String,
    },
    /// Cross-entropy loss and gradient of .npy logits and labels (PyTorch's semantics).
    Xent(XentArgs),
    /// Softmax (or log-softmax) of each row of a .npy array.
    Softmax {
        #[command(flatten)]
        gpu: GpuArgs,
        /// float32 logits [rows, cols].
        #[arg(long)]
        logits: PathBuf,
        /// Output .npy, float32 [rows, cols].
        #[arg(long)]
        out: PathBuf,
        /// Write log-softmax instead.
        #[arg(long)]
        log: bool,
    },
    /// Times every strategy and a copy kernel over a matrix of shapes.
    Bench(bench::BenchArgs),
}

/// Adapter selection shared by the subcommands that run on the GPU.
#[derive(Args, Clone)]
pub struct GpuArgs {
    /// vulkan, metal, dx12, gl or auto (auto honours WGPU_BACKEND).
    #[arg(long, default_value = "auto")]
    backend: String,
    /// A substring of the adapter name (default: WGPU_ADAPTER_NAME, else the best adapter).
    #[arg(long)]
    adapter: Option<String>,
}

impl GpuArgs {
    /// Builds the context these flags ask for.
    pub fn context(&self) -> Result<Context, String> {
        self.context_with(None)
    }

    /// [`GpuArgs::context`] with `ContextOptions::software_io` set.
    pub fn context_with(&self, software_io: Option<bool>) -> Result<Context, String> {
        let backend: BackendChoice = self.backend.parse().map_err(|e| format!("{e}"))?;
        let ctx = Context::with_options(&ContextOptions {
            backend,
            adapter_name: self.adapter.clone(),
            software_io,
            ..Default::default()
        })
        .map_err(|e| e.to_string())?;
        Ok(ctx)
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum ReductionArg {
    Mean,
    Sum,
    None,
}

#[derive(Args)]
struct XentArgs {
    #[command(flatten)]
    gpu: GpuArgs,
    /// float32 logits [rows, cols].
    #[arg(long)]
    logits: PathBuf,
    /// int64 or int32 class indices [rows] (or give --targets).
    #[arg(long, required_unless_present = "targets", conflicts_with = "targets")]
    labels: Option<PathBuf>,
    /// float32 probability targets [rows, cols], in place of --labels.
    #[arg(long)]
    targets: Option<PathBuf>,
    /// Output: the loss (0-d for mean/sum, [rows] for none), float32.
    #[arg(long)]
    loss_out: PathBuf,
    /// Output: the gradient [rows, cols], float32 (for none: of the summed row losses).
    #[arg(long)]
    grad_out: PathBuf,
    /// Output (optional): per-row log-sum-exp [rows].
    #[arg(long)]
    lse_out: Option<PathBuf>,
    /// Output (optional): per-row loss [rows], beside a reduced loss.
    #[arg(long)]
    row_loss_out: Option<PathBuf>,
    /// Output (optional): softmax probabilities [rows, cols] (of the soft-capped logits).
    #[arg(long)]
    probs_out: Option<PathBuf>,
    /// Output (optional): log-softmax [rows, cols] (of the soft-capped logits).
    #[arg(long)]
    log_probs_out: Option<PathBuf>,
    /// How row losses are combined.
    #[arg(long, value_enum, default_value = "mean")]
    reduction: ReductionArg,
    /// Rows with this label are ignored.
    #[arg(long, default_value_t = -100, allow_hyphen_values = true)]
    ignore_index: i64,
    /// Label smoothing in [0, 1].
    #[arg(long, default_value_t = 0.0)]
    label_smoothing: f32,
    /// float32 class weights [cols].
    #[arg(long)]
    weight: Option<PathBuf>,
    /// z-loss scale: adds S * lse^2 per row.
    #[arg(long, default_value_t = 0.0)]
    z_loss: f32,
    /// Logit soft-capping C (0 = off): uses C * tanh(z / C).
    #[arg(long, default_value_t = 0.0)]
    softcap: f32,
    /// Reduction strategy: auto, subgroup, wgN (N lanes per row, 1..1024), cachedN or splitN (N = 32..1024).
    #[arg(long, default_value = "auto")]
    strategy: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo { gpu, rows, cols } => demo(&gpu, rows, cols),
        Command::Adapters { backend } => adapters(&backend),
        Command::Xent(args) => xent(&args),
        Command::Softmax {
            gpu,
            logits,
            out,
            log,
        } => softmax(&gpu, &logits, &out, log),
        Command::Bench(args) => bench::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn demo(gpu: &GpuArgs, rows: usize, cols: usize) -> Result<(), String> {
    let ctx = gpu.context()?;
    println!("adapter: {}", ctx.describe());
    let err = |e: ml_softmax::Error| e.to_string();

    println!("\n1. The worked example: z = [1, 2, 3], true class index 1");
    let z = [1.0f32, 2.0, 3.0];
    let p = ctx.softmax(&z, 1, 3).map_err(err)?;
    let out = ctx
        .cross_entropy(&z, &[1], 1, 3, &CrossEntropyOptions::default())
        .map_err(err)?;
    println!(
        "   p     = [{:.3}, {:.3}, {:.3}]   (expected [0.090, 0.245, 0.665])",
        p[0], p[1], p[2]
    );
    println!(
        "   L     = {:.4}                  (expected 1.4076)",
        out.loss
    );
    let g = &out.grad;
    println!(
        "   dL/dz = [{:.3}, {:.3}, {:.3}]  (expected [0.090, -0.755, 0.665])",
        g[0], g[1], g[2]
    );

    println!("\n2. A random batch of {rows} x {cols} logits, mean cross-entropy");
    let n = rows
        .checked_mul(cols)
        .ok_or_else(|| format!("{rows} x {cols} is too large"))?;
    let mut state = 0x2545_F491_4F6C_DD1Du64 ^ (rows as u64) << 20 ^ cols as u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let logits: Vec<f32> = (0..n)
        .map(|_| ((next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 8.0)
        .collect();
    let labels: Vec<i64> = (0..rows)
        .map(|_| (next() % cols.max(1) as u64) as i64)
        .collect();
    let options = CrossEntropyOptions::default();
    let t = Instant::now();
    ctx.cross_entropy(&logits, &labels, rows, cols, &options)
        .map_err(err)?;
    let first = t.elapsed();
    let t = Instant::now();
    let gpu_out = ctx
        .cross_entropy(&logits, &labels, rows, cols, &options)
        .map_err(err)?;
    let warm = t.elapsed();
    let t = Instant::now();
    let cpu = reference::cross_entropy(&logits, &labels, rows, cols, &options).map_err(err)?;
    let cpu_time = t.elapsed();
    let max_grad_err = gpu_out
        .grad
        .iter()
        .zip(&cpu.grad)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    let loss_err = (gpu_out.loss - cpu.loss).abs() / cpu.loss.abs().max(1e-30);
    println!(
        "   GPU loss {:.6}, CPU f64 reference loss {:.6}",
        gpu_out.loss, cpu.loss
    );
    println!("   relative loss error {loss_err:.2e}, max |grad error| {max_grad_err:.2e}");
    println!(
        "   GPU time: {:.1} ms (first call, with shader compilation: {:.1} ms), \
         including upload and readback",
        warm.as_secs_f64() * 1e3,
        first.as_secs_f64() * 1e3
    );
    println!(
        "   CPU f64 reference time: {:.1} ms",
        cpu_time.as_secs_f64() * 1e3
    );
    let grad_tol = 1e-6 / rows as f32;
    if loss_err > 1e-4 || max_grad_err > grad_tol {
        return Err(format!(
            "the GPU result does not match the reference (loss {loss_err:.2e}, grad \
             {max_grad_err:.2e} > {grad_tol:.2e})"
        ));
    }
    println!("   matches the reference: yes");
    Ok(())
}

fn adapters(backend: &str) -> Result<(), String> {
    let backend: BackendChoice = backend.parse().map_err(|e| format!("{e}"))?;
    let list = ml_softmax::list_adapters(backend);
    if list.is_empty() {
        return Err(
            "no adapter found; on Linux without a GPU: apt-get install -y mesa-vulkan-drivers \
             libvulkan1"
                .into(),
        );
    }
    for (i, adapter) in list.iter().enumerate() {
        let info = adapter.get_info();
        let limits = adapter.limits();
        let features = adapter.features();
        println!("[{i}] {}", info.name);
        println!(
            "    backend {:?}, type {:?}, driver {} {}",
            info.backend, info.device_type, info.driver, info.driver_info
        );
        println!(
            "    max_storage_buffer_binding_size {}, max_buffer_size {}, \
             max_compute_invocations_per_workgroup {}, max_compute_workgroups_per_dimension {}, \
             max_compute_workgroup_storage_size {}",
            limits.max_storage_buffer_binding_size,
            limits.max_buffer_size,
            limits.max_compute_invocations_per_workgroup,
            limits.max_compute_workgroups_per_dimension,
            limits.max_compute_workgroup_storage_size
        );
        let has = |f| if features.contains(f) { "yes" } else { "no" };
        println!(
            "    SUBGROUP {} (sizes {}..{}), SHADER_F16 {}, TIMESTAMP_QUERY {}",
            has(ml_softmax::wgpu::Features::SUBGROUP),
            info.subgroup_min_size,
            info.subgroup_max_size,
            has(ml_softmax::wgpu::Features::SHADER_F16),
            has(ml_softmax::wgpu::Features::TIMESTAMP_QUERY)
        );
    }
    Ok(())
}

/// Reads a .npy file; every error names the file (I/O errors already do).
fn read_npy(path: &Path) -> Result<npy::NpyArray, String> {
    npy::read(path).map_err(|e| match e {
        npy::NpyError::Io { .. } => e.to_string(),
        _ => format!("{}: {e}", path.display()),
    })
}

/// A float32 `[rows, cols]` array from a .npy file.
fn read_matrix(path: &Path, what: &str) -> Result<(Vec<f32>, usize, usize), String> {
    let array = read_npy(path)?;
    let (rows, cols) = match array.shape[..] {
        [rows, cols] => (rows, cols),
        _ => {
            return Err(format!(
                "{}: {what} must be 2-D [rows, cols], got shape {:?}",
                path.display(),
                array.shape
            ));
        }
    };
    match array.data {
        NpyData::F32(v) => Ok((v, rows, cols)),
        other => Err(format!(
            "{}: {what} must be float32, got {}",
            path.display(),
            other.dtype()
        )),
    }
}

/// Logits as the file holds them: float32, or float16 bits (kept as they are: the GPU reads
/// them and writes a float16 gradient).
enum Logits {
    F32(Vec<f32>),
    F16(Vec<u16>),
}

fn read_logits(path: &Path) -> Result<(Logits, usize, usize), String> {
    let array = read_npy(path)?;
    let (rows, cols) = match array.shape[..] {
        [rows, cols] => (rows, cols),
        _ => {
            return Err(format!(
                "{}: logits must be 2-D [rows, cols], got shape {:?}",
                path.display(),
                array.shape
            ));
        }
    };
    match array.data {
        NpyData::F32(v) => Ok((Logits::F32(v), rows, cols)),
        NpyData::F16(v) => Ok((Logits::F16(v), rows, cols)),
        other => Err(format!(
            "{}: logits must be float32 or float16, got {}",
            path.display(),
            other.dtype()
        )),
    }
}

fn read_labels(path: &Path, rows: usize) -> Result<Vec<i64>, String> {
    let array = read_npy(path)?;
    if array.shape != [rows] {
        return Err(format!(
            "{}: labels must be 1-D [{rows}] to match the logits, got shape {:?}",
            path.display(),
            array.shape
        ));
    }
    match array.data {
        NpyData::I64(v) => Ok(v),
        NpyData::I32(v) => Ok(v.into_iter().map(i64::from).collect()),
        other => Err(format!(
            "{}: labels must be int64 or int32, got {}",
            path.display(),
            other.dtype()
        )),
    }
}

fn read_vector(path: &Path, len: usize, what: &str) -> Result<Vec<f32>, String> {
    let array = read_npy(path)?;
    if array.shape != [len] {
        return Err(format!(
            "{}: {what} must be 1-D [{len}], got shape {:?}",
            path.display(),
            array.shape
        ));
    }
    match array.data {
        NpyData::F32(v) => Ok(v),
        other => Err(format!(
            "{}: {what} must be float32, got {}",
            path.display(),
            other.dtype()
        )),
    }
}

/// The output files of one command, written together: each goes to a temporary file beside
/// its destination, and only when all are written are they renamed into place. A failure
/// removes the temporary files, so no output is half-written and no set is half-updated.
#[derive(Default)]
struct Outputs {
    files: Vec<(PathBuf, Vec<usize>, NpyData)>,
}

impl Outputs {
    /// Fails early, before any GPU work, when a destination's folder does not exist.
    fn check_folders(paths: &[&Path]) -> Result<(), String> {
        for path in paths {
            let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
            if let Some(dir) = parent {
                if !dir.is_dir() {
                    return Err(format!(
                        "{}: cannot write: the folder {} does not exist",
                        path.display(),
                        dir.display()
                    ));
                }
            }
        }
        Ok(())
    }

    fn add(&mut self, path: &Path, shape: &[usize], data: Vec<f32>) {
        self.add_data(path, shape, NpyData::F32(data));
    }

    fn add_data(&mut self, path: &Path, shape: &[usize], data: NpyData) {
        self.files.push((path.to_path_buf(), shape.to_vec(), data));
    }

    fn write(self) -> Result<(), String> {
        let mut staged: Vec<(PathBuf, PathBuf)> = Vec::new();
        let mut result = Ok(());
        for (path, shape, data) in self.files {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            let tmp = path.with_file_name(format!(
                ".{}.part-{}",
                name.unwrap_or_default(),
                std::process::id()
            ));
            if let Err(e) = npy::write(&tmp, &shape, &data) {
                result = Err(format!("{}: {e}", path.display()));
                break;
            }
            staged.push((tmp, path));
        }
        if result.is_ok() {
            for (tmp, path) in &staged {
                if let Err(e) = std::fs::rename(tmp, path) {
                    result = Err(format!("{}: cannot write: {e}", path.display()));
                    break;
                }
            }
        }
        for (tmp, _) in &staged {
            let _ = std::fs::remove_file(tmp);
        }
        result
    }
}

fn xent(args: &XentArgs) -> Result<(), String> {
    let (logits, rows, cols) = read_logits(&args.logits)?;
    let weight = match &args.weight {
        Some(p) => Some(read_vector(p, cols, "weight")?),
        None => None,
    };
    let options = CrossEntropyOptions {
        reduction: match args.reduction {
            ReductionArg::Mean => Reduction::Mean,
            ReductionArg::Sum => Reduction::Sum,
            ReductionArg::None => Reduction::None,
        },
        ignore_index: args.ignore_index,
        label_smoothing: args.label_smoothing,
        weight,
        z_loss: args.z_loss,
        softcap: args.softcap,
    };
    let strategy: Strategy = args.strategy.parse().map_err(|e| format!("{e}"))?;
    // Check everything the library checks before touching the GPU, so bad input fails fast.
    options.validate(cols).map_err(|e| e.to_string())?;
    let (labels, probs) = match (&args.labels, &args.targets) {
        (Some(path), _) => {
            let labels = read_labels(path, rows)?;
            options
                .check_labels(&labels, cols)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            (labels, None)
        }
        (None, Some(path)) => {
            let (t, t_rows, t_cols) = read_matrix(path, "targets")?;
            if (t_rows, t_cols) != (rows, cols) {
                return Err(format!(
                    "{}: targets must have the logits' shape [{rows}, {cols}], got [{t_rows}, \
                     {t_cols}]",
                    path.display()
                ));
            }
            (Vec::new(), Some(t))
        }
        (None, None) => return Err("give --labels or --targets".into()),
    };
    let mut paths = vec![args.loss_out.as_path(), args.grad_out.as_path()];
    for p in [
        &args.lse_out,
        &args.row_loss_out,
        &args.probs_out,
        &args.log_probs_out,
    ] {
        paths.extend(p.as_deref());
    }
    Outputs::check_folders(&paths)?;

    let ctx = args.gpu.context()?;
    let targets = match &probs {
        Some(t) => Targets::Probabilities(t),
        None => Targets::Classes(&labels),
    };
    let mut outputs = Outputs::default();
    let (loss, row_loss, lse) = match &logits {
        Logits::F32(z) => {
            let out = ctx
                .cross_entropy_targets(z, targets, rows, cols, &options, strategy)
                .map_err(|e| e.to_string())?;
            outputs.add(&args.grad_out, &[rows, cols], out.grad);
            (out.loss, out.row_loss, out.lse)
        }
        Logits::F16(z) => {
            let out = ctx
                .cross_entropy_half(z, Precision::F16, targets, rows, cols, &options, strategy)
                .map_err(|e| e.to_string())?;
            outputs.add_data(&args.grad_out, &[rows, cols], NpyData::F16(out.grad));
            (out.loss, out.row_loss, out.lse)
        }
    };
    match options.reduction {
        Reduction::None => outputs.add(&args.loss_out, &[rows], row_loss.clone()),
        _ => outputs.add(&args.loss_out, &[], vec![loss]),
    }
    if let Some(p) = &args.lse_out {
        outputs.add(p, &[rows], lse);
    }
    if let Some(p) = &args.row_loss_out {
        outputs.add(p, &[rows], row_loss);
    }
    // Probabilities are a second output array: a softmax pass over the (capped) logits.
    for (path, log) in [(&args.probs_out, false), (&args.log_probs_out, true)] {
        if let Some(path) = path {
            let data = match &logits {
                Logits::F32(z) => NpyData::F32(
                    ctx.softmax_with(&soft_capped(z, options.softcap), rows, cols, log, strategy)
                        .map_err(|e| e.to_string())?,
                ),
                Logits::F16(_) if options.softcap > 0.0 => {
                    return Err(
                        "--probs-out / --log-probs-out with --softcap need float32 logits".into(),
                    );
                }
                Logits::F16(z) => NpyData::F16(
                    ctx.softmax_half(z, Precision::F16, rows, cols, log, strategy)
                        .map_err(|e| e.to_string())?,
                ),
            };
            outputs.add_data(path, &[rows, cols], data);
        }
    }
    outputs.write()
}

/// The logits as the loss sees them: `c * tanh(z / c)` with soft-capping.
fn soft_capped(logits: &[f32], softcap: f32) -> Vec<f32> {
    if softcap > 0.0 {
        logits
            .iter()
            .map(|z| softcap * (z / softcap).tanh())
            .collect()
    } else {
        logits.to_vec()
    }
}

fn softmax(gpu: &GpuArgs, logits: &Path, out: &Path, log: bool) -> Result<(), String> {
    let (z, rows, cols) = read_logits(logits)?;
    Outputs::check_folders(&[out])?;
    let ctx = gpu.context()?;
    let data = match &z {
        Logits::F32(z) => NpyData::F32(
            ctx.softmax_with(z, rows, cols, log, Strategy::Auto)
                .map_err(|e| e.to_string())?,
        ),
        Logits::F16(z) => NpyData::F16(
            ctx.softmax_half(z, Precision::F16, rows, cols, log, Strategy::Auto)
                .map_err(|e| e.to_string())?,
        ),
    };
    let mut outputs = Outputs::default();
    outputs.add_data(out, &[rows, cols], data);
    outputs.write()
}
