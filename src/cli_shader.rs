//! `ml-softmax shader`: prints the generated WGSL of one row_softmax variant
//! ([`ShaderVariant`]), one flag per axis, for reading (README's Layout says in which order).
//! `--list` prints the axes and their values. The text is exactly what the library compiles;
//! the pipeline's override constants (geometry, loss options) are listed in a header comment.

use clap::{Args, ValueEnum};
use ml_softmax::kernels::{
    Access, Io, ModuleKey, PipelineKey, Place, ShaderVariant, TeamKind, Words,
};

use crate::cli_bench::PrecisionArg;

/// The flags of `ml-softmax shader`: one per axis of [`ShaderVariant`].
#[derive(Args)]
pub struct ShaderArgs {
    /// How the lanes of a row reduce together.
    #[arg(long, value_enum, default_value_t = TeamArg::Workgroup)]
    team: TeamArg,
    /// The storage format of logits and output.
    #[arg(long, value_enum, default_value_t = PrecisionArg::F32)]
    precision: PrecisionArg,
    /// Where the output goes.
    #[arg(long, value_enum, default_value_t = PlaceArg::Separate)]
    place: PlaceArg,
    /// How logits and output are read and written.
    #[arg(long, value_enum, default_value_t = AccessArg::Vec4)]
    access: AccessArg,
    /// Check that the module has this entry point (and say which override constants its
    /// pipelines set).
    #[arg(long)]
    entry: Option<String>,
    /// List the axes and their values instead.
    #[arg(long)]
    list: bool,
}

/// `--team`.
#[derive(Clone, Copy, ValueEnum)]
enum TeamArg {
    /// Barrier trees in workgroup memory (team_workgroup.wgsl).
    Workgroup,
    /// One subgroup per row (team_subgroup.wgsl; needs subgroups).
    Subgroup,
}

/// `--place`.
#[derive(Clone, Copy, ValueEnum)]
enum PlaceArg {
    /// The output in its own binding.
    Separate,
    /// The output over the logits.
    InPlace,
}

/// `--access`.
#[derive(Clone, Copy, ValueEnum)]
enum AccessArg {
    /// One element at a time (io_<p>.wgsl).
    Scalar,
    /// 4-element blocks in 32-bit words (io_<p>x4.wgsl, words32.wgsl).
    Vec4,
    /// 4-element blocks in 64-bit words (io_<p>x4.wgsl, words64.wgsl; software adapters).
    Vec4W64,
    /// Units of two blocks in 64-bit words (io_<p>x8.wgsl; software adapters, one lane per row).
    Pairs,
}

impl ShaderArgs {
    /// The variant the flags name, if the shaders have it.
    fn variant(&self) -> Result<ShaderVariant, String> {
        let team = match self.team {
            TeamArg::Workgroup => TeamKind::Workgroup,
            TeamArg::Subgroup => TeamKind::Subgroup,
        };
        let place = match self.place {
            PlaceArg::Separate => Place::Separate,
            PlaceArg::InPlace => Place::InPlace,
        };
        let access = match self.access {
            AccessArg::Scalar => Access::Scalar,
            AccessArg::Vec4 => Access::Vec4(Words::Bits32),
            AccessArg::Vec4W64 => Access::Vec4(Words::Bits64),
            AccessArg::Pairs => Access::Pairs,
        };
        let io = Io {
            precision: self.precision.precision(),
            place,
            access,
        };
        let variant = ShaderVariant { team, io };
        if !ShaderVariant::all().contains(&variant) {
            return Err(format!(
                "no such shader variant: {team:?} {io:?} (bf16 has no in-place variant: its \
                 output is written with atomics on whole words)"
            ));
        }
        Ok(variant)
    }
}

/// `ml-softmax shader`.
pub fn run(args: &ShaderArgs) -> Result<(), String> {
    if args.list {
        print!("{}", list());
        return Ok(());
    }
    let variant = args.variant()?;
    let module = ModuleKey::RowSoftmax(variant);
    let entries = module.entry_points();
    let mut header = format!(
        "// ml-softmax shader: {:?} {:?}\n// fragments: {}\n// entry points: {}\n",
        variant.team,
        variant.io,
        module
            .fragments()
            .iter()
            .map(|f| f.name)
            .collect::<Vec<_>>()
            .join(", "),
        entries.join(", ")
    );
    if let Some(entry) = &args.entry {
        let index = entries.iter().position(|e| e == entry).ok_or_else(|| {
            format!(
                "--entry {entry}: this variant's entry points are {}",
                entries.join(", ")
            )
        })?;
        let names: Vec<&str> = PipelineKey::plain(module, index)
            .constants()
            .iter()
            .map(|c| c.0)
            .collect();
        header += &format!(
            "// {entry}: each pipeline sets the override constants {}\n",
            names.join(", ")
        );
    }
    print!("{header}{}", module.source());
    Ok(())
}

/// The axes and their values, from the flags' own definitions.
fn list() -> String {
    fn values<T: ValueEnum>() -> String {
        let names: Vec<String> = T::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value())
            .map(|p| p.get_name().to_string())
            .collect();
        names.join(", ")
    }
    let workgroup = ModuleKey::RowSoftmax(ShaderVariant::all()[0]);
    format!(
        "--team       {}\n--precision  {}\n--place      {}  (bf16: separate only)\n\
         --access     {}\n--entry      {}  (subgroup teams: the first two)\n",
        values::<TeamArg>(),
        values::<PrecisionArg>(),
        values::<PlaceArg>(),
        values::<AccessArg>(),
        workgroup.entry_points().join(", ")
    )
}
