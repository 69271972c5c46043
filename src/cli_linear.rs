//! `ml-softmax linear-xent`: the fused linear + cross-entropy of .npy hidden states and a
//! classifier (`Context::linear_cross_entropy`), never holding the [rows, vocab] logits.
//! Reading and option checks reuse main.rs's `xent` helpers; outputs go through
//! `cli_outputs` (all written, or none changed).

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use ml_softmax::npy::NpyData;
use ml_softmax::{CrossEntropyOptions, LinearCrossEntropy, Matrix, Precision, Reduction};

use super::{GpuArgs, ReductionArg, read_labels, read_npy, read_vector};
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
    /// How row losses are combined.
    #[arg(long, value_enum, default_value = "mean")]
    reduction: ReductionArg,
    /// Rows with this label are ignored.
    #[arg(long, default_value_t = -100, allow_hyphen_values = true)]
    ignore_index: i64,
    /// Label smoothing in [0, 1].
    #[arg(long, default_value_t = 0.0)]
    label_smoothing: f32,
    /// Class weights [vocab] (float32, float64 or float16).
    #[arg(long)]
    weight: Option<PathBuf>,
    /// z-loss scale: adds S * lse^2 per row.
    #[arg(long, default_value_t = 0.0)]
    z_loss: f32,
    /// Logit soft-capping C (0 = off): uses C * tanh(z / C).
    #[arg(long, default_value_t = 0.0)]
    softcap: f32,
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
    let weight = match &args.weight {
        Some(p) => Some(read_vector(p, vocab, "weight")?),
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
