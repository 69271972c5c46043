//! Autotune (`ContextOptions::autotune`): `Strategy::Auto` chosen by timing the candidates on
//! the adapter, once per shape bucket. Forced on at small shapes (software adapters default
//! to the table), on every adapter of the machine (lavapipe and llvmpipe GL in CI), each
//! test on contexts of its own so that its tuning counts are its own.

mod common;

use std::io::Write;
use std::path::PathBuf;

use common::{Rng, assert_output_close, open_contexts};
use ml_softmax::{
    Autotune, BackendChoice, ChoiceSource, Context, ContextOptions, CrossEntropyOptions,
    CrossEntropyOutput, Error, Precision, Strategy, reference,
};

/// Contexts on every adapter with `autotune` and poisoned outputs; says which ran.
fn tuned_contexts(what: &str, autotune: Autotune) -> Vec<Context> {
    let all = open_contexts(&ContextOptions {
        poison_outputs: true,
        autotune,
        ..Default::default()
    });
    let mut err = std::io::stderr();
    for ctx in &all {
        let _ = writeln!(err, "autotune {what} runs on: {}", ctx.describe());
    }
    all
}

/// What autotune may choose on `ctx`: the strategies of `Strategy::all` and the register
/// cache at 512 and 1024 lanes.
fn candidates(ctx: &Context) -> Vec<Strategy> {
    let mut all = Strategy::all(ctx.has_subgroups());
    all.extend([512, 1024].map(|lanes| Strategy::Cached { lanes }));
    all
}

/// A file in the system's temp folder, unique to this test and process, removed first.
fn temp_file(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "ml-softmax-autotune-{name}-{}.json",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    path
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn assert_same_bits(what: &str, a: &CrossEntropyOutput, b: &CrossEntropyOutput) {
    assert_eq!(a.loss.to_bits(), b.loss.to_bits(), "{what}: loss");
    assert_eq!(bits(&a.grad), bits(&b.grad), "{what}: gradient");
    assert_eq!(bits(&a.row_loss), bits(&b.row_loss), "{what}: row losses");
    assert_eq!(bits(&a.lse), bits(&b.lse), "{what}: lse");
}

/// One random case: logits, labels, and the f64 reference's output.
struct Case {
    rows: usize,
    cols: usize,
    z: Vec<f32>,
    labels: Vec<i64>,
    want: CrossEntropyOutput,
}

impl Case {
    fn new(rng: &mut Rng, rows: usize, cols: usize) -> Self {
        let z = rng.logits(rows * cols, 2.0);
        let labels = rng.labels(rows, cols);
        let want =
            reference::cross_entropy(&z, &labels, rows, cols, &CrossEntropyOptions::default())
                .unwrap();
        Self {
            rows,
            cols,
            z,
            labels,
            want,
        }
    }

    /// The host cross-entropy with `strategy`, checked against the reference.
    fn run(&self, ctx: &Context, strategy: Strategy) -> CrossEntropyOutput {
        let (rows, cols) = (self.rows, self.cols);
        let options = CrossEntropyOptions::default();
        let got = ctx
            .cross_entropy_with(&self.z, &self.labels, rows, cols, &options, strategy)
            .unwrap_or_else(|e| panic!("{} {rows}x{cols} {strategy}: {e}", ctx.describe()));
        let what = format!("{} {rows}x{cols} {strategy}", ctx.describe());
        assert_output_close(&what, &got, &self.want, 1.0 / rows as f32);
        got
    }
}

/// The choice is one of the candidates; `Auto` runs it (the same bits as naming it) and
/// matches the f64 reference; a second call, and another shape of the same bucket, give
/// the same choice without tuning again, and the second call the same bits.
#[test]
fn a_tuned_choice_is_a_candidate_sticks_and_matches_the_reference() {
    let mut rng = Rng::new("autotune choice");
    for ctx in tuned_contexts("choice", Autotune::On) {
        let name = ctx.describe();
        assert_eq!(ctx.autotune_stats().tunings, 0, "{name}");
        let case = Case::new(&mut rng, 33, 517);
        let first = ctx.autotune_choice(case.rows, case.cols, Precision::F32);
        assert_eq!(first.source, ChoiceSource::Tuned, "{name}");
        assert!(first.tuning.is_some_and(|t| !t.is_zero()), "{name}");
        assert!(
            candidates(&ctx).contains(&first.strategy),
            "{name}: {} is no candidate",
            first.strategy
        );
        assert_eq!(ctx.autotune_stats().tunings, 1, "{name}");

        let auto = case.run(&ctx, Strategy::Auto);
        let again = case.run(&ctx, Strategy::Auto);
        assert_same_bits(&format!("{name}: auto twice"), &auto, &again);
        let named = case.run(&ctx, first.strategy);
        assert_same_bits(
            &format!("{name}: auto vs {}", first.strategy),
            &auto,
            &named,
        );
        assert_eq!(
            ctx.resolve_strategy(Strategy::Auto, case.rows, case.cols),
            first.strategy
        );

        // 60 x 1000 is in the same bucket (64 x 1024, f32): no new tuning.
        let near = Case::new(&mut rng, 60, 1000);
        let choice = ctx.autotune_choice(near.rows, near.cols, Precision::F32);
        assert_eq!(choice.strategy, first.strategy, "{name}");
        near.run(&ctx, Strategy::Auto);
        assert_eq!(ctx.autotune_stats().tunings, 1, "{name}: tuned again");

        // bf16 is a bucket of its own, tuned through the half path.
        let (half, _) = common::to_half(&case.z, Precision::Bf16);
        let run_half = || {
            ctx.cross_entropy_half(&ml_softmax::HalfCrossEntropy {
                logits: &half,
                precision: Precision::Bf16,
                targets: ml_softmax::Targets::Classes(&case.labels),
                rows: case.rows,
                cols: case.cols,
                options: &CrossEntropyOptions::default(),
                strategy: Strategy::Auto,
            })
            .unwrap()
        };
        let (a, b) = (run_half(), run_half());
        assert_eq!(a.loss.to_bits(), b.loss.to_bits(), "{name}: bf16 loss");
        assert_eq!(a.grad, b.grad, "{name}: bf16 gradient bits");
        assert_eq!(
            bits(&a.row_loss),
            bits(&b.row_loss),
            "{name}: bf16 row losses"
        );
        assert_eq!(ctx.autotune_stats().tunings, 2, "{name}");
        let bf16 = ctx.autotune_choice(case.rows, case.cols, Precision::Bf16);
        assert!(candidates(&ctx).contains(&bf16.strategy), "{name}");
        // f16 without SHADER_F16 (llvmpipe GL) runs nowhere: the table, not a tuning.
        let f16 = ml_softmax::wgpu::Features::SHADER_F16;
        if !ctx.device().features().contains(f16) {
            let choice = ctx.autotune_choice(case.rows, case.cols, Precision::F16);
            assert_eq!(choice.source, ChoiceSource::Table, "{name}");
            assert_eq!(ctx.autotune_stats().tunings, 2, "{name}");
        }
        println!("{name}: f32 {}, bf16 {}", first.strategy, bf16.strategy);
    }
}

/// A persisted choice is read back by a new context: the same strategy, from the file, no
/// tuning, the same bits; the file keeps every adapter's entries.
#[test]
fn a_persisted_choice_is_reloaded_without_tuning() {
    let path = temp_file("persist");
    let mut rng = Rng::new("autotune persist");
    let case = Case::new(&mut rng, 20, 700);
    let firsts: Vec<_> = tuned_contexts("persist", Autotune::Persist(path.clone()))
        .iter()
        .map(|ctx| {
            let choice = ctx.autotune_choice(case.rows, case.cols, Precision::F32);
            assert_eq!(choice.source, ChoiceSource::Tuned, "{}", ctx.describe());
            (choice.strategy, case.run(ctx, Strategy::Auto))
        })
        .collect();
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let adapters = doc["adapters"].as_object().unwrap();
    assert_eq!(adapters.len(), firsts.len(), "one entry per adapter: {doc}");

    let again = tuned_contexts("persist (reloaded)", Autotune::Persist(path.clone()));
    assert_eq!(again.len(), firsts.len());
    for (ctx, (strategy, first)) in again.iter().zip(&firsts) {
        let name = ctx.describe();
        assert_eq!(ctx.autotune_stats().loaded, 1, "{name}");
        let choice = ctx.autotune_choice(case.rows, case.cols, Precision::F32);
        assert_eq!(choice.source, ChoiceSource::File, "{name}");
        assert_eq!(choice.strategy, *strategy, "{name}");
        let out = case.run(ctx, Strategy::Auto);
        assert_same_bits(&format!("{name}: reloaded"), first, &out);
        assert_eq!(ctx.autotune_stats().tunings, 0, "{name}: tuned again");
    }
    let _ = std::fs::remove_file(&path);
}

/// A file that is not an autotune file fails context creation with a typed error naming
/// it, and is left as it was; a missing file is created; entries of another adapter are
/// kept when this one's are written.
#[test]
fn a_corrupt_file_is_a_typed_error_and_left_alone() {
    for (name, text) in [
        ("garbage", "not json {"),
        (
            "foreign",
            "{\"format\": \"something else\", \"adapters\": {}}",
        ),
        (
            "truncated",
            "{\"format\": \"ml-softmax autotune 1\", \"adap",
        ),
    ] {
        let path = temp_file(name);
        std::fs::write(&path, text).unwrap();
        let options = ContextOptions {
            autotune: Autotune::Persist(path.clone()),
            ..Default::default()
        };
        let results = Context::each_adapter(BackendChoice::Auto, &options);
        assert!(!results.is_empty(), "no adapter: the test cannot run");
        for (info, result) in results {
            match result {
                Err(Error::AutotuneFile { path: p, problem }) => {
                    assert_eq!(p, path.display().to_string());
                    println!("{} ({name}): {problem}", info.name);
                }
                Err(e) => panic!("{} ({name}): another error: {e}", info.name),
                Ok(_) => panic!("{} ({name}): a corrupt file was accepted", info.name),
            }
        }
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            text,
            "{name}: changed"
        );
        let _ = std::fs::remove_file(&path);
    }

    // A file with a malformed entry under a key that is not this adapter's is not read.
    let path = temp_file("other-adapter");
    let other = "{\"format\": \"ml-softmax autotune 1\", \"adapters\": \
                 {\"some other GPU\": {\"8x8 f32\": {\"strategy\": \"wg8\"}}}}";
    std::fs::write(&path, other).unwrap();
    let mut rng = Rng::new("autotune other adapter");
    let case = Case::new(&mut rng, 3, 40);
    for ctx in tuned_contexts("other-adapter", Autotune::Persist(path.clone())) {
        assert_eq!(ctx.autotune_stats().loaded, 0);
        case.run(&ctx, Strategy::Auto);
        assert_eq!(ctx.autotune_stats().tunings, 1);
    }
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        doc["adapters"]["some other GPU"]["8x8 f32"]["strategy"], "wg8",
        "another adapter's entry was dropped: {doc}"
    );
    let _ = std::fs::remove_file(&path);
}

/// `Off` is exactly the table (`Strategy::resolve`) and never tunes; the default tunes on
/// hardware adapters only.
#[test]
fn off_is_the_table_and_the_default_tunes_on_hardware_only() {
    let shapes = [(1, 3), (33, 517), (4096, 1000), (8, 262_144), (3, 40_000)];
    for ctx in tuned_contexts("off", Autotune::Off) {
        let info = ctx.adapter_info();
        for (rows, cols) in shapes {
            let table = Strategy::Auto.resolve(rows, cols, ctx.subgroup_size(), info.device_type);
            for precision in [Precision::F32, Precision::Bf16] {
                let choice = ctx.autotune_choice(rows, cols, precision);
                assert_eq!(choice.strategy, table, "{} {rows}x{cols}", ctx.describe());
                assert_eq!(choice.source, ChoiceSource::Table);
            }
            assert_eq!(ctx.resolve_strategy(Strategy::Auto, rows, cols), table);
        }
        let mut rng = Rng::new("autotune off");
        Case::new(&mut rng, 5, 300).run(&ctx, Strategy::Auto);
        assert_eq!(ctx.autotune_stats().tunings, 0);
    }
    for ctx in tuned_contexts("default", Autotune::default()) {
        let software = ctx.adapter_info().device_type == ml_softmax::wgpu::DeviceType::Cpu;
        let choice = ctx.autotune_choice(2, 50, Precision::F32);
        let want = if software {
            ChoiceSource::Table
        } else {
            ChoiceSource::Tuned
        };
        assert_eq!(choice.source, want, "{}", ctx.describe());
    }
}
