//! The steps of docs/reductions.md (examples/reductions/*.wgsl): every file is validated by
//! naga, and every step is run on every adapter at small shapes and checked against the f64
//! reference, with NaN-poisoned outputs (`steps::check`).

#[path = "../examples/reductions/steps.rs"]
mod steps;

mod common;

use naga::valid::{Capabilities, ShaderStages, SubgroupOperationSet, ValidationFlags, Validator};
use steps::{Buffers, Data, Kind, Refusal, STEPS};

#[test]
fn the_guide_shows_every_step_in_full() {
    // docs/reductions.md embeds each file as it is: a change to a kernel must reach the guide.
    let guide = include_str!("../docs/reductions.md");
    for (fragment, file) in [
        (steps::COMMON, "common.wgsl"),
        (steps::THREAD_ROW, "thread_row.wgsl"),
        (steps::TREE, "tree.wgsl"),
    ] {
        assert!(
            guide.contains(fragment),
            "docs/reductions.md does not show {file} as it is now"
        );
    }
    for step in STEPS.iter().filter(|s| s.kind != Kind::Production) {
        assert!(
            guide.contains(step.source),
            "docs/reductions.md does not show {} as it is now",
            step.file
        );
    }
}

#[test]
fn every_step_validates_with_naga() {
    let mut validated = 0;
    for step in STEPS.iter().filter(|s| s.kind != Kind::Production) {
        // The module the host builds: the shared fragments, then the step's file.
        let source = step.module_source();
        let module = naga::front::wgsl::parse_str(&source).unwrap_or_else(|e| {
            panic!(
                "{} does not parse:\n{}",
                step.file,
                e.emit_to_string(&source)
            )
        });
        // Only step 4 may need subgroups: the others must run on adapters without them.
        let caps = if step.kind == Kind::Subgroup {
            Capabilities::SUBGROUP
        } else {
            Capabilities::empty()
        };
        let mut validator = Validator::new(ValidationFlags::all(), caps);
        validator.subgroup_stages(ShaderStages::COMPUTE);
        validator.subgroup_operations(SubgroupOperationSet::all());
        validator.validate(&module).unwrap_or_else(|e| {
            panic!(
                "{} fails validation:\n{}",
                step.file,
                e.emit_to_string(&source)
            )
        });
        for entry in step.entry_points {
            assert!(
                module.entry_points.iter().any(|ep| ep.name == *entry),
                "{} has no entry point {entry}",
                step.file
            );
        }
        let lines = step.source.lines().count();
        assert!(
            lines <= 90,
            "{} has {lines} lines: a step is one short file",
            step.file
        );
        validated += 1;
    }
    assert_eq!(validated, STEPS.len() - 1);
}

/// Shapes that cover: odd column counts (the vec4 steps refuse them), rows that end inside
/// the last workgroup of the thread-per-row steps (70 rows, 64 per workgroup), rows longer
/// than a workgroup's 256 lanes (and than 4 x 256), and split rows: with a chunk of 512
/// columns, 3000 columns are 6 chunks, the last one short.
const SHAPES: [(usize, usize); 5] = [(1, 3), (70, 7), (5, 1000), (3, 3000), (2, 5000)];
const TEST_CHUNK: u32 = 512;

#[test]
fn every_step_matches_the_reference_on_every_adapter() {
    let seed = common::Rng::new("reductions").next_u64();
    for ctx in common::contexts() {
        let mut ran = Vec::new();
        for (i, &(rows, cols)) in SHAPES.iter().enumerate() {
            let data = Data::random(rows, cols, seed.wrapping_add(i as u64));
            let bufs = Buffers::new(ctx, &data, TEST_CHUNK);
            for step in &STEPS {
                let what = format!("step {} at {rows}x{cols} on {}", step.name, ctx.describe());
                match steps::prepare(ctx, step, &bufs) {
                    Ok(prepared) => {
                        let e = steps::check(ctx, &prepared, &bufs, &data)
                            .unwrap_or_else(|e| panic!("{what}: {e}"));
                        assert!(
                            e.ok(),
                            "{what}: max error grad {:e}, loss {:e}",
                            e.grad,
                            e.loss
                        );
                        ran.push(step.name);
                    }
                    // The only refusals these shapes may meet: odd columns for the vec4
                    // steps, and no subgroups for step 4.
                    Err(Refusal::NeedsVec4) => assert!(cols % 4 != 0, "{what}: refused vec4"),
                    Err(Refusal::NoSubgroups(why)) => {
                        assert!(ctx.subgroup_size().is_none(), "{what}: refused subgroups");
                        eprintln!("{what}: not run: {why}");
                    }
                    Err(other) => panic!("{what}: refused: {other}"),
                }
            }
        }
        eprintln!("reductions on {}: ran {}", ctx.describe(), ran.join(" "));
        // Every step but the subgroup one ran on every adapter at the vec4 shapes (3 of them).
        for step in STEPS.iter().filter(|s| s.kind != Kind::Subgroup) {
            let n = ran.iter().filter(|&&name| name == step.name).count();
            assert!(
                n >= 3,
                "step {} ran at {n} shapes on {}",
                step.name,
                ctx.describe()
            );
        }
        if ctx.subgroup_size().is_some() {
            assert_eq!(ran.iter().filter(|&&n| n == "4").count(), 3);
        }
    }
}

#[test]
fn the_loop_limit_is_reported_not_run_into() {
    // On llvmpipe one invocation stops after 65,535 loop turns: one thread walking a row of
    // 30,000 columns three times (90,000 turns) must be refused there, not give wrong numbers.
    let data = Data::random(1, 30000, 1);
    for ctx in common::contexts() {
        let bufs = Buffers::new(ctx, &data, steps::SPLIT_CHUNK);
        let step1 = steps::prepare(ctx, &STEPS[0], &bufs);
        if steps::software(ctx) {
            assert!(
                matches!(step1, Err(Refusal::LoopLimit { turns: 90000 })),
                "step 1 at 1x30000 on {}: {:?}",
                ctx.describe(),
                step1.err()
            );
        } else {
            let e = steps::check(ctx, &step1.expect("step 1 runs on hardware"), &bufs, &data)
                .expect("step 1 runs");
            assert!(e.ok());
        }
    }
}
