//! The WGSL text of a module: which fragment files (`shaders/*.wgsl`) a variant is made of,
//! and the storage declarations generated for it. No text is rewritten: every fragment is
//! used as written, and what differs between variants is either another fragment or a
//! declaration generated here from the variant's fields.
//!
//! What each axis of a row_softmax module ([`ShaderVariant`]) contributes: the table below is
//! [`ShaderVariant::fragments`] (files) and `storage_declarations` (bindings), one `match`
//! per axis:
//!
//! | axis | value | contributes |
//! |---|---|---|
//! | (always) | | the generated storage declarations, `kahan.wgsl`, `row_softmax.wgsl` |
//! | team | `Workgroup` / `Subgroup` | `team_workgroup.wgsl` / `team_subgroup.wgsl` |
//! | precision | `F32` / `F16` / `Bf16` | the io file's element format; `F16`: `enable f16;`; `Bf16`: `bf16.wgsl` |
//! | access | `Scalar` / `Vec4(words)` / `Pairs` | `io_<p>.wgsl` / `io_<p>x4.wgsl` / `io_<p>x8.wgsl`; then `io_single.wgsl`, or `io_pairs.wgsl` for `Pairs` |
//! | words (`Vec4` and `Pairs`) | `Bits32` / `Bits64` (`Pairs`: 64) | `words32.wgsl` / `words64.wgsl` |
//! | f16 conversions (`F16` with `vec4`) | | `f16.wgsl` (its `F16_BITS` override picks the instructions or the bit operations) |
//! | place | `InPlace` / `Separate` | `logits` read_write and `store_unit` writing it / `logits` read-only, an `out` binding |
//!
//! WGSL declarations may be used before they appear, so the order of the fragments does not
//! matter, except that `enable f16;` must open the module: it comes first, in the generated
//! declarations.

use super::variant::{Access, Io, ModuleKey, Place, Precision, ShaderVariant, TeamKind, Words};

/// One shader file, by name (for the printed module and error messages) and text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    /// The file name under `shaders/`.
    pub name: &'static str,
    /// Its text.
    pub text: &'static str,
}

macro_rules! fragment {
    ($name:literal) => {
        Fragment {
            name: $name,
            text: include_str!(concat!("../../shaders/", $name)),
        }
    };
}

const ROW_SOFTMAX: Fragment = fragment!("row_softmax.wgsl");
const TEAM_WORKGROUP: Fragment = fragment!("team_workgroup.wgsl");
const TEAM_SUBGROUP: Fragment = fragment!("team_subgroup.wgsl");
const KAHAN: Fragment = fragment!("kahan.wgsl");
const BATCH_SUM: Fragment = fragment!("batch_sum.wgsl");
const COPY: Fragment = fragment!("copy.wgsl");
const IO_SINGLE: Fragment = fragment!("io_single.wgsl");
const IO_PAIRS: Fragment = fragment!("io_pairs.wgsl");
const WORDS32: Fragment = fragment!("words32.wgsl");
const WORDS64: Fragment = fragment!("words64.wgsl");
const BF16: Fragment = fragment!("bf16.wgsl");
const F16: Fragment = fragment!("f16.wgsl");

/// An io file and the element types of the bindings it needs: `logits` (1), `out` (6), and
/// `out_words` (9, the output as scalars: vector files only).
struct IoFile {
    fragment: Fragment,
    logits: &'static str,
    out: &'static str,
    out_words: Option<&'static str>,
}

impl IoFile {
    const fn new(
        fragment: Fragment,
        logits: &'static str,
        out: &'static str,
        out_words: Option<&'static str>,
    ) -> Self {
        IoFile {
            fragment,
            logits,
            out,
            out_words,
        }
    }
}

/// The io file of each (precision, access): scalar, whole 4-element blocks (`vec4`), units
/// of two blocks (`pairs`, software adapters only).
fn io_file(io: Io) -> IoFile {
    match (io.precision, io.access) {
        (Precision::F32, Access::Scalar) => {
            IoFile::new(fragment!("io_f32.wgsl"), "f32", "f32", None)
        }
        (Precision::F32, Access::Vec4(_)) => IoFile::new(
            fragment!("io_f32x4.wgsl"),
            "Block16",
            "Block16",
            Some("f32"),
        ),
        (Precision::F32, Access::Pairs) => IoFile::new(
            fragment!("io_f32x8.wgsl"),
            "vec4<u64>",
            "vec4<u64>",
            Some("f32"),
        ),
        (Precision::F16, Access::Scalar) => {
            IoFile::new(fragment!("io_f16.wgsl"), "f16", "f16", None)
        }
        (Precision::F16, Access::Vec4(_)) => {
            IoFile::new(fragment!("io_f16x4.wgsl"), "Block8", "Block8", Some("f16"))
        }
        (Precision::F16, Access::Pairs) => IoFile::new(
            fragment!("io_f16x8.wgsl"),
            "vec2<u64>",
            "vec2<u64>",
            Some("f16"),
        ),
        (Precision::Bf16, Access::Scalar) => {
            IoFile::new(fragment!("io_bf16.wgsl"), "u32", "atomic<u32>", None)
        }
        (Precision::Bf16, Access::Vec4(_)) => IoFile::new(
            fragment!("io_bf16x4.wgsl"),
            "Block8",
            "Block8",
            Some("atomic<u32>"),
        ),
        (Precision::Bf16, Access::Pairs) => IoFile::new(
            fragment!("io_bf16x8.wgsl"),
            "vec2<u64>",
            "vec2<u64>",
            Some("atomic<u32>"),
        ),
    }
}

/// The storage declarations of a row_softmax variant: the logits, the output (`out`, or in
/// place the logits again, read_write) and `store_unit`, through which every io file writes
/// a whole element or block of the output.
fn storage_declarations(io: Io) -> String {
    let file = io_file(io);
    let mut text = format!(
        "// Generated by src/kernels/source.rs for {io:?}: the bindings of the logits and the\n\
         // output, in the element types of {}.\n",
        file.fragment.name
    );
    if io.precision == Precision::F16 {
        text = format!("enable f16;\n\n{text}");
    }
    let logits_access = match io.place {
        Place::InPlace => "read_write",
        Place::Separate => "read",
    };
    text += &format!(
        "@group(0) @binding(1) var<storage, {logits_access}> logits: array<{}>;\n",
        file.logits
    );
    // The output array: its own binding, or the logits themselves.
    let target = match io.place {
        Place::InPlace => "logits",
        Place::Separate => {
            text += &format!(
                "@group(0) @binding(6) var<storage, read_write> out: array<{}>;\n",
                file.out
            );
            "out"
        }
    };
    if let Some(words) = file.out_words {
        text +=
            &format!("@group(0) @binding(9) var<storage, read_write> out_words: array<{words}>;\n");
    }
    // Atomic outputs (io_bf16.wgsl) are written with atomics, never stored whole.
    if !file.out.starts_with("atomic") {
        text += &format!(
            "\nfn store_unit(i: u32, v: {}) {{\n    {target}[i] = v;\n}}\n",
            file.out
        );
    }
    text
}

impl ShaderVariant {
    /// The fragment files of the module, in the order they are printed: one `match` per
    /// axis (the table at the top of this file).
    pub fn fragments(self) -> Vec<Fragment> {
        let ShaderVariant { team, io } = self;
        let mut files = Vec::new();
        // precision: bf16 conversions
        if io.precision == Precision::Bf16 {
            files.push(BF16);
        }
        // precision x access: the io file
        files.push(io_file(io).fragment);
        // access: the word size of blocks
        match io.access {
            Access::Scalar => {}
            Access::Vec4(Words::Bits32) => files.push(WORDS32),
            Access::Vec4(Words::Bits64) | Access::Pairs => files.push(WORDS64),
        }
        // precision x access: f16 conversions of blocks
        if io.has_f16_bits() {
            files.push(F16);
        }
        // access: one block per step, or two
        files.push(match io.access {
            Access::Pairs => IO_PAIRS,
            Access::Scalar | Access::Vec4(_) => IO_SINGLE,
        });
        // team
        files.push(match team {
            TeamKind::Workgroup => TEAM_WORKGROUP,
            TeamKind::Subgroup => TEAM_SUBGROUP,
        });
        files.extend([KAHAN, ROW_SOFTMAX]);
        files
    }
}

impl ModuleKey {
    /// The fragment files the module is made of, in the order they are printed.
    pub fn fragments(self) -> Vec<Fragment> {
        match self {
            ModuleKey::RowSoftmax(variant) => variant.fragments(),
            ModuleKey::BatchSum => vec![KAHAN, BATCH_SUM],
            ModuleKey::Copy { .. } => vec![COPY],
        }
    }

    /// The complete WGSL text of the module: the generated declarations, then each fragment
    /// under a line naming its file.
    pub fn source(self) -> String {
        let mut text = match self {
            ModuleKey::RowSoftmax(variant) => storage_declarations(variant.io),
            ModuleKey::BatchSum => String::new(),
            ModuleKey::Copy { words64 } => {
                let unit = if words64 { "vec4<u64>" } else { "vec4<u32>" };
                format!(
                    "// Generated by src/kernels/source.rs: the unit copy.wgsl moves.\nalias Unit = {unit};\n"
                )
            }
        };
        for fragment in self.fragments() {
            text += &format!(
                "\n// ---- shaders/{} ----\n{}",
                fragment.name, fragment.text
            );
        }
        text
    }
}
