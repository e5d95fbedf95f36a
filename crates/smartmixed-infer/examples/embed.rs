//! Embedding `smartmixed-infer` in a service: one `Model` shared by worker threads, each
//! with its own `Scratch`, classifying batches without allocating in the loop.
//!
//! `cargo run --release -p smartmixed-infer --example embed -- EXPORTED_DIR [BATCHES]`
//! prints throughput, the model's weight bytes, the process's peak resident memory and
//! the class (by name) of an all-zero input; an error is one line naming what failed.

use std::error::Error;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use smartmixed_infer::{Model, Scratch};

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// An error and its causes on one line, each cause once (Display, not Debug: `main`
/// returning a `Result` would print `Io { path: .., source: Os { .. } }`).
fn one_line(e: &dyn Error) -> String {
    let mut line = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !line.contains(&text) {
            line = format!("{line}: {text}");
        }
        source = s.source();
    }
    line.replace('\n', " ")
}

fn main() -> ExitCode {
    match run(std::env::args().skip(1)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// What the model makes of an all-zero input: the class by name, and its probability.
fn blank_input(model: &Model) -> Result<String, smartmixed_infer::Error> {
    let p = model.predict(&vec![0.0; model.input_size()])?;
    Ok(format!(
        "all-zero input -> class {} \"{}\" (p = {:.3})",
        p.class,
        model.class_name(p.class),
        p.probabilities[p.class]
    ))
}

fn run(mut args: impl Iterator<Item = String>) -> Result<(), Box<dyn Error>> {
    let dir = args.next().ok_or("usage: embed EXPORTED_DIR [BATCHES]")?;
    let batches: usize = match args.next() {
        Some(b) => b
            .parse()
            .map_err(|_| format!("BATCHES: expected a whole number, got `{b}`"))?,
        None => 200,
    };
    let model = Arc::new(Model::load_dir(&dir)?);
    let loaded_kib = peak_rss_kib();
    let weight_bytes: usize = model
        .manifest()
        .layers
        .iter()
        .map(|l| 4 * (l.inputs * l.outputs + l.outputs))
        .sum();

    let batch = 256;
    let start = Instant::now();
    let workers: Vec<_> = (0..2)
        .map(|w| {
            let model = Arc::clone(&model);
            std::thread::spawn(move || -> Result<usize, smartmixed_infer::Error> {
                let mut scratch = Scratch::new();
                let input: Vec<f32> = (0..batch * model.input_size())
                    .map(|i| ((i * 31 + w) % 256) as f32 / 255.0)
                    .collect();
                let mut logits = vec![0.0; batch * model.classes()];
                for _ in 0..batches / 2 {
                    model.forward(&input, batch, &mut scratch, &mut logits)?;
                }
                Ok(batch * (batches / 2))
            })
        })
        .collect();
    let mut samples = 0;
    for w in workers {
        samples += w.join().map_err(|_| "worker panicked")??;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{samples} samples in {secs:.2} s: {:.0} samples/s on 2 worker threads",
        samples as f64 / secs
    );
    println!("weights: {:.1} MB", weight_bytes as f64 / 1e6);
    if let (Some(loaded), Some(peak)) = (loaded_kib, peak_rss_kib()) {
        println!(
            "peak RSS after load: {:.1} MB; after inference: {:.1} MB",
            loaded as f64 / 1024.0,
            peak as f64 / 1024.0
        );
    }
    println!("{}", blank_input(&model)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_one_line_naming_the_file_not_debug_structs() {
        let err = run(["/nonexistent/model".to_string()].into_iter()).unwrap_err();
        let line = one_line(err.as_ref());
        assert!(line.contains("/nonexistent/model"), "{line}");
        assert!(
            !line.contains('\n') && !line.contains("Os {") && !line.contains("Io {"),
            "{line}"
        );
        let err = run(["/nonexistent".to_string(), "many".to_string()].into_iter()).unwrap_err();
        assert_eq!(
            one_line(err.as_ref()),
            "BATCHES: expected a whole number, got `many`"
        );
    }

    #[test]
    fn the_blank_input_is_named_by_its_class() {
        // One layer, 2 inputs -> 2 classes, bias favouring the second class, "dog".
        let manifest = "format = \"smartmixed-manifest\"\nversion = 2\ninputs = 2\noutput_activation = \"identity\"\nclass_names = [\"cat\", \"dog\"]\n\n[[layers]]\ninputs = 2\noutputs = 2\n\n[input]\nshape = [2]\ndivisor = 1.0\n";
        let w: Vec<u8> = [0.0f32; 4].iter().flat_map(|x| x.to_le_bytes()).collect();
        let b: Vec<u8> = [0.0f32, 1.0].iter().flat_map(|x| x.to_le_bytes()).collect();
        use safetensors::tensor::{Dtype, TensorView};
        let views = [
            (
                "layers.0.weight",
                TensorView::new(Dtype::F32, vec![2, 2], &w).unwrap(),
            ),
            (
                "layers.0.bias",
                TensorView::new(Dtype::F32, vec![2], &b).unwrap(),
            ),
        ];
        let bytes = safetensors::serialize(views, &None).unwrap();
        let model = Model::from_bytes(&bytes, manifest.as_bytes()).unwrap();
        // softmax([0, 1]) = [0.269, 0.731]
        assert_eq!(
            blank_input(&model).unwrap(),
            "all-zero input -> class 1 \"dog\" (p = 0.731)"
        );
    }
}
