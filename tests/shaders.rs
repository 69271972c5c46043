//! Every shader module and every specialisation the crate builds is parsed and validated by
//! naga (wgpu's shader compiler) and translated to SPIR-V (Vulkan) and GLSL (GL), with no GPU;
//! every module also to Metal's MSL and DX12's HLSL, the backends claimed but not run here.
//! A shader error fails `cargo test` here even on a machine without an adapter.

use ml_softmax::kernels::{
    Io, ModuleKey, PipelineKey, Precision, ShaderVariant, TeamKind, all_pipeline_keys,
};
use naga::valid::{Capabilities, ShaderStages, SubgroupOperationSet, ValidationFlags, Validator};

fn validator_for(module: ModuleKey) -> Validator {
    let mut caps = Capabilities::empty();
    if module.needs_subgroups() {
        caps |= Capabilities::SUBGROUP;
    }
    if module.needs_f16() {
        // unpack2x16float / pack2x16float (io_f16x4.wgsl): every adapter with f16 has them.
        caps |= Capabilities::SHADER_FLOAT16 | Capabilities::SHADER_FLOAT16_IN_FLOAT32;
    }
    if module.needs_int64() {
        caps |= Capabilities::SHADER_INT64;
    }
    let subgroups = module.needs_subgroups();
    let mut v = Validator::new(ValidationFlags::all(), caps);
    if subgroups {
        v.subgroup_stages(ShaderStages::COMPUTE);
        v.subgroup_operations(SubgroupOperationSet::all());
    }
    v
}

fn parse(module: ModuleKey) -> naga::Module {
    naga::front::wgsl::parse_str(&module.source()).unwrap_or_else(|e| {
        panic!(
            "{} does not parse:\n{}",
            module.label(),
            e.emit_to_string(&module.source())
        )
    })
}

#[test]
fn every_module_parses_and_validates() {
    for module in ModuleKey::all() {
        let parsed = parse(module);
        validator_for(module).validate(&parsed).unwrap_or_else(|e| {
            panic!(
                "{} fails validation:\n{}",
                module.label(),
                e.emit_to_string(&module.source())
            )
        });
        for entry in module.entry_points() {
            assert!(
                parsed.entry_points.iter().any(|ep| ep.name == *entry),
                "{} has no entry point {entry}",
                module.label()
            );
        }
    }
}

#[test]
fn the_workgroup_module_needs_no_subgroup_feature() {
    // GL adapters have no subgroups: the fallback must validate without the capability.
    for io in Io::ALL
        .into_iter()
        .filter(|io| io.precision != Precision::F16 && !io.words64())
    {
        let module = ModuleKey::RowSoftmax(ShaderVariant {
            team: TeamKind::Workgroup,
            io,
        });
        Validator::new(ValidationFlags::all(), Capabilities::empty())
            .validate(&parse(module))
            .expect("team_workgroup + row_softmax must not need subgroups");
    }
    let module = ModuleKey::RowSoftmax(ShaderVariant {
        team: TeamKind::Subgroup,
        io: Io::ALL[0],
    });
    assert!(
        Validator::new(ValidationFlags::all(), Capabilities::empty())
            .validate(&parse(module))
            .is_err(),
        "the subgroup module should be rejected without Capabilities::SUBGROUP"
    );
}

/// Applies the key's override constants to its module (`parsed`, validated as `info`),
/// validates the specialised module, and writes it as SPIR-V and (for modules GL can run)
/// GLSL for its entry point.
fn specialise(key: &PipelineKey, parsed: &naga::Module, info: &naga::valid::ModuleInfo) {
    let module = key.module;
    let constants: naga::back::PipelineConstants = key
        .constants()
        .into_iter()
        .map(|(name, value)| (name.to_string(), value))
        .collect();
    let entry = (naga::ShaderStage::Compute, key.entry_point());
    let (special, special_info) =
        naga::back::pipeline_constants::process_overrides(parsed, info, Some(entry), &constants)
            .unwrap_or_else(|e| panic!("{key:?}: overrides rejected: {e}"));
    validator_for(module)
        .validate(&special)
        .unwrap_or_else(|e| panic!("{key:?}: specialised module fails validation: {e}"));

    let pipeline = naga::back::spv::PipelineOptions {
        shader_stage: naga::ShaderStage::Compute,
        entry_point: key.entry_point().to_string(),
    };
    naga::back::spv::write_vec(
        &special,
        &special_info,
        &naga::back::spv::Options::default(),
        Some(&pipeline),
    )
    .unwrap_or_else(|e| panic!("{key:?}: SPIR-V output failed: {e}"));

    // GL runs neither subgroups nor f16 nor 64-bit integers.
    if !module.needs_subgroups() && !module.needs_f16() && !module.needs_int64() {
        let options = naga::back::glsl::Options {
            version: naga::back::glsl::Version::Embedded {
                version: 310,
                is_webgl: false,
            },
            ..Default::default()
        };
        let pipeline = naga::back::glsl::PipelineOptions {
            shader_stage: naga::ShaderStage::Compute,
            entry_point: key.entry_point().to_string(),
            multiview: None,
        };
        let mut glsl = String::new();
        let mut writer = naga::back::glsl::Writer::new(
            &mut glsl,
            &special,
            &special_info,
            &options,
            &pipeline,
            naga::proc::BoundsCheckPolicies::default(),
        )
        .unwrap_or_else(|e| panic!("{key:?}: GLSL writer failed: {e}"));
        writer
            .write()
            .unwrap_or_else(|e| panic!("{key:?}: GLSL output failed: {e}"));
    }
}

/// One specialisation of every module (subgroup size 32) written as MSL (Metal 2.4: subgroup
/// operations need 2.1) and HLSL (shader model 6.2: wave operations need 6.0, 16-bit types
/// 6.2), so that a construct those backends cannot express fails here. Only written, not
/// compiled: there is no Metal or DirectX compiler on this machine.
#[test]
fn every_module_translates_to_metal_and_hlsl() {
    let mut keys = all_pipeline_keys(Some(32));
    keys.extend(all_pipeline_keys(None));
    let mut modules: Vec<ModuleKey> = keys.iter().map(|k| k.module).collect();
    modules.sort_by_key(|m| format!("{m:?}"));
    modules.dedup();
    for module in &modules {
        let key = keys.iter().find(|k| k.module == *module).expect("a key");
        let parsed = parse(*module);
        let info = validator_for(*module).validate(&parsed).expect("validates");
        let constants: naga::back::PipelineConstants = key
            .constants()
            .into_iter()
            .map(|(name, value)| (name.to_string(), value))
            .collect();
        let entry = (naga::ShaderStage::Compute, key.entry_point().to_string());
        let (special, special_info) = naga::back::pipeline_constants::process_overrides(
            &parsed,
            &info,
            Some((entry.0, entry.1.as_str())),
            &constants,
        )
        .unwrap_or_else(|e| panic!("{key:?}: overrides rejected: {e}"));

        let msl_options = naga::back::msl::Options {
            lang_version: (2, 4),
            ..Default::default()
        };
        let msl_pipeline = naga::back::msl::PipelineOptions {
            entry_point: Some(entry.clone()),
            ..Default::default()
        };
        let (msl, _) =
            naga::back::msl::write_string(&special, &special_info, &msl_options, &msl_pipeline)
                .unwrap_or_else(|e| panic!("{key:?}: MSL output failed: {e}"));
        assert!(msl.contains("kernel"), "{key:?}: no kernel in the MSL");

        let hlsl_options = naga::back::hlsl::Options {
            shader_model: naga::back::hlsl::ShaderModel::V6_2,
            ..Default::default()
        };
        let hlsl_pipeline = naga::back::hlsl::PipelineOptions {
            entry_point: Some(entry),
        };
        let mut hlsl = String::new();
        naga::back::hlsl::Writer::new(&mut hlsl, &hlsl_options, &hlsl_pipeline)
            .write(&special, &special_info, None)
            .unwrap_or_else(|e| panic!("{key:?}: HLSL output failed: {e}"));
        assert!(
            hlsl.contains("[numthreads("),
            "{key:?}: no compute entry in the HLSL"
        );
    }
    println!("{} modules written as MSL and HLSL", modules.len());
    assert!(modules.len() > 10);
}

#[test]
fn every_specialisation_validates_and_translates() {
    // Subgroup sizes seen in practice: 8 (lavapipe), 32 (NVIDIA), 64 (AMD), 128 (WARP max).
    let mut keys = all_pipeline_keys(None);
    for size in [8, 32, 64, 128] {
        keys.extend(all_pipeline_keys(Some(size)));
    }
    keys.sort_by_key(|k| format!("{k:?}"));
    keys.dedup();
    // Each module is parsed and validated once; its keys are specialised on all cores.
    let mut modules: Vec<ModuleKey> = keys.iter().map(|k| k.module).collect();
    modules.sort_by_key(|m| format!("{m:?}"));
    modules.dedup();
    for module in modules {
        let parsed = parse(module);
        let info = validator_for(module).validate(&parsed).expect("validates");
        let mine: Vec<&PipelineKey> = keys.iter().filter(|k| k.module == module).collect();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        std::thread::scope(|scope| {
            for part in mine.chunks(mine.len().div_ceil(threads)) {
                let (parsed, info) = (&parsed, &info);
                scope.spawn(move || part.iter().for_each(|key| specialise(key, parsed, info)));
            }
        });
    }
    println!("validated {} specialisations", keys.len());
    assert!(keys.len() > 20);
}

/// Every module fits the workgroup storage every WebGPU adapter offers (16 KiB), so the
/// fallback runs on adapters that report only the default limit.
#[test]
fn workgroup_memory_fits_the_default_limit() {
    for module in ModuleKey::all() {
        let parsed = parse(module);
        let bytes: u32 = parsed
            .global_variables
            .iter()
            .filter(|(_, v)| v.space == naga::AddressSpace::WorkGroup)
            .map(|(_, v)| parsed.types[v.ty].inner.size(parsed.to_ctx()))
            .sum();
        assert!(
            bytes <= 16384,
            "{} uses {bytes} bytes of workgroup memory",
            module.label()
        );
    }
}

/// The host's copy of the register cache's size matches the shader's.
#[test]
fn the_register_cache_size_agrees_with_the_host() {
    let module = ModuleKey::RowSoftmax(ShaderVariant {
        team: TeamKind::Workgroup,
        io: Io::ALL[0],
    });
    let want = format!(
        "const MAX_CACHE_BLOCKS = {}u;",
        ml_softmax::kernels::geometry::MAX_CACHE_BLOCKS
    );
    assert!(
        module.source().contains(&want),
        "row_softmax.wgsl lacks {want}"
    );
}

/// One variant's module, printed for reading (`cargo test --release --test shaders
/// one_variant -- --nocapture`): f32 in place, vec4 blocks of 32-bit words, workgroup teams.
/// The module is the generated storage declarations, then each fragment file verbatim under
/// its name: nothing is rewritten.
#[test]
fn one_variant_prints_as_its_fragments_verbatim() {
    let io = Io::for_rows(Precision::F32, true, Some((0, 0)), false, None, false);
    let module = ModuleKey::RowSoftmax(ShaderVariant {
        team: TeamKind::Workgroup,
        io,
    });
    let source = module.source();
    println!("{source}");
    let names: Vec<&str> = module.fragments().iter().map(|f| f.name).collect();
    assert_eq!(
        names,
        [
            "io_f32x4.wgsl",
            "words32.wgsl",
            "io_single.wgsl",
            "team_workgroup.wgsl",
            "kahan.wgsl",
            "row_softmax.wgsl"
        ]
    );
    for fragment in module.fragments() {
        let verbatim = format!("// ---- shaders/{} ----\n{}", fragment.name, fragment.text);
        assert!(
            source.contains(&verbatim),
            "{} is not verbatim",
            fragment.name
        );
    }
    assert!(source.contains("var<storage, read_write> logits: array<Block16>;"));
    assert!(
        !source.contains("@binding(6)"),
        "in place: no output binding"
    );
    parse(module);
}
