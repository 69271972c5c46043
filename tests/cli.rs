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

use approx::relative_eq;
use ml_softmax::npy::{self, NpyArray, NpyData};
use ml_softmax::{CrossEntropyOptions, Reduction, reference};

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

/// Fixed logits in about [-4, 4] (a small xorshift, so the data never changes).
fn logits(n: usize) -> Vec<f32> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 8.0
        })
        .collect()
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

#[test]
fn error_float64_logits() {
    let dir = Scratch::new("f64");
    let (_, labels) = valid_inputs(&dir);
    let data: Vec<u8> = (0..ROWS * COLS)
        .flat_map(|i| (i as f64).to_le_bytes())
        .collect();
    let f64_file = dir.bytes(
        "f64.npy",
        &raw_npy(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (5, 7), }",
            &data,
        ),
    );
    xent_fails(
        &dir,
        &f64_file,
        &labels,
        &[],
        &["f64.npy", "float64", "float32"],
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
        &["label_smoothing", "2", "[0, 1]"],
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
    let g = ml_softmax::npy::read(&grad).unwrap();
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

/// The value of `"key": ...` in one line of the bench's JSON (numbers and plain strings).
fn json_field<'a>(line: &'a str, key: &str) -> &'a str {
    let tag = format!("\"{key}\": ");
    let start = line
        .find(&tag)
        .unwrap_or_else(|| panic!("no {key} in {line}"))
        + tag.len();
    let rest = &line[start..];
    let value = if let Some(quoted) = rest.strip_prefix('"') {
        &quoted[..quoted.find('"').unwrap()]
    } else {
        &rest[..rest.find([',', '}']).unwrap()]
    };
    value.trim()
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
    let lines: Vec<&str> = text.lines().filter(|l| l.contains('{')).collect();
    // Where the kernels move 64-bit words (software adapters with SHADER_INT64), the copy in
    // 32-bit words is reported too.
    let words = json_field(lines[0], "words").to_string();
    let kernels: &[&str] = match words.as_str() {
        "64" => &["copy", "copy-u32", "auto", "wg1", "wg8"],
        "32" => &["copy", "auto", "wg1", "wg8"],
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
    }
    let plot = fs::read_to_string(&svg).unwrap();
    assert!(plot.starts_with("<svg") && plot.trim_end().ends_with("</svg>"));
    for name in ["copy", "auto", "wg1", "wg8"] {
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
