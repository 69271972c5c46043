//! Integration tests of the `ml-softmax` binary: `xent`, `softmax`, `adapters` and `bench` end to end,
//! through real `.npy` files, checked against the f64 CPU reference; and bad input, which must
//! give exit code 1, one `error:` line on stderr that names the problem, no panic and no output
//! file.
//!
//! Kept fast on purpose: tiny shapes, and only eight invocations that run a kernel (each one
//! builds a device and compiles its pipelines). Most bad-input cases fail before the GPU is
//! touched.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

// The command line's .npy reader and writer (src/npy.rs, not part of the library).
#[allow(dead_code)]
#[path = "../src/npy.rs"]
mod npy;
use approx::relative_eq;
use ml_softmax::{CrossEntropyOptions, Reduction, reference};
use npy::{NpyArray, NpyData};

const ROWS: usize = 5;
const COLS: usize = 7;

/// A fresh, empty directory for one test, removed again when the test passes.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("ml-softmax-cli-{}-{test}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Writes an array with the library's writer and returns its path.
    fn npy(&self, name: &str, shape: &[usize], data: NpyData) -> PathBuf {
        let path = self.path(name);
        npy::write(&path, shape, &data).unwrap();
        path
    }

    fn bytes(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.path(name);
        fs::write(&path, bytes).unwrap();
        path
    }

    /// The names in the directory, sorted.
    fn entries(&self) -> Vec<String> {
        entries(&self.0)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Fixed logits in about [-4, 4] (the library's seeded sample, so the data never changes).
fn logits(n: usize) -> Vec<f32> {
    ml_softmax::reference::sample_batch(1, n, 0x9E37_79B9_7F4A_7C15).0
}

const LABELS: [i64; ROWS] = [3, 0, 6, 2, 5];

/// Runs the binary with these arguments.
fn run(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ml-softmax"))
        .args(args.iter().map(|a| a.as_ref()))
        .output()
        .expect("cannot start the ml-softmax binary")
}

fn describe(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "expected success, got {}",
        describe(out)
    );
}

/// Exit code 1, exactly one stderr line, starting with `error:`, containing every phrase,
/// and no panic.
fn assert_error(out: &Output, phrases: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", describe(out));
    assert!(!stderr.contains("panicked"), "{}", describe(out));
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one stderr line: {}",
        describe(out)
    );
    assert!(lines[0].starts_with("error: "), "{}", describe(out));
    for phrase in phrases {
        assert!(
            lines[0].contains(phrase),
            "the error does not say {phrase:?}: {}",
            lines[0]
        );
    }
}

/// Reads a float32 output and checks its shape.
fn read_f32(path: &Path, shape: &[usize]) -> Vec<f32> {
    let NpyArray { shape: got, data } = npy::read(path).unwrap();
    assert_eq!(got, shape, "shape of {}", path.display());
    match data {
        NpyData::F32(v) => v,
        other => panic!("{} is {}, not float32", path.display(), other.dtype()),
    }
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            relative_eq!(g, w, epsilon = 1e-6, max_relative = 1e-5),
            "{what}[{i}]: {g} vs reference {w}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Runs that succeed (each runs a kernel).

#[test]
fn xent_mean_int64_with_lse_and_row_loss() {
    let dir = Scratch::new("mean");
    let z = logits(ROWS * COLS);
    let l = dir.npy("logits.npy", &[ROWS, COLS], NpyData::F32(z.clone()));
    let y = dir.npy("labels.npy", &[ROWS], NpyData::I64(LABELS.to_vec()));
    let (loss, grad, lse, row) = (
        dir.path("loss.npy"),
        dir.path("grad.npy"),
        dir.path("lse.npy"),
        dir.path("row.npy"),
    );
    let out = run(&[
        &"xent",
        &"--backend",
        &"vulkan",
        &"--logits",
        &l,
        &"--labels",
        &y,
        &"--loss-out",
        &loss,
        &"--grad-out",
        &grad,
        &"--lse-out",
        &lse,
        &"--row-loss-out",
        &row,
    ]);
    assert_success(&out);
    let options = CrossEntropyOptions::default();
    let want = reference::cross_entropy(&z, &LABELS, ROWS, COLS, &options).unwrap();
    assert_close("loss", &read_f32(&loss, &[]), &[want.loss]);
    assert_close("grad", &read_f32(&grad, &[ROWS, COLS]), &want.grad);
    assert_close("lse", &read_f32(&lse, &[ROWS]), &want.lse);
    assert_close("row loss", &read_f32(&row, &[ROWS]), &want.row_loss);
    assert_eq!(
        dir.entries(),
        [
            "grad.npy",
            "labels.npy",
            "logits.npy",
            "loss.npy",
            "lse.npy",
            "row.npy"
        ]
    );
}

#[test]
fn xent_sum_int32_labels() {
    let dir = Scratch::new("sum");
    let z = logits(ROWS * COLS);
    let l = dir.npy("logits.npy", &[ROWS, COLS], NpyData::F32(z.clone()));
    let labels32: Vec<i32> = LABELS.iter().map(|&v| v as i32).collect();
    let y = dir.npy("labels.npy", &[ROWS], NpyData::I32(labels32));
    let (loss, grad) = (dir.path("loss.npy"), dir.path("grad.npy"));
    let out = run(&[
        &"xent",
        &"--backend",
        &"vulkan",
        &"--reduction",
        &"sum",
        &"--logits",
        &l,
        &"--labels",
        &y,
        &"--loss-out",
        &loss,
        &"--grad-out",
        &grad,
    ]);
    assert_success(&out);
    let options = CrossEntropyOptions {
        reduction: Reduction::Sum,
        ..Default::default()
    };
    let want = reference::cross_entropy(&z, &LABELS, ROWS, COLS, &options).unwrap();
    assert_close("loss", &read_f32(&loss, &[]), &[want.loss]);
    assert_close("grad", &read_f32(&grad, &[ROWS, COLS]), &want.grad);
}

/// Reduction none with class weights, label smoothing and a non-default ignore index (one row
/// ignored), plus the two optional outputs.
#[test]
fn xent_none_with_weight_smoothing_ignore_index() {
    let dir = Scratch::new("none");
    let z = logits(ROWS * COLS);
    let labels = [3i64, -1, 6, 2, 0];
    let weight = vec![0.5f32, 1.0, 2.0, 0.25, 1.5, 1.0, 3.0];
    let l = dir.npy("logits.npy", &[ROWS, COLS], NpyData::F32(z.clone()));
    let y = dir.npy("labels.npy", &[ROWS], NpyData::I64(labels.to_vec()));
    let w = dir.npy("weight.npy", &[COLS], NpyData::F32(weight.clone()));
    let (loss, grad, lse, row) = (
        dir.path("loss.npy"),
        dir.path("grad.npy"),
        dir.path("lse.npy"),
        dir.path("row.npy"),
    );
    let out = run(&[
        &"xent",
        &"--backend",
        &"vulkan",
        &"--reduction",
        &"none",
        &"--weight",
        &w,
        &"--label-smoothing",
        &"0.1",
        &"--ignore-index",
        &"-1",
        &"--logits",
        &l,
        &"--labels",
        &y,
        &"--loss-out",
        &loss,
        &"--grad-out",
        &grad,
        &"--lse-out",
        &lse,
        &"--row-loss-out",
        &row,
    ]);
    assert_success(&out);
    let options = CrossEntropyOptions {
        reduction: Reduction::None,
        ignore_index: -1,
        label_smoothing: 0.1,
        weight: Some(weight),
        ..Default::default()
    };
    let want = reference::cross_entropy(&z, &labels, ROWS, COLS, &options).unwrap();
    let got_loss = read_f32(&loss, &[ROWS]);
    assert_close("loss", &got_loss, &want.row_loss);
    let got_grad = read_f32(&grad, &[ROWS, COLS]);
    assert_close("grad", &got_grad, &want.grad);
    assert_close("lse", &read_f32(&lse, &[ROWS]), &want.lse);
    assert_close("row loss", &read_f32(&row, &[ROWS]), &want.row_loss);
    // The ignored row: zero loss and an all-zero gradient row.
    assert_eq!(got_loss[1], 0.0);
    assert!(got_grad[COLS..2 * COLS].iter().all(|&g| g == 0.0));
}

#[test]
fn softmax_and_log_softmax() {
    let dir = Scratch::new("softmax");
    let z = logits(ROWS * COLS);
    let l = dir.npy("logits.npy", &[ROWS, COLS], NpyData::F32(z.clone()));
    let p = dir.path("p.npy");
    let out = run(&[
        &"softmax",
        &"--backend",
        &"vulkan",
        &"--logits",
        &l,
        &"--out",
        &p,
    ]);
    assert_success(&out);
    let want = reference::softmax(&z, ROWS, COLS).unwrap();
    assert_close("softmax", &read_f32(&p, &[ROWS, COLS]), &want);

    let logp = dir.path("logp.npy");
    let out = run(&[
        &"softmax",
        &"--backend",
        &"vulkan",
        &"--log",
        &"--logits",
        &l,
        &"--out",
        &logp,
    ]);
    assert_success(&out);
    let want = reference::log_softmax(&z, ROWS, COLS).unwrap();
    assert_close("log_softmax", &read_f32(&logp, &[ROWS, COLS]), &want);
}

#[test]
fn adapters_lists_at_least_one() {
    let out = run(&[&"adapters"]);
    assert_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.lines().any(|line| line.starts_with("[0] ")),
        "no adapter line: {}",
        describe(&out)
    );
}

// ---------------------------------------------------------------------------------------------
// Bad input: exit code 1, one `error:` line naming the problem, nothing written.

/// Valid inputs for `xent` in `dir`, with the default labels.
fn valid_inputs(dir: &Scratch) -> (PathBuf, PathBuf) {
    (
        dir.npy(
            "logits.npy",
            &[ROWS, COLS],
            NpyData::F32(logits(ROWS * COLS)),
        ),
        dir.npy("labels.npy", &[ROWS], NpyData::I64(LABELS.to_vec())),
    )
}

/// Runs `xent` with outputs in `dir` and extra flags; checks the error and that `dir` holds
/// exactly the files it held before.
fn xent_fails(dir: &Scratch, logits: &Path, labels: &Path, extra: &[&str], phrases: &[&str]) {
    let before = dir.entries();
    let (loss, grad) = (dir.path("loss.npy"), dir.path("grad.npy"));
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
        &"xent",
        &"--logits",
        &logits,
        &"--labels",
        &labels,
        &"--loss-out",
        &loss,
        &"--grad-out",
        &grad,
    ];
    for e in extra {
        args.push(e);
    }
    let out = run(&args);
    assert_error(&out, phrases);
    assert_eq!(dir.entries(), before, "files left behind");
}

/// A version 1.0 `.npy` file with this header dict, padded as `np.save` pads it.
fn raw_npy(dict: &str, data: &[u8]) -> Vec<u8> {
    let mut header = dict.to_string();
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

#[test]
fn error_missing_logits_file() {
    let dir = Scratch::new("missing");
    let (_, labels) = valid_inputs(&dir);
    let missing = dir.path("no-such-logits.npy");
    xent_fails(
        &dir,
        &missing,
        &labels,
        &[],
        &["no-such-logits.npy", "cannot read", "No such file"],
    );
}

#[test]
fn error_truncated_npy() {
    let dir = Scratch::new("truncated");
    let (logits, labels) = valid_inputs(&dir);
    let bytes = fs::read(&logits).unwrap();
    let cut = dir.bytes("cut.npy", &bytes[..bytes.len() - 13]);
    xent_fails(&dir, &cut, &labels, &[], &["cut.npy", "truncated"]);
    // Cut inside the header.
    let cut = dir.bytes("cut-header.npy", &bytes[..40]);
    xent_fails(&dir, &cut, &labels, &[], &["cut-header.npy", "truncated"]);
}

/// float64 logits (numpy's default) are computed in float32 and give a float32 gradient; the
/// summary says so.
#[test]
fn xent_float64_logits_are_computed_in_float32() {
    let dir = Scratch::new("f64");
    let (_, labels) = valid_inputs(&dir);
    let z64: Vec<f64> = logits(ROWS * COLS)
        .iter()
        .map(|&v| f64::from(v) + 1e-9)
        .collect();
    let l = dir.npy("f64.npy", &[ROWS, COLS], NpyData::F64(z64.clone()));
    let grad = dir.path("grad.npy");
    let out = run(&[
        &"xent",
        &"--logits",
        &l,
        &"--labels",
        &labels,
        &"--grad-out",
        &grad,
        &"--json",
    ]);
    assert_success(&out);
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["logits_dtype"], "float64", "{summary}");
    assert_eq!(summary["grad_dtype"], "float32", "{summary}");
    let z: Vec<f32> = z64.iter().map(|&v| v as f32).collect();
    let want = reference::cross_entropy(&z, &LABELS, ROWS, COLS, &Default::default()).unwrap();
    assert_close("grad", &read_f32(&grad, &[ROWS, COLS]), &want.grad);
    assert_close(
        "loss",
        &[summary["loss"].as_f64().unwrap() as f32],
        &[want.loss],
    );
}

#[test]
fn error_logits_wrong_rank() {
    let dir = Scratch::new("rank");
    let (_, labels) = valid_inputs(&dir);
    let flat = dir.npy("flat.npy", &[COLS], NpyData::F32(logits(COLS)));
    xent_fails(&dir, &flat, &labels, &[], &["flat.npy", "2-D", "[7]"]);
}

#[test]
fn error_fortran_order() {
    let dir = Scratch::new("fortran");
    let (_, labels) = valid_inputs(&dir);
    let data: Vec<u8> = logits(ROWS * COLS)
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let fortran = dir.bytes(
        "fortran.npy",
        &raw_npy(
            "{'descr': '<f4', 'fortran_order': True, 'shape': (5, 7), }",
            &data,
        ),
    );
    xent_fails(
        &dir,
        &fortran,
        &labels,
        &[],
        &["fortran.npy", "Fortran-order"],
    );
}

#[test]
fn error_labels_length_mismatch() {
    let dir = Scratch::new("labels-len");
    let (logits, _) = valid_inputs(&dir);
    let short = dir.npy("short.npy", &[ROWS - 1], NpyData::I64(vec![0; ROWS - 1]));
    xent_fails(
        &dir,
        &logits,
        &short,
        &[],
        &["short.npy", "labels", "[5]", "[4]"],
    );
}

#[test]
fn error_labels_float() {
    let dir = Scratch::new("labels-float");
    let (logits, _) = valid_inputs(&dir);
    let float = dir.npy("float.npy", &[ROWS], NpyData::F32(vec![0.0; ROWS]));
    xent_fails(
        &dir,
        &logits,
        &float,
        &[],
        &["float.npy", "int64 or int32", "float32"],
    );
}

/// Reaches the library's label check (after the device is built, before any kernel).
#[test]
fn error_label_out_of_range() {
    let dir = Scratch::new("label-range");
    let (logits, _) = valid_inputs(&dir);
    let bad = dir.npy("bad.npy", &[ROWS], NpyData::I64(vec![0, 1, 2, 9, 4]));
    xent_fails(
        &dir,
        &logits,
        &bad,
        &["--backend", "vulkan"],
        &["label 9", "row 3", "0..7"],
    );
}

#[test]
fn error_label_smoothing_out_of_range() {
    let dir = Scratch::new("smoothing");
    let (logits, labels) = valid_inputs(&dir);
    xent_fails(
        &dir,
        &logits,
        &labels,
        &["--label-smoothing", "2"],
        &["--label-smoothing", "2", "[0, 1]"],
    );
}

#[test]
fn error_unknown_backend() {
    let dir = Scratch::new("backend");
    let (logits, labels) = valid_inputs(&dir);
    xent_fails(
        &dir,
        &logits,
        &labels,
        &["--backend", "nonsense"],
        &["backend", "nonsense", "vulkan"],
    );
}

/// The gradient goes to a directory that does not exist: the run computes, then fails to
/// write. No file at the bad path, and no temporary file anywhere.
#[test]
fn error_output_directory_missing() {
    let dir = Scratch::new("outdir");
    let (logits, labels) = valid_inputs(&dir);
    let loss = dir.path("loss.npy");
    let bad = dir.path("no-such-dir").join("grad.npy");
    let out = run(&[
        &"xent",
        &"--backend",
        &"vulkan",
        &"--logits",
        &logits,
        &"--labels",
        &labels,
        &"--loss-out",
        &loss,
        &"--grad-out",
        &bad,
    ]);
    assert_error(&out, &["no-such-dir", "grad.npy"]);
    assert!(!bad.exists());
    assert!(!dir.path("no-such-dir").exists());
    let temps: Vec<String> = dir
        .entries()
        .into_iter()
        .filter(|name| name.starts_with('.') && name.contains(".tmp-"))
        .collect();
    assert!(temps.is_empty(), "temporary files left: {temps:?}");
    // Whatever was written is whole: the loss, if present, is a valid 0-d float32 array.
    if loss.exists() {
        read_f32(&loss, &[]);
    }
}

#[test]
fn xent_probability_targets_softcap_and_probability_outputs() {
    let dir = Scratch::new("probs");
    let z = logits(ROWS * COLS);
    let mut t: Vec<f32> = logits(ROWS * COLS).iter().map(|v| v.abs() + 0.1).collect();
    for row in t.chunks_mut(COLS) {
        let s: f32 = row.iter().sum();
        row.iter_mut().for_each(|x| *x /= s);
    }
    let l = dir.npy("logits.npy", &[ROWS, COLS], NpyData::F32(z.clone()));
    let tp = dir.npy("targets.npy", &[ROWS, COLS], NpyData::F32(t.clone()));
    let (loss, grad) = (dir.path("loss.npy"), dir.path("grad.npy"));
    let (probs, log_probs) = (dir.path("p.npy"), dir.path("logp.npy"));
    let out = run(&[
        &"xent",
        &"--backend",
        &"vulkan",
        &"--softcap",
        &"2.5",
        &"--label-smoothing",
        &"0.1",
        &"--logits",
        &l,
        &"--targets",
        &tp,
        &"--loss-out",
        &loss,
        &"--grad-out",
        &grad,
        &"--probs-out",
        &probs,
        &"--log-probs-out",
        &log_probs,
    ]);
    assert_success(&out);
    let options = CrossEntropyOptions {
        softcap: 2.5,
        label_smoothing: 0.1,
        ..Default::default()
    };
    let want = reference::cross_entropy_probs(&z, &t, ROWS, COLS, &options).unwrap();
    assert_close("loss", &read_f32(&loss, &[]), &[want.loss]);
    assert_close("grad", &read_f32(&grad, &[ROWS, COLS]), &want.grad);
    let capped: Vec<f32> = z.iter().map(|v| 2.5 * (v / 2.5).tanh()).collect();
    let p = reference::softmax(&capped, ROWS, COLS).unwrap();
    let logp = reference::log_softmax(&capped, ROWS, COLS).unwrap();
    assert_close("probs", &read_f32(&probs, &[ROWS, COLS]), &p);
    assert_close("log probs", &read_f32(&log_probs, &[ROWS, COLS]), &logp);
}

#[test]
fn error_targets_of_the_wrong_shape() {
    let dir = Scratch::new("targets-shape");
    let l = dir.npy(
        "logits.npy",
        &[ROWS, COLS],
        NpyData::F32(logits(ROWS * COLS)),
    );
    let t = dir.npy(
        "t.npy",
        &[ROWS, COLS - 1],
        NpyData::F32(logits(ROWS * (COLS - 1))),
    );
    let out = run(&[
        &"xent",
        &"--logits",
        &l,
        &"--targets",
        &t,
        &"--loss-out",
        &dir.path("loss.npy"),
        &"--grad-out",
        &dir.path("grad.npy"),
    ]);
    assert_error(&out, &["targets must have the logits' shape"]);
}

#[test]
fn xent_float16_logits_give_a_float16_gradient() {
    let dir = Scratch::new("f16");
    let (bits, z): (Vec<u16>, Vec<f32>) = logits(ROWS * COLS)
        .iter()
        .map(|&v| {
            let h = half::f16::from_f32(v);
            (h.to_bits(), h.to_f32())
        })
        .unzip();
    let l = dir.npy("logits.npy", &[ROWS, COLS], NpyData::F16(bits));
    let y = dir.npy("labels.npy", &[ROWS], NpyData::I64(LABELS.to_vec()));
    let (loss, grad) = (dir.path("loss.npy"), dir.path("grad.npy"));
    let out = run(&[
        &"xent",
        &"--backend",
        &"vulkan",
        &"--logits",
        &l,
        &"--labels",
        &y,
        &"--loss-out",
        &loss,
        &"--grad-out",
        &grad,
    ]);
    assert_success(&out);
    let want = reference::cross_entropy(&z, &LABELS, ROWS, COLS, &Default::default()).unwrap();
    assert_close("loss", &read_f32(&loss, &[]), &[want.loss]);
    let g = npy::read(&grad).unwrap();
    assert_eq!(g.shape, [ROWS, COLS]);
    let NpyData::F16(g) = g.data else {
        panic!(
            "the gradient of float16 logits must be float16, got {}",
            g.data.dtype()
        )
    };
    for (i, (&h, &w)) in g.iter().zip(&want.grad).enumerate() {
        let h = half::f16::from_bits(h).to_f32();
        assert!(
            (h - w).abs() <= 1e-7 + w.abs() / 1024.0,
            "grad[{i}]: {h} vs {w}"
        );
    }
}

/// The value of `key` in one record of the bench's JSON, as text (numbers and strings).
fn json_field(record: &serde_json::Value, key: &str) -> String {
    match &record[key] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        other => panic!("{key} is {other} in {record}"),
    }
}

#[test]
fn bench_reports_every_strategy_against_the_copy_kernel() {
    let dir = Scratch::new("bench");
    let (json, svg) = (dir.path("bench.json"), dir.path("bench.svg"));
    // 3x5: 15 elements, not whole vec4s, so the copy kernel's padding is exercised too.
    let out = run(&[
        &"bench",
        &"--shapes",
        &"9x12,3x5",
        &"--reps",
        &"2",
        &"--strategies",
        &"auto,wg1,wg8",
        &"--json",
        &json,
        &"--plot",
        &svg,
    ]);
    assert_success(&out);
    let text = fs::read_to_string(&json).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
    let lines: &Vec<serde_json::Value> = parsed.as_array().unwrap();
    // Where the kernels move 64-bit words (software adapters with SHADER_INT64), the copy in
    // 32-bit words is reported too.
    let words = json_field(&lines[0], "words");
    let kernels: &[&str] = match words.as_str() {
        "64" => &["copy", "copy-u32", "copy-buffer", "auto", "wg1", "wg8"],
        "32" => &["copy", "copy-buffer", "auto", "wg1", "wg8"],
        other => panic!("words {other:?}"),
    };
    assert_eq!(
        lines.len(),
        2 * kernels.len(),
        "per shape {kernels:?}:\n{text}"
    );
    for (line, (shape, strategy)) in lines.iter().zip(
        [(9, 12), (3, 5)]
            .iter()
            .flat_map(|s| kernels.iter().map(move |k| (s, *k))),
    ) {
        assert_eq!(json_field(line, "strategy"), strategy, "{line}");
        assert_eq!(json_field(line, "words"), words, "{line}");
        assert_eq!(json_field(line, "rows"), shape.0.to_string(), "{line}");
        assert_eq!(json_field(line, "cols"), shape.1.to_string(), "{line}");
        assert!(!json_field(line, "adapter").is_empty());
        assert!(
            json_field(line, "timer").contains("GPU timestamps"),
            "{line}"
        );
        let bytes = 2 * shape.0 * shape.1 * 4;
        assert_eq!(json_field(line, "bytes"), bytes.to_string(), "{line}");
        let ms: f64 = json_field(line, "median_ms").parse().unwrap();
        let gbps: f64 = json_field(line, "gbps").parse().unwrap();
        let ratio: f64 = json_field(line, "copy_ratio").parse().unwrap();
        assert!(ms > 0.0 && ms.is_finite(), "{line}");
        // (gbps is written with 4 decimals)
        let want = bytes as f64 / ms / 1e6;
        assert!((gbps - want).abs() <= 5e-5 + 1e-3 * want, "{line}");
        assert!(ratio > 0.0 && ratio.is_finite(), "{line}");
        if strategy == "copy" {
            assert_eq!(ratio, 1.0, "{line}");
        }
        // min <= median <= max; the spread and its flag agree; the driver's copy is the limit.
        let min: f64 = json_field(line, "min_ms").parse().unwrap();
        let max: f64 = json_field(line, "max_ms").parse().unwrap();
        assert!(
            0.0 < min && min <= ms && ms <= max && max.is_finite(),
            "{line}"
        );
        let spread: f64 = json_field(line, "spread").parse().unwrap();
        assert!(
            spread >= 0.0 && spread <= (max - min) / ms + 1e-12,
            "{line}"
        );
        assert_eq!(
            line["spread_large"],
            serde_json::json!(spread > 0.10),
            "{line}"
        );
        let limit: f64 = json_field(line, "limit_ratio").parse().unwrap();
        assert!(limit > 0.0 && limit.is_finite(), "{line}");
        if strategy == "copy-buffer" {
            assert_eq!(limit, 1.0, "{line}");
        }
        assert_eq!(json_field(line, "reps"), "2", "{line}");
        // The warm-up: at least the default 300 ms per shape, and how it went.
        let warmup: f64 = json_field(line, "warmup_ms").parse().unwrap();
        assert!(warmup >= 300.0, "{line}");
        assert!(line["warmup_settled"].is_boolean(), "{line}");
        // What auto ran as: a concrete strategy; named strategies run as themselves.
        match strategy {
            "auto" => {
                let resolved = json_field(line, "resolved");
                let parsed: ml_softmax::Strategy = resolved.parse().unwrap();
                assert_ne!(parsed, ml_softmax::Strategy::Auto, "{line}");
            }
            "wg1" | "wg8" => assert_eq!(json_field(line, "resolved"), strategy, "{line}"),
            _ => assert!(line["resolved"].is_null(), "{line}"),
        }
    }
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("auto="),
        "auto's resolution is printed:\n{printed}"
    );
    assert!(printed.contains("warm-up: "), "{printed}");
    let plot = fs::read_to_string(&svg).unwrap();
    assert!(plot.starts_with("<svg") && plot.trim_end().ends_with("</svg>"));
    for name in ["copy", "copy-buffer", "auto", "wg1", "wg8"] {
        assert!(plot.contains(name), "the plot has no {name} line");
    }

    // --wall: host wall time instead of timestamps, said in the report.
    let out = run(&[
        &"bench",
        &"--shapes",
        &"4x8",
        &"--reps",
        &"1",
        &"--strategies",
        &"auto",
        &"--wall",
        &"--json",
        &json,
    ]);
    assert_success(&out);
    let text = fs::read_to_string(&json).unwrap();
    assert!(text.contains("host wall time"), "{text}");
}

// ---------------------------------------------------------------------------------------------
// Outputs that are never destroyed, inputs that are read within bounds, and what the command
// line says. CI runs as root, which hides some of these bugs: where it matters the binary is
// also run as `nobody` (with `setpriv`, from a copy that user can read).

/// The binary with these arguments and environment variables, not yet started.
fn command(args: &[&dyn AsRef<std::ffi::OsStr>], envs: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ml-softmax"));
    cmd.args(args.iter().map(|a| a.as_ref()));
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd
}

type Arg<'a> = &'a dyn AsRef<std::ffi::OsStr>;

/// `xent --logits LOGITS --labels LABELS` and then `rest`.
fn xent_args<'a>(logits: Arg<'a>, labels: Arg<'a>, rest: &[Arg<'a>]) -> Vec<Arg<'a>> {
    let mut args: Vec<Arg<'a>> = vec![&"xent", &"--logits", logits, &"--labels", labels];
    args.extend_from_slice(rest);
    args
}

/// Runs `cmd` to the end, or kills it and fails after two minutes (a FIFO test that goes wrong
/// would otherwise hang).
fn output_within_two_minutes(mut cmd: Command) -> Output {
    use std::process::Stdio;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("{cmd:?} did not finish within two minutes");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs the binary as `nobody` when the tests run as root (a copy of it in a folder that user
/// can read; `dir` opened to everyone), else as the current, already unprivileged, user.
fn run_unprivileged(dir: &Scratch, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    if !is_root() {
        return run(args);
    }
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&dir.0, fs::Permissions::from_mode(0o777)).unwrap();
    let bin_dir = std::env::temp_dir().join(format!("ml-softmax-cli-bin-{}", std::process::id()));
    let bin = bin_dir.join("ml-softmax");
    if !bin.exists() {
        fs::create_dir_all(&bin_dir).unwrap();
        let staged = bin_dir.join(format!("ml-softmax.{:?}", std::thread::current().id()));
        fs::copy(env!("CARGO_BIN_EXE_ml-softmax"), &staged).unwrap();
        fs::set_permissions(&staged, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(&bin_dir, fs::Permissions::from_mode(0o755)).unwrap();
        let _ = fs::rename(&staged, &bin);
    }
    Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(&bin)
        .args(args.iter().map(|a| a.as_ref()))
        .current_dir(&dir.0)
        .output()
        .expect("cannot start setpriv")
}

/// Files this tool leaves only while it runs (or after a SIGKILL): `.ml-softmax-*.part`.
fn temp_files(dir: &Path) -> Vec<String> {
    entries(dir)
        .into_iter()
        .filter(|n| n.starts_with(".ml-softmax-"))
        .collect()
}

fn file_type(path: &Path) -> fs::FileType {
    fs::symlink_metadata(path).unwrap().file_type()
}

#[test]
fn outputs_to_a_device_or_a_fifo_go_through_and_the_node_stays() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let dir = Scratch::new("nodes");
    let (logits, labels) = valid_inputs(&dir);
    // A character device of our own (the null device's numbers) where we may make one, so the
    // test never risks the system's /dev/null; else /dev/null itself.
    let node = dir.path("null");
    let made = is_root()
        && Command::new("mknod")
            .args([node.as_os_str(), "c".as_ref(), "1".as_ref(), "3".as_ref()])
            .status()
            .is_ok_and(|s| s.success());
    let node = if made {
        node
    } else {
        PathBuf::from("/dev/null")
    };
    let rdev = fs::metadata(&node).unwrap().rdev();
    // A FIFO with a reader that keeps every byte.
    let fifo = dir.path("grad.fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || fs::read(&fifo).unwrap())
    };
    // The same device for two outputs is fine.
    let out = output_within_two_minutes(command(
        &xent_args(
            &logits,
            &labels,
            &[
                &"--loss-out",
                &node,
                &"--lse-out",
                &node,
                &"--grad-out",
                &fifo,
                &"--quiet",
            ],
        ),
        &[],
    ));
    assert_success(&out);
    let got = npy::parse(&reader.join().unwrap()).unwrap();
    assert!(
        file_type(&node).is_char_device(),
        "{} was replaced",
        node.display()
    );
    assert_eq!(fs::metadata(&node).unwrap().rdev(), rdev);
    assert!(file_type(&fifo).is_fifo(), "the FIFO was replaced");
    let want = reference::cross_entropy(
        &self::logits(ROWS * COLS),
        &LABELS,
        ROWS,
        COLS,
        &Default::default(),
    )
    .unwrap();
    assert_eq!(got.shape, [ROWS, COLS]);
    let NpyData::F32(grad) = got.data else {
        panic!("float32 expected")
    };
    assert_close("grad through the FIFO", &grad, &want.grad);
    assert!(temp_files(&dir.0).is_empty());

    // `/dev/stdout` (a link to a link to a pipe here) is written through.
    let out = run(&xent_args(
        &logits,
        &labels,
        &[&"--grad-out", &"/dev/stdout", &"--quiet"],
    ));
    assert_success(&out);
    // The gradient's .npy bytes, then the summary.
    let npy_len = npy::to_bytes(&[ROWS, COLS], &NpyData::F32(vec![0.0; ROWS * COLS]))
        .unwrap()
        .len();
    let (npy_bytes, summary) = out.stdout.split_at(npy_len.min(out.stdout.len()));
    let got = npy::parse(npy_bytes).unwrap();
    assert_eq!(got.shape, [ROWS, COLS]);
    assert!(summary.starts_with(b"loss "), "{}", describe(&out));

    // As an ordinary user, the usual way to discard an output works.
    let out = run_unprivileged(
        &dir,
        &xent_args(
            &logits,
            &labels,
            &[&"--loss-out", &"/dev/null", &"--grad-out", &"grad.npy"],
        ),
    );
    assert_success(&out);
    assert!(file_type(Path::new("/dev/null")).is_char_device());
    read_f32(&dir.path("grad.npy"), &[ROWS, COLS]);
}

#[test]
fn an_output_symlink_is_followed_and_stays_a_link() {
    let dir = Scratch::new("symlink");
    let (logits, labels) = valid_inputs(&dir);
    fs::write(dir.path("target.npy"), b"old").unwrap();
    std::os::unix::fs::symlink("target.npy", dir.path("link.npy")).unwrap();
    // A dangling link: its target is created.
    std::os::unix::fs::symlink("new-target.npy", dir.path("dangling.npy")).unwrap();
    let out = run(&xent_args(
        &logits,
        &labels,
        &[
            &"--loss-out",
            &dir.path("link.npy"),
            &"--grad-out",
            &dir.path("dangling.npy"),
        ],
    ));
    assert_success(&out);
    for (link, target) in [
        ("link.npy", "target.npy"),
        ("dangling.npy", "new-target.npy"),
    ] {
        assert!(
            file_type(&dir.path(link)).is_symlink(),
            "{link} is no longer a link"
        );
        assert_eq!(fs::read_link(dir.path(link)).unwrap(), Path::new(target));
    }
    assert_eq!(read_f32(&dir.path("target.npy"), &[]).len(), 1);
    read_f32(&dir.path("new-target.npy"), &[ROWS, COLS]);
    assert!(temp_files(&dir.0).is_empty());
}

#[test]
fn two_outputs_naming_one_file_are_an_error_and_the_file_is_unchanged() {
    let dir = Scratch::new("same");
    let (logits, labels) = valid_inputs(&dir);
    fs::write(dir.path("same.npy"), b"precious").unwrap();
    std::os::unix::fs::symlink("same.npy", dir.path("alias.npy")).unwrap();
    fs::hard_link(dir.path("same.npy"), dir.path("hard.npy")).unwrap();
    for (a, b, flag_b) in [
        ("same.npy", "same.npy", "--grad-out"),
        ("same.npy", "alias.npy", "--grad-out"),
        ("same.npy", "hard.npy", "--probs-out"),
        ("new.npy", "./new.npy", "--grad-out"),
    ] {
        let out = run(&xent_args(
            &logits,
            &labels,
            &[&"--loss-out", &dir.path(a), &flag_b, &dir.path(b)],
        ));
        assert_error(&out, &[flag_b, "the same file as --loss-out"]);
        assert_eq!(fs::read(dir.path("same.npy")).unwrap(), b"precious");
        assert!(!dir.path("new.npy").exists());
        assert!(temp_files(&dir.0).is_empty());
    }
}

#[test]
fn an_output_that_cannot_be_written_leaves_every_other_output_unchanged() {
    let dir = Scratch::new("folder");
    let (logits, labels) = valid_inputs(&dir);
    fs::write(dir.path("loss.npy"), b"old loss").unwrap();
    fs::create_dir(dir.path("a-folder")).unwrap();
    for (bad, phrases) in [
        ("a-folder", &["--grad-out", "is a folder"][..]),
        ("missing/", &["--grad-out", "ends with '/'"][..]),
        (
            "loss.npy/grad.npy",
            &["--grad-out", "is a file, not a folder"][..],
        ),
        (
            "no-such-folder/grad.npy",
            &["--grad-out", "does not exist"][..],
        ),
    ] {
        let out = run(&xent_args(
            &logits,
            &labels,
            &[
                &"--loss-out",
                &dir.path("loss.npy"),
                &"--grad-out",
                &dir.path(bad),
            ],
        ));
        assert_error(&out, phrases);
        assert_eq!(
            fs::read(dir.path("loss.npy")).unwrap(),
            b"old loss",
            "{bad}"
        );
        assert!(temp_files(&dir.0).is_empty());
    }
    // As an ordinary user: a read-only file is not replaced, and a folder that cannot be
    // written fails before the GPU is touched.
    if is_root() {
        use std::os::unix::fs::PermissionsExt;
        fs::write(dir.path("ro.npy"), b"read-only").unwrap();
        fs::set_permissions(dir.path("ro.npy"), fs::Permissions::from_mode(0o444)).unwrap();
        let locked = dir.path("locked");
        fs::create_dir(&locked).unwrap();
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o755)).unwrap();
        let out = run_unprivileged(
            &dir,
            &xent_args(&logits, &labels, &[&"--grad-out", &"ro.npy"]),
        );
        assert_error(&out, &["--grad-out", "read-only"]);
        assert_eq!(fs::read(dir.path("ro.npy")).unwrap(), b"read-only");
        let out = run_unprivileged(
            &dir,
            &xent_args(
                &logits,
                &labels,
                &[
                    &"--grad-out",
                    &"locked/grad.npy",
                    &"--backend",
                    &"nonsense-is-never-reached",
                ],
            ),
        );
        assert_error(
            &out,
            &[
                "--grad-out",
                "cannot create a temporary file",
                "ermission denied",
            ],
        );
    }
}

/// A long file name (250 bytes, within NAME_MAX) works: temporary names do not grow with it.
#[test]
fn a_250_byte_file_name_works() {
    let dir = Scratch::new("long-name");
    let (logits, labels) = valid_inputs(&dir);
    let name = format!("{}.npy", "g".repeat(246));
    assert_eq!(name.len(), 250);
    let out = run(&xent_args(
        &logits,
        &labels,
        &[&"--grad-out", &dir.path(&name)],
    ));
    assert_success(&out);
    read_f32(&dir.path(&name), &[ROWS, COLS]);
}

/// Killed at any moment (SIGKILL), a run leaves each output either as it was or complete,
/// never truncated; the temporary files a kill can leave are removed by the next run in that
/// folder. SIGTERM and SIGINT remove them at once. Both with unnamed temporary files
/// (O_TMPFILE) and with named ones (the fallback, forced by ML_SOFTMAX_NAMED_TEMPS).
#[test]
fn killed_runs_leave_no_truncated_output_and_no_temp_file() {
    let dir = Scratch::new("kill");
    let (rows, cols) = (256, 4000);
    let l = dir.npy("big.npy", &[rows, cols], NpyData::F32(logits(rows * cols)));
    let y = dir.npy("y.npy", &[rows], NpyData::I64((0..rows as i64).collect()));
    let outs = ["grad.npy", "probs.npy", "log-probs.npy"];
    let old = NpyData::F32(vec![7.0; 3]);
    let args = |dir: &Scratch| -> Vec<std::ffi::OsString> {
        let mut a: Vec<std::ffi::OsString> = ["xent", "--logits"].iter().map(Into::into).collect();
        a.push(l.clone().into());
        a.push("--labels".into());
        a.push(y.clone().into());
        for (flag, name) in ["--grad-out", "--probs-out", "--log-probs-out"]
            .iter()
            .zip(outs)
        {
            a.push(flag.into());
            a.push(dir.path(name).into());
        }
        a
    };
    let spawn = |named: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ml-softmax"));
        cmd.args(args(&dir))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        if named {
            cmd.env("ML_SOFTMAX_NAMED_TEMPS", "1");
        }
        cmd.spawn().unwrap()
    };
    let check_outputs = |when: &str| {
        for name in outs {
            let array =
                npy::read(&dir.path(name)).unwrap_or_else(|e| panic!("{name} after {when}: {e}"));
            assert!(
                array
                    == NpyArray {
                        shape: vec![3],
                        data: old.clone()
                    }
                    || array.shape == [rows, cols],
                "{name} after {when}: shape {:?}",
                array.shape
            );
        }
    };
    for name in outs {
        npy::write(&dir.path(name), &[3], &old).unwrap();
    }
    let started = std::time::Instant::now();
    assert!(spawn(false).wait().unwrap().success());
    let full = started.elapsed();
    check_outputs("a whole run");
    for named in [false, true] {
        for i in 0..10u32 {
            let mut child = spawn(named);
            std::thread::sleep(full * i / 10);
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
            check_outputs(&format!(
                "a SIGKILL at {i}/10 of a run (named temps: {named})"
            ));
        }
        for (i, signal) in [libc::SIGTERM, libc::SIGINT]
            .into_iter()
            .cycle()
            .take(6)
            .enumerate()
        {
            let mut child = spawn(named);
            std::thread::sleep(full * (2 * i as u32 + 3) / 12);
            // SAFETY: kill only sends a signal to our own child.
            unsafe { libc::kill(child.id() as i32, signal) };
            let status = child.wait().unwrap();
            assert!(status.success() || status.code() == Some(130), "{status:?}");
            check_outputs(&format!("signal {signal} (named temps: {named})"));
            // (Earlier SIGKILLed runs' files stay until a run gets as far as its outputs.)
            let mine = format!(".ml-softmax-{}-", child.id());
            let left: Vec<String> = temp_files(&dir.0)
                .into_iter()
                .filter(|n| n.starts_with(&mine))
                .collect();
            assert!(left.is_empty(), "after signal {signal}: {left:?}");
        }
    }
    // A stale temporary file of a process that no longer exists (no pid is this large) goes
    // with the next run in its folder; one of a live process stays.
    fs::write(dir.path(".ml-softmax-999999999-0.part"), b"stale").unwrap();
    let live = format!(".ml-softmax-{}-0.part", std::process::id());
    fs::write(dir.path(&live), b"live").unwrap();
    assert!(spawn(false).wait().unwrap().success());
    check_outputs("the last run");
    assert_eq!(temp_files(&dir.0), vec![live]);
}

/// `/dev/zero` as input, and a header that declares far more data than the input holds, are
/// refused with a clear error under a 1 GiB address-space limit, not read without bound.
#[test]
fn endless_or_huge_inputs_are_refused_within_a_memory_limit() {
    use std::os::unix::process::CommandExt;
    let dir = Scratch::new("huge");
    let (logits, labels) = valid_inputs(&dir);
    let huge_header = raw_npy(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (100000, 100000), }",
        &[0; 64],
    );
    let huge = dir.bytes("huge.npy", &huge_header);
    // The same header on an endless stream: a FIFO fed until the reader stops.
    let fifo = dir.path("endless.fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let feeder = {
        let (fifo, header) = (fifo.clone(), huge_header.clone());
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = fs::OpenOptions::new().write(true).open(fifo).unwrap();
            let _ = f.write_all(&header);
            let zeros = vec![0u8; 1 << 20];
            while f.write_all(&zeros).is_ok() {}
        })
    };
    let limited = |bad: &Path, labels: &Path| {
        let mut cmd = command(
            &xent_args(&bad, &labels, &[&"--loss-out", &dir.path("l.npy")]),
            &[],
        );
        // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                let limit = libc::rlimit {
                    rlim_cur: 1 << 30,
                    rlim_max: 1 << 30,
                };
                if libc::setrlimit(libc::RLIMIT_AS, &limit) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        output_within_two_minutes(cmd)
    };
    let dev_zero = Path::new("/dev/zero");
    assert_error(
        &limited(dev_zero, &labels),
        &["/dev/zero", "not a .npy file"],
    );
    assert_error(
        &limited(&logits, dev_zero),
        &["/dev/zero", "not a .npy file"],
    );
    assert_error(
        &limited(&huge, &labels),
        &["huge.npy", "truncated", "40000000000 bytes"],
    );
    assert_error(
        &limited(&fifo, &labels),
        &["endless.fifo", "does not fit in memory"],
    );
    feeder.join().unwrap();
    assert!(!dir.path("l.npy").exists());
}

/// A FIFO input with no writer: the command says that it waits, then reads what comes.
#[test]
fn a_fifo_input_without_a_writer_says_that_it_waits() {
    use std::io::{BufRead, Write};
    let dir = Scratch::new("fifo-in");
    let (logits, labels) = valid_inputs(&dir);
    let fifo = dir.path("logits.fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let mut child = command(
        &[&"xent", &"--logits", &fifo, &"--labels", &labels, &"--json"],
        &[],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    // The first stderr line, read on a thread so that a command that never says it waits
    // fails the test after a minute instead of hanging it.
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stderr).read_line(&mut line);
        let _ = tx.send(line);
    });
    let Ok(line) = rx.recv_timeout(std::time::Duration::from_secs(60)) else {
        let _ = child.kill();
        panic!("the command did not say within a minute that it waits for a writer");
    };
    assert!(line.contains("waiting for a writer on"), "{line}");
    assert!(line.contains("logits.fifo"), "{line}");
    fs::OpenOptions::new()
        .write(true)
        .open(&fifo)
        .unwrap()
        .write_all(&fs::read(&logits).unwrap())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["rows"], ROWS);
}

/// Messages name the variable or flag that is wrong; usage errors are one line pointing at
/// the help; no flag value panics.
#[test]
fn messages_name_the_variable_or_flag_that_is_wrong() {
    let dir = Scratch::new("messages");
    let (logits, labels) = valid_inputs(&dir);
    let xent = |envs: &[(&str, &str)], extra: &[&str]| {
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> =
            vec![&"xent", &"--logits", &logits, &"--labels", &labels];
        for e in extra {
            args.push(e);
        }
        command(&args, envs).output().unwrap()
    };
    assert_error(
        &xent(&[("WGPU_BACKEND", "nonsense")], &[]),
        &["WGPU_BACKEND", "nonsense"],
    );
    assert_error(
        &xent(
            &[
                ("WGPU_BACKEND", "vulkan"),
                ("VK_ICD_FILENAMES", "/nonexistent"),
            ],
            &[],
        ),
        &["no GPU adapter", "WGPU_BACKEND=vulkan"],
    );
    assert_error(
        &xent(&[], &["--label-smoothing", "-0.1"]),
        &["--label-smoothing -0.1", "[0, 1]"],
    );
    assert_error(&xent(&[], &["--z-loss", "-1"]), &["--z-loss -1"]);
    let empty = dir.npy("empty.npy", &[2, 0], NpyData::F32(vec![]));
    let y2 = dir.npy("y2.npy", &[2], NpyData::I64(vec![0, 0]));
    let out = run(&[&"xent", &"--logits", &empty, &"--labels", &y2]);
    assert_error(&out, &["empty.npy", "logits have shape [2, 0]"]);
    // Usage errors: exit code 2, one line, the subcommand's help named.
    for (args, phrases) in [
        (
            &["bench", "--reps", "0"][..],
            &["--reps", "at least 1", "ml-softmax bench --help"][..],
        ),
        (
            &["xent", "--bogus"][..],
            &["--bogus", "ml-softmax xent --help"][..],
        ),
        (&["nonsense"][..], &["nonsense", "ml-softmax --help"][..]),
        (
            &["bench", "--precision", "f64"][..],
            &[
                "'f64'",
                "possible values: f32, f16, bf16",
                "ml-softmax bench --help",
            ][..],
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_ml-softmax"))
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
        assert_eq!(stderr.lines().count(), 1, "{}", describe(&out));
        assert!(
            stderr.starts_with("error: ") && !stderr.contains("panicked"),
            "{stderr}"
        );
        for p in phrases {
            assert!(stderr.contains(p), "{args:?}: no {p:?} in {stderr}");
        }
    }
}

/// `xent` prints what it did: the loss, rows, ignored rows, adapter, time and the files
/// written; `--json` the same as JSON; no output flag is required.
#[test]
fn xent_prints_a_summary_in_text_or_json() {
    let dir = Scratch::new("summary");
    let z = dir.npy(
        "z.npy",
        &[2, 3],
        NpyData::F32(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
    );
    let y = dir.npy("y.npy", &[2], NpyData::I64(vec![1, -100]));
    let out = run(&[&"xent", &"--logits", &z, &"--labels", &y]);
    assert_success(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("loss 1.4076"), "{text}");
    assert!(text.contains("2 rows, 1 ignored, 3 classes"), "{text}");
    assert!(
        text.contains("adapter ") && text.contains("time "),
        "{text}"
    );
    assert!(text.contains("wrote nothing"), "{text}");
    assert!(
        out.stderr.is_empty(),
        "stderr is no terminal: no progress expected"
    );

    let loss = dir.path("loss.npy");
    let out = run(&xent_args(&z, &y, &[&"--loss-out", &loss, &"--json"]));
    assert_success(&out);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        (s["loss"].as_f64().unwrap() - 1.407_606).abs() < 1e-5,
        "{s}"
    );
    assert_eq!((s["rows"].as_u64(), s["cols"].as_u64()), (Some(2), Some(3)));
    assert_eq!(s["ignored_rows"], 1);
    assert_eq!(s["reduction"], "mean");
    assert_eq!(s["logits_dtype"], "float32");
    assert!(s["adapter"].as_str().is_some_and(|a| !a.is_empty()));
    assert!(s["seconds"].as_f64().is_some_and(|t| t > 0.0));
    assert_eq!(s["outputs"]["loss-out"], loss.display().to_string());
    assert_close("loss.npy", &read_f32(&loss, &[]), &[1.407_606]);

    let help = run(&[&"xent", &"--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    for dtype in ["float32", "float16", "float64", "int64", "int32"] {
        assert!(help.contains(dtype), "xent --help does not list {dtype}");
    }
}

#[test]
fn adapters_marks_the_default_one() {
    let out = run(&[&"adapters"]);
    assert_success(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches("<- default").count(), 1, "{text}");
    let marked = text.lines().find(|l| l.contains("<- default")).unwrap();
    let name = marked
        .split_once("] ")
        .unwrap()
        .1
        .trim_end_matches("   <- default");
    assert!(
        text.contains(&format!(
            "default (what --backend auto picks; WGPU_ADAPTER_NAME honoured): {name}"
        )),
        "{text}"
    );
}

/// The progress spinner shows on a terminal (a pseudo-terminal from `script`), with the delay
/// set to 0, and not with --quiet.
#[test]
fn progress_shows_on_a_terminal_unless_quiet() {
    let dir = Scratch::new("progress");
    let (logits, labels) = valid_inputs(&dir);
    let bin = env!("CARGO_BIN_EXE_ml-softmax");
    let line = |quiet: &str| {
        format!(
            "{bin} xent --logits {} --labels {} {quiet} >/dev/null",
            logits.display(),
            labels.display()
        )
    };
    let on_tty = |cmd: String| {
        let out = Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .env("ML_SOFTMAX_PROGRESS_AFTER_MS", "0")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", describe(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let shown = on_tty(line(""));
    assert!(
        [
            "reading the inputs",
            "opening the GPU",
            "computing on the GPU",
            "writing"
        ]
        .iter()
        .any(|step| shown.contains(step)),
        "no progress on a terminal: {shown:?}"
    );
    let quiet = on_tty(line("--quiet"));
    assert!(
        !quiet.contains("GPU"),
        "progress despite --quiet: {quiet:?}"
    );
}

/// A mean whose denominator is 0 gives loss 0 and a zero gradient, whichever way D is 0:
/// every row ignored, or every target weight 0 (with label smoothing, whose row losses are
/// not 0). README states the rule.
#[test]
fn a_zero_denominator_mean_is_zero_both_ways() {
    let dir = Scratch::new("zero-d");
    let (logits, _) = valid_inputs(&dir);
    let ignored = dir.npy("ignored.npy", &[ROWS], NpyData::I64(vec![-100; ROWS]));
    let labels = dir.npy("labels.npy", &[ROWS], NpyData::I64(LABELS.to_vec()));
    let mut w = vec![1.0f32; COLS];
    for &y in &LABELS {
        w[y as usize] = 0.0;
    }
    let weight = dir.npy("w.npy", &[COLS], NpyData::F32(w));
    for (labels, extra) in [(&ignored, None), (&labels, Some(&weight))] {
        let (loss, grad, rows) = (dir.path("l.npy"), dir.path("g.npy"), dir.path("r.npy"));
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
            &"xent",
            &"--logits",
            &logits,
            &"--labels",
            labels,
            &"--label-smoothing",
            &"0.1",
            &"--loss-out",
            &loss,
            &"--grad-out",
            &grad,
            &"--row-loss-out",
            &rows,
        ];
        if let Some(w) = &extra {
            args.push(&"--weight");
            args.push(w);
        }
        assert_success(&run(&args));
        assert_eq!(read_f32(&loss, &[]), [0.0]);
        assert!(read_f32(&grad, &[ROWS, COLS]).iter().all(|&g| g == 0.0));
        let row_loss = read_f32(&rows, &[ROWS]);
        assert_eq!(
            row_loss.iter().all(|&r| r > 0.0),
            extra.is_some(),
            "{row_loss:?}"
        );
    }
}

// ---- linear-xent (issue 18) ----

#[path = "common/linear.rs"]
mod linear_reference;

/// `linear-xent` end to end: every output against the f64 reference, with a bias, weights,
/// smoothing and an ignored row.
#[test]
fn linear_xent_matches_reference() {
    let dir = Scratch::new("linear_xent_matches_reference");
    let (rows, dim, vocab) = (ROWS, 3, COLS);
    let scaled = |v: Vec<f32>| v.into_iter().map(|x| x * 0.4).collect::<Vec<_>>();
    let case = linear_reference::Case {
        rows,
        dim,
        vocab,
        hidden: scaled(logits(rows * dim)),
        classifier: scaled(logits(vocab * dim + 5)[5..].to_vec()),
        bias: Some(scaled(logits(vocab + 3)[3..].to_vec())),
        labels: vec![3, -100, 6, 2, 5],
    };
    let weight: Vec<f32> = (0..vocab).map(|j| 0.5 + j as f32 * 0.25).collect();
    let options = CrossEntropyOptions {
        label_smoothing: 0.1,
        weight: Some(weight.clone()),
        ..Default::default()
    };
    let h = dir.npy("h.npy", &[rows, dim], NpyData::F32(case.hidden.clone()));
    let c = dir.npy(
        "c.npy",
        &[vocab, dim],
        NpyData::F32(case.classifier.clone()),
    );
    let b = dir.npy("b.npy", &[vocab], NpyData::F32(case.bias.clone().unwrap()));
    let y = dir.npy("y.npy", &[rows], NpyData::I64(case.labels.clone()));
    let w = dir.npy("w.npy", &[vocab], NpyData::F32(weight));
    let (loss, gh, gc, gb) = (
        dir.path("loss.npy"),
        dir.path("gh.npy"),
        dir.path("gc.npy"),
        dir.path("gb.npy"),
    );
    let out = run(&[
        &"linear-xent",
        &"--hidden",
        &h,
        &"--classifier",
        &c,
        &"--labels",
        &y,
        &"--bias",
        &b,
        &"--weight",
        &w,
        &"--label-smoothing",
        &"0.1",
        &"--loss-out",
        &loss,
        &"--grad-hidden-out",
        &gh,
        &"--grad-classifier-out",
        &gc,
        &"--grad-bias-out",
        &gb,
    ]);
    assert_success(&out);
    let want = linear_reference::expected(&case, &options);
    let close = |what: &str, got: &[f32], want: &[f32]| {
        for (i, (g, r)) in got.iter().zip(want).enumerate() {
            assert!(
                relative_eq!(g, r, epsilon = 1e-6, max_relative = 1e-4),
                "{what}[{i}]: {g} vs reference {r}"
            );
        }
    };
    close("loss", &read_f32(&loss, &[]), &[want.out.loss]);
    close(
        "grad_hidden",
        &read_f32(&gh, &[rows, dim]),
        &want.grad_hidden,
    );
    close(
        "grad_classifier",
        &read_f32(&gc, &[vocab, dim]),
        &want.grad_classifier,
    );
    close("grad_bias", &read_f32(&gb, &[vocab]), &want.grad_bias);
}

/// `linear-xent` refuses mismatched shapes and bad labels before the GPU, writing nothing.
#[test]
fn linear_xent_bad_input_is_one_error_line() {
    let dir = Scratch::new("linear_xent_bad_input_is_one_error_line");
    let h = dir.npy("h.npy", &[ROWS, 3], NpyData::F32(logits(ROWS * 3)));
    let c4 = dir.npy("c4.npy", &[COLS, 4], NpyData::F32(logits(COLS * 4)));
    let c = dir.npy("c.npy", &[COLS, 3], NpyData::F32(logits(COLS * 3)));
    let y = dir.npy("y.npy", &[ROWS], NpyData::I64(LABELS.to_vec()));
    let bad_y = dir.npy("bad_y.npy", &[ROWS], NpyData::I64(vec![0, 1, 7, 2, 3]));
    let out_path = dir.path("gh.npy");
    let linear = |classifier: &Path, labels: &Path| {
        run(&[
            &"linear-xent",
            &"--hidden",
            &h,
            &"--classifier",
            &classifier,
            &"--labels",
            &labels,
            &"--grad-hidden-out",
            &out_path,
        ])
    };
    assert_error(&linear(&c4, &y), &["c4.npy", "4 elements", "3"]);
    assert_error(&linear(&c, &bad_y), &["bad_y.npy", "label 7", "row 2"]);
    let out = run(&[
        &"linear-xent",
        &"--hidden",
        &h,
        &"--classifier",
        &c,
        &"--labels",
        &y,
        &"--label-smoothing",
        &"2",
    ]);
    assert_error(&out, &["--label-smoothing 2"]);
    assert!(!out_path.exists(), "an output was written for bad input");
}

/// `ml-softmax shader` prints one variant's WGSL, which naga parses and validates (and which
/// is the text the library compiles); `--list` names every axis; a variant the shaders do not
/// have, or an entry point the module lacks, is one error line and exit 1; an unknown value is
/// clap's error (exit 2).
#[test]
fn shader_prints_a_variant_that_validates_and_refuses_a_bad_one() {
    use ml_softmax::kernels::{Access, Io, ModuleKey, Place, Precision, ShaderVariant, TeamKind};
    use naga::valid::{Capabilities, ShaderStages, SubgroupOperationSet, ValidationFlags};
    let cases: [(&[&str], ShaderVariant); 3] = [
        (
            &[],
            ShaderVariant {
                team: TeamKind::Workgroup,
                io: Io {
                    precision: Precision::F32,
                    place: Place::Separate,
                    access: Access::Vec4(ml_softmax::kernels::Words::Bits32),
                },
            },
        ),
        (
            &[
                "--team",
                "subgroup",
                "--precision",
                "f16",
                "--place",
                "in-place",
                "--access",
                "scalar",
            ],
            ShaderVariant {
                team: TeamKind::Subgroup,
                io: Io {
                    precision: Precision::F16,
                    place: Place::InPlace,
                    access: Access::Scalar,
                },
            },
        ),
        (
            &[
                "--precision",
                "bf16",
                "--access",
                "pairs",
                "--entry",
                "cross_entropy_main",
            ],
            ShaderVariant {
                team: TeamKind::Workgroup,
                io: Io {
                    precision: Precision::Bf16,
                    place: Place::Separate,
                    access: Access::Pairs,
                },
            },
        ),
    ];
    for (flags, variant) in cases {
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"shader"];
        args.extend(flags.iter().map(|f| f as &dyn AsRef<std::ffi::OsStr>));
        let out = run(&args);
        assert_success(&out);
        let text = String::from_utf8(out.stdout).unwrap();
        let module = ModuleKey::RowSoftmax(variant);
        assert!(
            text.ends_with(&module.source()),
            "{flags:?}: not the library's text of {variant:?}"
        );
        let parsed = naga::front::wgsl::parse_str(&text)
            .unwrap_or_else(|e| panic!("{flags:?}: {}", e.emit_to_string(&text)));
        let mut validator =
            naga::valid::Validator::new(ValidationFlags::all(), Capabilities::all());
        validator.subgroup_stages(ShaderStages::COMPUTE);
        validator.subgroup_operations(SubgroupOperationSet::all());
        validator
            .validate(&parsed)
            .unwrap_or_else(|e| panic!("{flags:?}: {}", e.emit_to_string(&text)));
        if flags.contains(&"--entry") {
            assert!(text.contains("override constants WORKGROUP_SIZE"), "{text}");
        }
    }

    let out = run(&[&"shader", &"--list"]);
    assert_success(&out);
    let list = String::from_utf8(out.stdout).unwrap();
    for word in [
        "--team",
        "subgroup",
        "--precision",
        "bf16",
        "--place",
        "in-place",
        "--access",
        "vec4-w64",
        "pairs",
        "split_write_main",
    ] {
        assert!(list.contains(word), "--list lacks {word}: {list}");
    }

    let bf16_in_place = run(&[&"shader", &"--precision", &"bf16", &"--place", &"in-place"]);
    assert_error(
        &bf16_in_place,
        &["no such shader variant", "bf16 has no in-place variant"],
    );
    assert!(bf16_in_place.stdout.is_empty());
    let no_entry = run(&[
        &"shader",
        &"--team",
        &"subgroup",
        &"--entry",
        &"split_stats_main",
    ]);
    assert_error(
        &no_entry,
        &[
            "--entry split_stats_main",
            "softmax_main, cross_entropy_main",
        ],
    );
    let unknown = run(&[&"shader", &"--access", &"vec8"]);
    assert_eq!(unknown.status.code(), Some(2), "{}", describe(&unknown));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("vec8"));
}
