//! `smartmixed-cli inspect`: an exported model's layers, groups and activation shares.

use std::path::PathBuf;

use anyhow::Result;
use smartmixed_infer::{Kernel, Model};

#[derive(clap::Args)]
pub struct InspectArgs {
    /// An exported model directory (model.safetensors + manifest.toml).
    #[arg(long)]
    model: PathBuf,
}

pub fn run(args: InspectArgs) -> Result<()> {
    let model = Model::load_dir(&args.model)?;
    let m = model.manifest();
    let params: usize = m
        .layers
        .iter()
        .map(|l| l.inputs * l.outputs + l.outputs)
        .sum();
    let widths: Vec<String> = std::iter::once(m.inputs)
        .chain(m.layers.iter().map(|l| l.outputs))
        .map(|w| w.to_string())
        .collect();
    println!(
        "model {}: architecture [{}], {} parameters, output {}",
        args.model.display(),
        widths.join(", "),
        params,
        m.output_activation
    );
    for (i, groups) in model.group_sizes().iter().enumerate() {
        let total: usize = groups.iter().map(|(_, n)| n).sum();
        let shares: Vec<String> = groups
            .iter()
            .map(|(name, n)| format!("{name} {n} ({:.1}%)", 100.0 * *n as f64 / total as f64))
            .collect();
        println!(
            "  hidden layer {} ({total} neurons): {}",
            i + 1,
            shares.join(", ")
        );
    }
    println!("kernel on this CPU: {}", Kernel::detect().describe());
    Ok(())
}
