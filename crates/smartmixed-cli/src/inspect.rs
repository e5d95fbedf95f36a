//! `smartmixed-cli inspect`: an exported model's layers, groups and activation shares.

use std::path::PathBuf;

use anyhow::Result;
use smartmixed_infer::{LoadOptions, Model, Precision};

#[derive(clap::Args)]
pub struct InspectArgs {
    /// An exported model directory (model.safetensors + manifest.toml).
    #[arg(long)]
    model: PathBuf,
    /// The arithmetic: f32 (the trainer's), bf16 (weights and each layer's input
    /// rounded to bf16, f32 sums) or int8 (i8 weights scaled per neuron, each layer's
    /// input quantised per row, i32 sums).
    #[arg(long, default_value = "f32")]
    precision: Precision,
}

pub fn run(args: InspectArgs) -> Result<()> {
    let options = LoadOptions {
        precision: args.precision,
    };
    let model = Model::load_dir_with(&args.model, &options)?;
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
    if let Some(c) = m.hidden_clamp {
        println!(
            "  every hidden output clamped to [-{c}, {c}] (a phase-1 export, as phase 1 evaluates)"
        );
    }
    print_input(m);
    println!(
        "precision {}; kernel on this CPU: {}",
        model.precision().name(),
        model.kernel_description()
    );
    Ok(())
}

/// The input the model expects and the preprocessing `forward_raw` applies, and the
/// classes' names.
fn print_input(m: &smartmixed_infer::Manifest) {
    let input = m.input_description();
    let mut steps = vec![format!("raw / {}", input.divisor)];
    if !input.mean.is_empty() {
        steps.push("minus the per-feature mean".into());
    }
    if !input.std.is_empty() {
        steps.push("divided by the per-feature standard deviation".into());
    }
    println!(
        "input: shape {:?} ({} values), preprocessing: {}{}",
        input.shape,
        m.inputs,
        steps.join(", "),
        if m.input.is_none() {
            " (manifest version 1: assumed 8-bit pixels)"
        } else {
            ""
        }
    );
    if !input.feature_names.is_empty() {
        let names: Vec<String> = input
            .feature_names
            .iter()
            .map(|n| crate::shown(n))
            .collect();
        println!("features: {}", names.join(", "));
    }
    if !m.class_names.is_empty() {
        let names: Vec<String> = m.class_names.iter().map(|n| crate::shown(n)).collect();
        println!("classes: {}", names.join(", "));
    }
}
