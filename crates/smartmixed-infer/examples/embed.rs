//! Embedding `smartmixed-infer` in a service: one `Model` shared by worker threads, each
//! with its own `Scratch`, classifying batches without allocating in the loop.
//!
//! `cargo run --release -p smartmixed-infer --example embed -- EXPORTED_DIR [BATCHES]`
//! prints throughput, the model's weight bytes and the process's peak resident memory.

use std::sync::Arc;
use std::time::Instant;

use smartmixed_infer::{Model, Scratch};

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().ok_or("usage: embed EXPORTED_DIR [BATCHES]")?;
    let batches: usize = args.next().map(|b| b.parse()).transpose()?.unwrap_or(200);
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
    let p = model.predict(&vec![0.0; model.input_size()])?;
    println!(
        "blank image -> class {} (p = {:.3})",
        p.class, p.probabilities[p.class]
    );
    Ok(())
}
