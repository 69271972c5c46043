//! Fused linear + cross-entropy (`Context::linear_cross_entropy`) on every adapter, against
//! the f64 reference: logits `hidden @ classifier^T + bias` in f64, the reference
//! cross-entropy's loss and gradient on them, then `d_hidden = G C`, `d_classifier = G^T H`,
//! `d_bias = colsum(G)` in f64. Fresh random data each run (the seed is printed); outputs
//! are NaN-poisoned first, so an element the kernels never write fails.

mod common;
#[path = "common/linear.rs"]
mod linear_reference;

use common::{Rng, assert_close, assert_within, contexts, open_contexts, to_half};
use linear_reference::{Case, Expected, expected};
use ml_softmax::{
    Context, ContextOptions, CrossEntropyOptions, Error, LinearCrossEntropy,
    LinearCrossEntropyOutput, LinearDeviceBuffers, LinearProduct, Matrix, Precision, Reduction,
    wgpu,
};

/// A random problem: logits with a spread of about 2, neither flat nor one-hot.
fn random_case(rng: &mut Rng, rows: usize, dim: usize, vocab: usize, bias: bool) -> Case {
    // Scaled so the logits have a spread of about 2: softmax neither flat nor one-hot.
    let sigma = 1.5 / (dim as f64).sqrt();
    Case {
        rows,
        dim,
        vocab,
        hidden: rng.logits(rows * dim, 1.0),
        classifier: rng.logits(vocab * dim, sigma),
        bias: bias.then(|| rng.logits(vocab, 0.5)),
        labels: rng.labels(rows, vocab),
    }
}

/// Runs `case` on `ctx` and compares everything with the reference, the gradients within
/// `expected`'s per-element tolerances (tests/common/linear.rs: the f32 sums' error and
/// `exp`'s).
fn check(ctx: &Context, what: &str, case: &Case, options: &CrossEntropyOptions) {
    check_with(ctx, ctx.linear_product(), what, case, options);
}

/// [`check`] with the given product.
fn check_with(
    ctx: &Context,
    product: LinearProduct,
    what: &str,
    case: &Case,
    options: &CrossEntropyOptions,
) {
    let what = format!("{what} ({product:?} product) on {}", ctx.describe());
    let gpu = ctx
        .linear_cross_entropy_using(&case.call(options), product)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    compare(&what, &gpu, case, options);
}

/// Says on the stderr handle (past the harness's capture) which products run on `ctx`.
fn announce_products(ctx: &Context) -> Vec<LinearProduct> {
    use std::io::Write;
    let products = ctx.linear_products();
    let _ = writeln!(
        std::io::stderr(),
        "linear products run on {}: {products:?}",
        ctx.describe()
    );
    products
}

/// The loss and both weight gradients of `gpu` against the reference's `want`.
fn assert_loss_and_grads_close(what: &str, gpu: &LinearCrossEntropyOutput, want: &Expected) {
    assert_close(
        &format!("{what} loss"),
        &[gpu.loss],
        &[want.out.loss],
        1e-5,
        1e-4,
    );
    assert_within(
        &format!("{what} grad_hidden"),
        &gpu.grad_hidden,
        &want.grad_hidden,
        |i| want.grad_hidden_tol[i],
    );
    assert_within(
        &format!("{what} grad_classifier"),
        &gpu.grad_classifier,
        &want.grad_classifier,
        |i| want.grad_classifier_tol[i],
    );
}

/// [`check`]'s comparison of one call's output with the reference.
fn compare(what: &str, gpu: &LinearCrossEntropyOutput, case: &Case, options: &CrossEntropyOptions) {
    let want = expected(case, options);
    assert_close(&format!("{what} lse"), &gpu.lse, &want.out.lse, 1e-4, 1e-4);
    assert_close(
        &format!("{what} row_loss"),
        &gpu.row_loss,
        &want.out.row_loss,
        1e-4,
        1e-4,
    );
    assert_loss_and_grads_close(what, gpu, &want);
    match (&gpu.grad_bias, &case.bias) {
        (Some(gb), Some(_)) => {
            assert_within(&format!("{what} grad_bias"), gb, &want.grad_bias, |i| {
                want.grad_bias_tol[i]
            })
        }
        (None, None) => {}
        _ => panic!("{what}: grad_bias present without a bias, or missing with one"),
    }
}

/// Every option and reduction, with and without weights: the combinations the tests run.
fn option_sets(rng: &mut Rng, vocab: usize) -> Vec<(&'static str, CrossEntropyOptions)> {
    let weight: Vec<f32> = (0..vocab).map(|_| rng.uniform() as f32 * 2.0).collect();
    vec![
        ("defaults", CrossEntropyOptions::default()),
        (
            "sum, weights",
            CrossEntropyOptions {
                reduction: Reduction::Sum,
                weight: Some(weight.clone()),
                ..Default::default()
            },
        ),
        (
            "none, smoothing",
            CrossEntropyOptions {
                reduction: Reduction::None,
                label_smoothing: 0.1,
                ..Default::default()
            },
        ),
        (
            "mean, every option",
            CrossEntropyOptions {
                reduction: Reduction::Mean,
                ignore_index: 7,
                label_smoothing: 0.2,
                weight: Some(weight),
                z_loss: 1e-3,
                softcap: 3.0,
            },
        ),
        (
            "sum, z-loss, softcap",
            CrossEntropyOptions {
                reduction: Reduction::Sum,
                z_loss: 0.01,
                softcap: 1.5,
                ..Default::default()
            },
        ),
    ]
}

/// Marks every third row ignored (under the options' ignore index).
fn ignore_some(case: &mut Case, options: &CrossEntropyOptions) {
    for r in (0..case.rows).step_by(3) {
        case.labels[r] = options.ignore_index;
    }
}

#[test]
fn linear_matches_reference_on_random_shapes_and_every_option() {
    let mut rng = Rng::new("linear_matches_reference_on_random_shapes_and_every_option");
    // V not a multiple of the 2048-column block (2100), nor of the 64-wide tile (300, 2100);
    // dim not a multiple of the 16-step (1, 37); rows past one 64-row tile.
    // Every product the adapter has (the subgroup one on lavapipe, the tiled one everywhere).
    let shapes = [(1, 1, 3), (37, 5, 300), (70, 37, 2100), (130, 64, 97)];
    for ctx in contexts() {
        for product in announce_products(ctx) {
            for &(rows, dim, vocab) in &shapes {
                for (name, options) in option_sets(&mut rng, vocab) {
                    for bias in [false, true] {
                        let mut case = random_case(&mut rng, rows, dim, vocab, bias);
                        if rows > 1 {
                            ignore_some(&mut case, &options);
                        }
                        let what = format!("{rows}x{dim}x{vocab} {name} bias={bias}");
                        check_with(ctx, product, &what, &case, &options);
                    }
                }
            }
        }
    }
}

#[test]
fn linear_every_row_ignored_gives_zero_loss_and_gradients() {
    let mut rng = Rng::new("linear_every_row_ignored_gives_zero_loss_and_gradients");
    for ctx in contexts() {
        let mut case = random_case(&mut rng, 9, 8, 50, true);
        case.labels = vec![-100; 9];
        let options = CrossEntropyOptions::default();
        check(ctx, "all ignored", &case, &options);
        let out = ctx.linear_cross_entropy(&case.call(&options)).unwrap();
        assert_eq!(out.loss, 0.0);
        assert!(out.grad_hidden.iter().all(|&g| g == 0.0));
        assert!(out.grad_classifier.iter().all(|&g| g == 0.0));
    }
}

#[test]
fn linear_chunks_past_one_binding_give_the_same_results() {
    let mut rng = Rng::new("linear_chunks_past_one_binding_give_the_same_results");
    // 256 KiB per binding: 300 rows x 40 x 1000 runs as 3 chunks of <= 128 rows and 2 blocks
    // of <= 512 columns (the unit test of `plan` checks the cut).
    let small = open_contexts(&ContextOptions {
        max_chunk_bytes: Some(262_144),
        poison_outputs: true,
        ..Default::default()
    });
    let case = random_case(&mut rng, 300, 40, 1000, true);
    let options = CrossEntropyOptions {
        label_smoothing: 0.05,
        z_loss: 1e-3,
        ..Default::default()
    };
    for (ctx, whole) in small.iter().zip(contexts()) {
        check(ctx, "chunked", &case, &options);
        // Chunked and whole runs agree to rounding (they sum d_classifier in another order).
        let a = ctx.linear_cross_entropy(&case.call(&options)).unwrap();
        let b = whole.linear_cross_entropy(&case.call(&options)).unwrap();
        assert_close("chunked vs whole loss", &[a.loss], &[b.loss], 1e-6, 1e-5);
        assert_eq!(a.grad_hidden.len(), b.grad_hidden.len());
    }
}

#[test]
fn linear_is_bit_reproducible() {
    let mut rng = Rng::new("linear_is_bit_reproducible");
    let case = random_case(&mut rng, 100, 24, 2300, true);
    let options = CrossEntropyOptions::default();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for ctx in contexts() {
        let a = ctx.linear_cross_entropy(&case.call(&options)).unwrap();
        let b = ctx.linear_cross_entropy(&case.call(&options)).unwrap();
        assert_eq!(a.loss.to_bits(), b.loss.to_bits());
        assert_eq!(bits(&a.grad_hidden), bits(&b.grad_hidden));
        assert_eq!(bits(&a.grad_classifier), bits(&b.grad_classifier));
        // The subgroup product adds along k in the tiled product's order: the same bits.
        if ctx.linear_products().contains(&LinearProduct::Subgroup) {
            let run = |product| {
                ctx.linear_cross_entropy_using(&case.call(&options), product)
                    .unwrap()
            };
            let (t, s) = (run(LinearProduct::Tiled), run(LinearProduct::Subgroup));
            assert_eq!(t.loss.to_bits(), s.loss.to_bits(), "{}", ctx.describe());
            assert_eq!(bits(&t.lse), bits(&s.lse));
            assert_eq!(bits(&t.grad_hidden), bits(&s.grad_hidden));
            assert_eq!(bits(&t.grad_classifier), bits(&s.grad_classifier));
        }
    }
}

#[test]
fn linear_half_inputs_accumulate_in_f32() {
    let mut rng = Rng::new("linear_half_inputs_accumulate_in_f32");
    let options = CrossEntropyOptions {
        label_smoothing: 0.1,
        ..Default::default()
    };
    for ctx in contexts() {
        for precision in [Precision::F16, Precision::Bf16] {
            let mut case = random_case(&mut rng, 45, 33, 700, true);
            // The reference sees the half values exactly as the GPU does.
            let (h_bits, h) = to_half(&case.hidden, precision);
            let (c_bits, c) = to_half(&case.classifier, precision);
            case.hidden = h;
            case.classifier = c;
            let call = LinearCrossEntropy {
                hidden: Matrix::Half(&h_bits, precision),
                classifier: Matrix::Half(&c_bits, precision),
                ..case.call(&options)
            };
            let gpu = ctx.linear_cross_entropy(&call).unwrap();
            let want = expected(&case, &options);
            let what = format!("{precision:?} on {}", ctx.describe());
            assert_loss_and_grads_close(&what, &gpu, &want);
        }
    }
}

/// `parts` laid out in one buffer's bytes, each at a multiple of `align` after at least
/// `align` bytes of `fill`; returns the bytes and each part's byte range.
fn layout(parts: &[&[u8]], align: usize, fill: u8) -> (Vec<u8>, Vec<std::ops::Range<u64>>) {
    let mut bytes = Vec::new();
    let mut ranges = Vec::new();
    for part in parts {
        let start = (bytes.len() + align).next_multiple_of(align);
        bytes.resize(start, fill);
        bytes.extend_from_slice(part);
        bytes.resize(bytes.len().next_multiple_of(4), fill);
        ranges.push(start as u64..(start + part.len()) as u64);
    }
    bytes.resize(bytes.len() + align, fill);
    (bytes, ranges)
}

#[test]
fn linear_device_api_takes_slices_at_offsets_inside_larger_buffers() {
    let mut rng = Rng::new("linear_device_api_takes_slices_at_offsets_inside_larger_buffers");
    // 300 x 40 x 1000 under a 256 KiB binding: 3 chunks of rows and 2 blocks of columns,
    // each bound at its offset inside the caller's slice. Hidden is bf16 (2-byte elements).
    let small = open_contexts(&ContextOptions {
        max_chunk_bytes: Some(262_144),
        ..Default::default()
    });
    let options = CrossEntropyOptions {
        label_smoothing: 0.1,
        ..Default::default()
    };
    // (contexts() prints the adapters the GPU tests run on; these are the same ones.)
    assert_eq!(small.len(), contexts().len());
    for ctx in &small {
        let what = format!("device slices on {}", ctx.describe());
        let mut case = random_case(&mut rng, 300, 40, 1000, true);
        let (h_bits, h) = to_half(&case.hidden, Precision::Bf16);
        case.hidden = h;
        let align = ctx.device().limits().min_storage_buffer_offset_alignment as usize;
        // Inputs in one buffer between bytes of 0x7f (f32 3.4e38, bf16 pairs of 3.4e38), so a
        // kernel reading past its slice would get huge logits; outputs in another, every
        // byte NaN first, so an element written outside its slice, or not written, shows.
        let bias = case.bias.as_deref().unwrap();
        let (input, at) = layout(
            &[
                bytemuck::cast_slice(&h_bits),
                bytemuck::cast_slice(&case.classifier),
                bytemuck::cast_slice(bias),
            ],
            align,
            0x7f,
        );
        let (n_h, n_c, n_b) = (300 * 40 * 4, 1000 * 40 * 4, 1000 * 4);
        let zeros = |n: usize| vec![0u8; n];
        let (mut poisoned, out_at) = layout(&[&zeros(n_h), &zeros(n_c), &zeros(n_b)], align, 0);
        poisoned.fill(0xff);
        use wgpu::BufferUsages as U;
        let buffer = |label, bytes: &[u8], usage| {
            let b = ctx.create_buffer(label, bytes.len() as u64, usage).unwrap();
            ctx.queue().write_buffer(&b, 0, bytes);
            b
        };
        let inputs = buffer("inputs", &input, U::STORAGE | U::COPY_DST);
        let outputs = buffer("outputs", &poisoned, U::STORAGE | U::COPY_DST | U::COPY_SRC);
        let bufs = LinearDeviceBuffers {
            hidden: inputs.slice(at[0].clone()),
            hidden_precision: Precision::Bf16,
            classifier: inputs.slice(at[1].clone()),
            classifier_precision: Precision::F32,
            bias: Some(inputs.slice(at[2].clone())),
            grad_hidden: outputs.slice(out_at[0].clone()),
            grad_classifier: outputs.slice(out_at[1].clone()),
            grad_bias: Some(outputs.slice(out_at[2].clone())),
        };
        let (rows, dim, vocab) = (case.rows, case.dim, case.vocab);
        let mut gpu = ctx
            .linear_cross_entropy_device(&bufs, &case.labels, rows, dim, vocab, &options)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let all = ctx.read_f32(outputs.slice(..)).unwrap();
        let words = |r: &std::ops::Range<u64>| &all[r.start as usize / 4..r.end as usize / 4];
        gpu.grad_hidden = words(&out_at[0]).to_vec();
        gpu.grad_classifier = words(&out_at[1]).to_vec();
        gpu.grad_bias = Some(words(&out_at[2]).to_vec());
        compare(&what, &gpu, &case, &options);
        // Nothing outside the three output slices was written.
        let inside = |i: usize| {
            out_at
                .iter()
                .any(|r| (r.start..r.end).contains(&(4 * i as u64)))
        };
        for (i, x) in all.iter().enumerate() {
            assert!(
                inside(i) || x.to_bits() == u32::MAX,
                "{what}: byte {} outside the output slices was written",
                4 * i
            );
        }

        // `bad` refused with a typed error naming the buffer `name`.
        let refused = |bad: &LinearDeviceBuffers, name: &str| {
            let err = ctx
                .linear_cross_entropy_device(bad, &case.labels, rows, dim, vocab, &options)
                .unwrap_err();
            assert!(
                matches!(&err, Error::BadBuffer { what: w, .. } if *w == name),
                "{what}: {err}"
            );
        };
        // A slice off the storage-offset alignment is a typed error naming it.
        if align > 4 {
            let start = at[1].start + 4;
            let bad = LinearDeviceBuffers {
                classifier: inputs.slice(start..start + at[1].end - at[1].start),
                ..bufs
            };
            refused(&bad, "classifier");
        } else {
            eprintln!("{what}: offset alignment is 4 bytes: no misaligned f32 offset exists");
        }
        // A slice too short for its shape, too.
        let bad = LinearDeviceBuffers {
            grad_hidden: outputs.slice(out_at[0].start..out_at[0].end - 4),
            ..bufs
        };
        refused(&bad, "grad_hidden");
    }
}

#[test]
fn linear_bad_input_is_a_typed_error() {
    let ctx = &contexts()[0];
    let mut rng = Rng::new("linear_bad_input_is_a_typed_error");
    let case = random_case(&mut rng, 4, 6, 10, true);
    let options = CrossEntropyOptions::default();
    let ok = case.call(&options);
    // A classifier of another hidden size: its length does not match vocab * dim.
    let wrong_dim = rng.logits(10 * 5, 1.0);
    let bad = LinearCrossEntropy {
        classifier: Matrix::F32(&wrong_dim),
        ..ok
    };
    assert_eq!(
        ctx.linear_cross_entropy(&bad).unwrap_err(),
        Error::LengthMismatch {
            what: "classifier",
            expected: 60,
            actual: 50
        }
    );
    let short = &case.hidden[..23];
    let bad = LinearCrossEntropy {
        hidden: Matrix::F32(short),
        ..ok
    };
    assert!(matches!(
        ctx.linear_cross_entropy(&bad),
        Err(Error::LengthMismatch { what: "hidden", .. })
    ));
    let bias = [0.0f32; 9];
    let bad = LinearCrossEntropy {
        bias: Some(&bias),
        ..ok
    };
    assert!(matches!(
        ctx.linear_cross_entropy(&bad),
        Err(Error::LengthMismatch { what: "bias", .. })
    ));
    let bad = LinearCrossEntropy {
        labels: &[0, 1, 2],
        ..ok
    };
    assert!(matches!(
        ctx.linear_cross_entropy(&bad),
        Err(Error::LengthMismatch { what: "labels", .. })
    ));
    let bad = LinearCrossEntropy {
        labels: &[0, 10, 2, 3],
        ..ok
    };
    assert!(matches!(
        ctx.linear_cross_entropy(&bad),
        Err(Error::LabelOutOfRange {
            row: 1,
            value: 10,
            ..
        })
    ));
    let bad = LinearCrossEntropy { rows: 0, ..ok };
    assert!(matches!(
        ctx.linear_cross_entropy(&bad),
        Err(Error::EmptyShape { .. })
    ));
    let smoothing = CrossEntropyOptions {
        label_smoothing: 1.5,
        ..Default::default()
    };
    let bad = LinearCrossEntropy {
        options: &smoothing,
        ..ok
    };
    assert!(matches!(
        ctx.linear_cross_entropy(&bad),
        Err(Error::InvalidOption {
            name: "label_smoothing",
            ..
        })
    ));
    let bits = vec![0u16; 24];
    let bad = LinearCrossEntropy {
        hidden: Matrix::Half(&bits, Precision::F32),
        ..ok
    };
    assert!(matches!(
        ctx.linear_cross_entropy(&bad),
        Err(Error::InvalidOption {
            name: "precision",
            ..
        })
    ));
}

/// With the experimental opt-in, each adapter runs the cooperative-matrix product where its
/// device has the feature and its plain one (subgroup or tiled) elsewhere; the test says which on every adapter
/// (on the stderr handle, past the harness's capture) and checks whichever ran against the
/// reference. No adapter of this project's machines has the feature, so there it checks the
/// plain path and says "cooperative path not available on ...": the cooperative shader is
/// only validated (the naga test below), never run. Without the opt-in (every other test's
/// contexts) the cooperative product is never chosen, and refused when asked for.
#[test]
fn linear_cooperative_path_where_offered_else_plain() {
    use std::io::Write;
    let mut rng = Rng::new("linear_cooperative_path_where_offered_else_plain");
    for ctx in contexts() {
        let products = ctx.linear_products();
        assert!(!products.contains(&LinearProduct::CooperativeMatrix));
        assert_eq!(products.last(), Some(&LinearProduct::Tiled));
        let tiny = random_case(&mut rng, 2, 2, 2, false);
        let options = CrossEntropyOptions::default();
        let coop = LinearProduct::CooperativeMatrix;
        assert!(
            matches!(
                ctx.linear_cross_entropy_using(&tiny.call(&options), coop),
                Err(Error::Unsupported { .. })
            ),
            "the cooperative product without the opt-in on {}",
            ctx.describe()
        );
    }
    // SAFETY: a test accepts wgpu's experimental-feature terms; no adapter here has it.
    let opt_in = unsafe { ml_softmax::CooperativeMatrixOptIn::on() };
    let with_coop = open_contexts(&ContextOptions {
        cooperative_matrix: opt_in,
        poison_outputs: true,
        ..Default::default()
    });
    let options = CrossEntropyOptions {
        label_smoothing: 0.1,
        softcap: 5.0,
        ..Default::default()
    };
    for ctx in &with_coop {
        let refusal = ctx.cooperative_matrix_refusal();
        let product = ctx.linear_product();
        let line = match &refusal {
            None => format!("cooperative path runs on {}", ctx.describe()),
            Some(why) => format!(
                "cooperative path not available on {} ({why}): checking the {product:?} path",
                ctx.describe()
            ),
        };
        let _ = writeln!(std::io::stderr(), "{line}");
        assert_eq!(
            product == LinearProduct::CooperativeMatrix,
            refusal.is_none()
        );
        // Partial tiles in every dimension, d not a multiple of either product's k-step.
        for &(rows, dim, vocab) in &[(70, 37, 300), (5, 3, 130)] {
            let mut case = random_case(&mut rng, rows, dim, vocab, true);
            ignore_some(&mut case, &options);
            check(
                ctx,
                &format!("{product:?} {rows}x{dim}x{vocab}"),
                &case,
                &options,
            );
        }
    }
}

/// naga's validator for the linear kernels with `product`: core WGSL plus unpack2x16float (f16
/// inputs), which naga files under SHADER_FLOAT16_IN_FLOAT32 and every wgpu backend grants
/// (GL included); the subgroup product also needs the subgroup builtins and shuffles, the
/// cooperative one cooperative matrices and the subgroup builtins.
fn linear_validator(product: LinearProduct) -> naga::valid::Validator {
    use naga::valid::{
        Capabilities, ShaderStages, SubgroupOperationSet, ValidationFlags, Validator,
    };
    let mut caps = Capabilities::SHADER_FLOAT16_IN_FLOAT32;
    match product {
        LinearProduct::Tiled => {}
        LinearProduct::Subgroup => caps |= Capabilities::SUBGROUP,
        LinearProduct::CooperativeMatrix => {
            caps |= Capabilities::COOPERATIVE_MATRIX | Capabilities::SUBGROUP;
        }
    }
    let mut v = Validator::new(ValidationFlags::all(), caps);
    v.subgroup_stages(ShaderStages::COMPUTE);
    v.subgroup_operations(SubgroupOperationSet::SHUFFLE);
    v
}

/// Every product's module parses and validates, and every entry point with every pair of
/// storage kinds specialises, validates again and is written as SPIR-V (Vulkan) and MSL
/// (Metal 2.3: simdgroup matrices); the tiled and subgroup ones also as HLSL (DX12, shader
/// model 6.2: wave operations), the tiled one as GLSL (GL, which has no subgroups in wgpu).
/// naga 30's HLSL and GLSL writers have no cooperative matrices (HLSL's panics
/// `unimplemented!`), so the cooperative module is written for the two backends wgpu runs it
/// on. A shader error here fails `cargo test` on any machine, with or without an adapter
/// that has the feature.
#[test]
fn linear_shaders_validate_and_translate_for_every_product_and_storage_kind() {
    use LinearProduct::{CooperativeMatrix, Subgroup, Tiled};
    use naga::back::{glsl, hlsl, msl, spv};
    for product in [Tiled, Subgroup, CooperativeMatrix] {
        let source = ml_softmax::linear::shader_source(product);
        let module = naga::front::wgsl::parse_str(&source)
            .unwrap_or_else(|e| panic!("{product:?}: {}", e.emit_to_string(&source)));
        let info = linear_validator(product)
            .validate(&module)
            .unwrap_or_else(|e| panic!("{product:?}: {}", e.emit_to_string(&source)));
        let coop = product == LinearProduct::CooperativeMatrix;
        let mut written = 0;
        for entry in ["block_logits", "matmul", "block_stats", "bias_grad"] {
            for (a, b) in (0..3u32).flat_map(|a| (0..3u32).map(move |b| (a, b))) {
                let what = format!("{product:?} {entry} A_KIND {a} B_KIND {b}");
                let constants = [
                    ("A_KIND".to_string(), f64::from(a)),
                    ("B_KIND".to_string(), f64::from(b)),
                ]
                .into_iter()
                .collect();
                let stage = naga::ShaderStage::Compute;
                let (special, special_info) = naga::back::pipeline_constants::process_overrides(
                    &module,
                    &info,
                    Some((stage, entry)),
                    &constants,
                )
                .unwrap_or_else(|e| panic!("{what}: {e:?}"));
                linear_validator(product)
                    .validate(&special)
                    .unwrap_or_else(|e| panic!("{what}: {e:?}"));
                let spv_pipeline = spv::PipelineOptions {
                    shader_stage: stage,
                    entry_point: entry.to_string(),
                };
                let words = spv::write_vec(
                    &special,
                    &special_info,
                    &spv::Options::default(),
                    Some(&spv_pipeline),
                )
                .unwrap_or_else(|e| panic!("{what}: SPIR-V: {e}"));
                // OpCapability CooperativeMatrixKHR (opcode 17, 2 words; capability 6022).
                // (block_stats and bias_grad do not use the product.)
                let tiled_entry = entry == "block_logits" || entry == "matmul";
                let coop_cap = words.windows(2).any(|w| w == [(2 << 16) | 17, 6022]);
                assert_eq!(
                    coop_cap,
                    coop && tiled_entry,
                    "{what}: SPIR-V's CooperativeMatrixKHR capability"
                );
                let msl_options = msl::Options {
                    lang_version: (2, 3),
                    ..Default::default()
                };
                let msl_pipeline = msl::PipelineOptions {
                    entry_point: Some((stage, entry.to_string())),
                    ..Default::default()
                };
                let (text, _) =
                    msl::write_string(&special, &special_info, &msl_options, &msl_pipeline)
                        .unwrap_or_else(|e| panic!("{what}: MSL: {e}"));
                assert!(text.contains("kernel"), "{what}: no kernel in the MSL");
                if coop && tiled_entry {
                    assert!(
                        text.contains("simdgroup"),
                        "{what}: no simdgroup matrix in the MSL"
                    );
                }
                written += 2;
                if coop {
                    continue;
                }
                let hlsl_options = hlsl::Options {
                    shader_model: hlsl::ShaderModel::V6_2,
                    ..Default::default()
                };
                let hlsl_pipeline = hlsl::PipelineOptions {
                    entry_point: Some((stage, entry.to_string())),
                };
                let mut text = String::new();
                hlsl::Writer::new(&mut text, &hlsl_options, &hlsl_pipeline)
                    .write(&special, &special_info, None)
                    .unwrap_or_else(|e| panic!("{what}: HLSL: {e}"));
                written += 1;
                if product == Subgroup {
                    continue;
                }
                let glsl_options = glsl::Options {
                    version: glsl::Version::Embedded {
                        version: 310,
                        is_webgl: false,
                    },
                    ..Default::default()
                };
                let glsl_pipeline = glsl::PipelineOptions {
                    shader_stage: stage,
                    entry_point: entry.to_string(),
                    multiview: None,
                };
                let mut text = String::new();
                glsl::Writer::new(
                    &mut text,
                    &special,
                    &special_info,
                    &glsl_options,
                    &glsl_pipeline,
                    naga::proc::BoundsCheckPolicies::default(),
                )
                .and_then(|mut w| w.write().map(|_| ()))
                .unwrap_or_else(|e| panic!("{what}: GLSL: {e}"));
                written += 1;
            }
        }
        println!("{product:?}: 36 specialisations validated, {written} translations written");
    }
}
