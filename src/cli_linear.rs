//! `ml-softmax linear-xent`: the fused linear + cross-entropy of .npy hidden states and a
//! classifier (`Context::linear_cross_entropy`), never holding the [rows, vocab] logits.
//! Reading and option checks reuse main.rs's `xent` helpers; outputs go through
//! `cli_outputs` (all written, or none changed).

use std::path::PathBuf;
use std::time::Instant;

use crate::npy::NpyData;
use clap::Args;
use ml_softmax::{CrossEntropyOptions, LinearCrossEntropy, Matrix, Precision, Reduction};

use super::{GpuArgs, LossArgs, read_labels, read_npy, read_vector};
use crate::cli_outputs::Outputs;

#[derive(Args)]
#[command(allow_negative_numbers = true)]
pub struct LinearArgs {
    #[command(flatten)]
    gpu: GpuArgs,
    /// Hidden states [rows, dim]: float32, float16 (read as half on the GPU) or float64
    /// (rounded to float32).
    #[arg(long)]
    hidden: PathBuf,
    /// Classifier [vocab, dim] (one row per class, as torch.nn.Linear(dim, vocab).weight):
    /// float32, float16 or float64.
    #[arg(long)]
    classifier: PathBuf,
    /// int64 or int32 class indices [rows].
    #[arg(long)]
    labels: PathBuf,
    /// Bias [vocab] (float32, float64 or float16).
    #[arg(long)]
    bias: Option<PathBuf>,
    /// Output (optional): the loss, float32 (0-d for mean/sum, [rows] for none).
    #[arg(long)]
    loss_out: Option<PathBuf>,
    /// Output (optional): dloss/dhidden [rows, dim], float32.
    #[arg(long)]
    grad_hidden_out: Option<PathBuf>,
    /// Output (optional): dloss/dclassifier [vocab, dim], float32.
    #[arg(long)]
    grad_classifier_out: Option<PathBuf>,
    /// Output (optional, needs --bias): dloss/dbias [vocab], float32.
    #[arg(long, requires = "bias")]
    grad_bias_out: Option<PathBuf>,
    /// Output (optional): per-row log-sum-exp [rows].
    #[arg(long)]
    lse_out: Option<PathBuf>,
    #[command(flatten)]
    loss: LossArgs,
}

/// A float [rows, cols] .npy as the GPU takes it: float16 bits kept, others as f32.
enum Floats {
    F32(Vec<f32>),
    F16(Vec<u16>),
}

impl Floats {
    fn matrix(&self) -> Matrix<'_> {
        match self {
            Floats::F32(v) => Matrix::F32(v),
            Floats::F16(v) => Matrix::Half(v, Precision::F16),
        }
    }
}

fn read_floats(path: &std::path::Path, what: &str) -> Result<(Floats, usize, usize), String> {
    let array = read_npy(path)?;
    let (rows, cols) = super::matrix_shape(path, what, &array.shape)?;
    let data = match array.data {
        NpyData::F16(v) => Floats::F16(v),
        other => Floats::F32(super::floats(path, what, other)?),
    };
    Ok((data, rows, cols))
}

pub fn run(args: &LinearArgs) -> Result<(), String> {
    let started = Instant::now();
    // 1. Read and check everything before touching the GPU.
    let (hidden, rows, dim) = read_floats(&args.hidden, "hidden")?;
    let (classifier, vocab, cdim) = read_floats(&args.classifier, "classifier")?;
    if cdim != dim {
        return Err(format!(
            "{}: the classifier's rows have {cdim} elements, but the hidden states have {dim} \
             (the classifier is [vocab, dim])",
            args.classifier.display()
        ));
    }
    let labels = read_labels(&args.labels, rows)?;
    let bias = match &args.bias {
        Some(p) => Some(read_vector(p, vocab, "bias")?),
        None => None,
    };
    let options = args.loss.options(vocab)?;
    options.validate(vocab).map_err(super::flag_error)?;
    options
        .check_labels(&labels, vocab)
        .map_err(|e| format!("{}: {e}", args.labels.display()))?;
    let mut outputs = Outputs::plan(&[
        ("--loss-out", args.loss_out.as_deref()),
        ("--grad-hidden-out", args.grad_hidden_out.as_deref()),
        ("--grad-classifier-out", args.grad_classifier_out.as_deref()),
        ("--grad-bias-out", args.grad_bias_out.as_deref()),
        ("--lse-out", args.lse_out.as_deref()),
    ])?;

    // 2. The GPU call.
    let ctx = args.gpu.context()?;
    let gpu_started = Instant::now();
    let out = ctx
        .linear_cross_entropy(&LinearCrossEntropy {
            hidden: hidden.matrix(),
            classifier: classifier.matrix(),
            bias: bias.as_deref(),
            labels: &labels,
            rows,
            dim,
            vocab,
            options: &options,
        })
        .map_err(|e| e.to_string())?;
    let gpu_seconds = gpu_started.elapsed().as_secs_f64();
    drop((hidden, classifier));

    // 3. The outputs, all or none.
    match options.reduction {
        Reduction::None => outputs.set("--loss-out", &[rows], NpyData::F32(out.row_loss)),
        _ => outputs.set("--loss-out", &[], NpyData::F32(vec![out.loss])),
    }
    outputs.set(
        "--grad-hidden-out",
        &[rows, dim],
        NpyData::F32(out.grad_hidden),
    );
    outputs.set(
        "--grad-classifier-out",
        &[vocab, dim],
        NpyData::F32(out.grad_classifier),
    );
    if let Some(gb) = out.grad_bias {
        outputs.set("--grad-bias-out", &[vocab], NpyData::F32(gb));
    }
    outputs.set("--lse-out", &[rows], NpyData::F32(out.lse));
    let written: Vec<String> = outputs
        .written()
        .into_iter()
        .map(|(flag, path)| format!("{flag} {}", path.display()))
        .collect();
    outputs.write()?;

    let ignored = labels
        .iter()
        .filter(|&&y| y == options.ignore_index)
        .count();
    println!(
        "loss {} ({rows} rows, {ignored} ignored, dim {dim}, vocab {vocab}); adapter {}",
        out.loss,
        ctx.describe()
    );
    println!(
        "time {:.3} s in all, {gpu_seconds:.3} s in the GPU call",
        started.elapsed().as_secs_f64()
    );
    if written.is_empty() {
        println!("wrote nothing (give --loss-out, --grad-hidden-out, ... to keep results)");
    } else {
        println!("wrote {}", written.join(", "));
    }
    Ok(())
}

/// `ml-softmax bench-linear`: the fused call against a plain matrix product on one adapter.
#[derive(Args)]
pub struct BenchLinearArgs {
    #[command(flatten)]
    gpu: GpuArgs,
    /// Rows (tokens).
    #[arg(long, default_value_t = 1024)]
    rows: usize,
    /// Hidden size.
    #[arg(long, default_value_t = 128)]
    dim: usize,
    /// Vocabulary size.
    #[arg(long, default_value_t = 32768)]
    vocab: usize,
    /// Timed runs of each (after one untimed warm-up that compiles the pipelines).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
}

/// Times, on the same adapter in the same run and on the same device-resident f32 data, for
/// each matrix product the adapter has (`Context::linear_products`: subgroup or tiled, and
/// cooperative matrices where offered): the plain product `hidden @ classifier^T` (2 N d V
/// flops) and the fused forward + backward, counted as four products of 2 N d V because the
/// backward recomputes the logits rather than storing them (the forward's logits, the
/// backward's recomputed logits, d_hidden and d_classifier). Prints the best and median of
/// `repeats` runs each, in seconds and TFLOP/s.
pub fn bench(args: &BenchLinearArgs) -> Result<(), String> {
    let (rows, dim, vocab) = (args.rows, args.dim, args.vocab);
    if rows == 0 || dim == 0 || vocab == 0 || args.repeats == 0 {
        return Err("--rows, --dim, --vocab and --repeats must be at least 1".into());
    }
    let ctx = args.gpu.context()?;
    let err = |e: ml_softmax::Error| e.to_string();
    // Fixed pseudo-random data, logits with a spread of about 2.
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move |scale: f32| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
    };
    let hidden: Vec<f32> = (0..rows * dim).map(|_| next(3.0)).collect();
    let scale = 3.0 / (dim as f32).sqrt();
    let classifier: Vec<f32> = (0..vocab * dim).map(|_| next(scale)).collect();
    let labels: Vec<i64> = (0..rows).map(|r| (r * 7919 % vocab) as i64).collect();
    use ml_softmax::wgpu::BufferUsages as U;
    let upload = |label: &str, data: &[f32]| -> Result<ml_softmax::wgpu::Buffer, String> {
        let b = ctx
            .create_buffer(label, data.len() as u64 * 4, U::STORAGE | U::COPY_DST)
            .map_err(err)?;
        ctx.queue().write_buffer(&b, 0, bytemuck::cast_slice(data));
        Ok(b)
    };
    let h = upload("hidden", &hidden)?;
    let c = upload("classifier", &classifier)?;
    let gh = upload("grad hidden", &vec![0.0; rows * dim])?;
    let gc = upload("grad classifier", &vec![0.0; vocab * dim])?;
    drop((hidden, classifier));
    let bufs = ml_softmax::LinearDeviceBuffers {
        hidden: h.slice(..),
        hidden_precision: Precision::F32,
        classifier: c.slice(..),
        classifier_precision: Precision::F32,
        bias: None,
        grad_hidden: gh.slice(..),
        grad_classifier: gc.slice(..),
        grad_bias: None,
    };
    let options = CrossEntropyOptions::default();
    let shape = (rows, dim, vocab);
    let flops = 2.0 * rows as f64 * dim as f64 * vocab as f64;
    println!("adapter {}", ctx.describe());
    println!(
        "rows {rows}, dim {dim}, vocab {vocab}, f32; best / median of {} runs",
        args.repeats
    );
    println!(
        "the fused call's backward recomputes each block's logits: it runs 4 products of \
         2 N d V flops (forward logits, recomputed logits, d_hidden, d_classifier), counted so"
    );
    for product in ctx.linear_products() {
        let plain = || ctx.linear_bench_matmul(&bufs, shape, product);
        let fused = || {
            let device =
                ctx.linear_cross_entropy_device_using(&bufs, &labels, shape, &options, product);
            device?;
            ctx.wait_idle()
        };
        time_runs(
            &format!("{product:?} plain matmul (1 product)"),
            &plain,
            flops,
            args.repeats,
        )?;
        let name = format!("{product:?} fused linear xent, forward + backward (4 products)");
        time_runs(&name, &fused, 4.0 * flops, args.repeats)?;
    }
    Ok(())
}

/// One warm-up run (pipeline compilation), then `repeats` timed runs of `run`; prints the
/// best and the median in seconds and TFLOP/s.
fn time_runs(
    name: &str,
    run: &dyn Fn() -> ml_softmax::Result<()>,
    flops: f64,
    repeats: usize,
) -> Result<(), String> {
    let err = |e: ml_softmax::Error| e.to_string();
    run().map_err(err)?; // warm-up: pipeline compilation
    let mut seconds: Vec<f64> = (0..repeats)
        .map(|_| {
            let t = Instant::now();
            run().map(|()| t.elapsed().as_secs_f64())
        })
        .collect::<ml_softmax::Result<_>>()
        .map_err(err)?;
    seconds.sort_by(f64::total_cmp);
    let (best, median) = (seconds[0], seconds[seconds.len() / 2]);
    println!(
        "{name}: best {best:.3} s ({:.3e} TFLOP/s), median {median:.3} s ({:.3e} TFLOP/s)",
        flops / best / 1e12,
        flops / median / 1e12
    );
    Ok(())
}
