//! Concurrent callers of one shared model: for 1, 2, 4 and 8 caller threads and batches
//! of 1, 32 and 256 rows, each caller with its own `Scratch` calling `forward` in a loop on
//! one `Arc<Model>` (the process's shared pool), prints total samples/s and the p50 / p99
//! latency of a call. Bounded: each configuration runs for the seconds given (default 1.5).
//!
//! The model is the representative 784-768-512-512-256-256-128-10 network with random
//! weights and all six of the paper's activations in every hidden layer, built in memory
//! (speed does not depend on trained values), or an exported model directory.
//!
//! ```text
//! cargo run --release -p smartmixed-infer --example concurrency -- [SECONDS] [MODEL_DIR|-] [f32|bf16] [POOL_THREADS]
//! cargo run --release -p smartmixed-infer --example concurrency -- --save DIR
//! ```
//!
//! `--save DIR` writes the synthetic model as an export (`model.safetensors`,
//! `manifest.toml`) for other benchmarks (`smartmixed-cli`'s `load` example) and exits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use safetensors::tensor::{Dtype, TensorView};
use smartmixed_infer::{LoadOptions, Model, Precision, Scratch};

const WIDTHS: [usize; 8] = [784, 768, 512, 512, 256, 256, 128, 10];
const POOL: [&str; 6] = ["relu", "sigmoid", "tanh", "leaky_relu", "elu", "selu"];
const CALLERS: [usize; 4] = [1, 2, 4, 8];
const BATCHES: [usize; 3] = [1, 32, 256];

/// A small deterministic generator (xorshift), so the example needs no dependencies.
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// The representative network with weights uniform in +-1/sqrt(inputs), every hidden
/// layer split into six equal blocks, one per activation.
fn synthetic(options: &LoadOptions) -> Result<Model, Box<dyn std::error::Error>> {
    let (weights, manifest) = synthetic_files()?;
    Ok(Model::from_bytes_with(
        &weights,
        manifest.as_bytes(),
        options,
    )?)
}

/// [`synthetic`]'s safetensors bytes and manifest text.
fn synthetic_files() -> Result<(Vec<u8>, String), Box<dyn std::error::Error>> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut manifest = format!(
        "format = \"smartmixed-manifest\"\nversion = 1\ninputs = {}\noutput_activation = \"identity\"\n",
        WIDTHS[0]
    );
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for l in 0..WIDTHS.len() - 1 {
        let (k, n) = (WIDTHS[l], WIDTHS[l + 1]);
        manifest += &format!("\n[[layers]]\ninputs = {k}\noutputs = {n}\n");
        if l + 2 < WIDTHS.len() {
            let index: Vec<String> = (0..n).map(|i| i.to_string()).collect();
            manifest += &format!("original_index = [{}]\n", index.join(", "));
            let mut start = 0;
            for (g, act) in POOL.iter().enumerate() {
                let len = n * (g + 1) / POOL.len() - start;
                manifest += &format!(
                    "\n[[layers.groups]]\nactivation = \"{act}\"\nstart = {start}\nlen = {len}\n"
                );
                start += len;
            }
        }
        let scale = 2.0 / (k as f32).sqrt();
        let w: Vec<u8> = (0..n * k)
            .flat_map(|_| ((rng.uniform() - 0.5) * scale).to_le_bytes())
            .collect();
        let b: Vec<u8> = (0..n)
            .flat_map(|_| ((rng.uniform() - 0.5) * 0.1).to_le_bytes())
            .collect();
        tensors.push((format!("layers.{l}.weight"), vec![n, k], w));
        tensors.push((format!("layers.{l}.bias"), vec![n], b));
    }
    let mut views = Vec::new();
    for (name, shape, bytes) in &tensors {
        views.push((
            name.clone(),
            TensorView::new(Dtype::F32, shape.clone(), bytes)?,
        ));
    }
    Ok((safetensors::serialize(views, &None)?, manifest))
}

/// One configuration's result.
struct Measured {
    samples_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// `callers` threads call `forward` on `batch` rows until `seconds` have passed.
fn measure(model: &Arc<Model>, callers: usize, batch: usize, seconds: f64) -> Measured {
    let stop = AtomicBool::new(false);
    let start_line = Barrier::new(callers + 1);
    let (mut latencies, elapsed) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..callers)
            .map(|c| {
                let (model, stop, start_line) = (model.clone(), &stop, &start_line);
                s.spawn(move || {
                    let mut scratch = Scratch::new();
                    let mut rng = Rng(c as u64 * 7919 + 1);
                    let input: Vec<f32> = (0..batch * model.input_size())
                        .map(|_| rng.uniform())
                        .collect();
                    let mut out = vec![0.0f32; batch * model.classes()];
                    let mut lat = Vec::new();
                    start_line.wait();
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        if let Err(e) = model.forward(&input, batch, &mut scratch, &mut out) {
                            eprintln!("error: {e}");
                            break;
                        }
                        lat.push(t.elapsed().as_secs_f64() * 1e3);
                    }
                    lat
                })
            })
            .collect();
        start_line.wait();
        let t = Instant::now();
        std::thread::sleep(Duration::from_secs_f64(seconds));
        stop.store(true, Ordering::Relaxed);
        let all: Vec<f64> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect();
        (all, t.elapsed().as_secs_f64())
    });
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let i = ((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1));
        latencies.get(i).copied().unwrap_or(f64::NAN)
    };
    Measured {
        samples_per_s: (latencies.len() * batch) as f64 / elapsed,
        p50_ms: at(0.5),
        p99_ms: at(0.99),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("--save") {
        let dir = std::path::PathBuf::from(args.nth(1).ok_or("--save needs a directory")?);
        let (weights, manifest) = synthetic_files()?;
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(smartmixed_infer::WEIGHTS_FILE), weights)?;
        std::fs::write(dir.join(smartmixed_infer::MANIFEST_FILE), manifest)?;
        println!("wrote {}", dir.display());
        return Ok(());
    }
    let seconds: f64 = match args.next() {
        Some(s) => s.parse()?,
        None => 1.5,
    };
    let dir = args.next().filter(|d| d != "-");
    let options = LoadOptions {
        precision: match args.next() {
            Some(p) => p.parse()?,
            None => Precision::F32,
        },
    };
    let mut model = match dir {
        Some(dir) => Model::load_dir_with(&dir, &options)?,
        None => synthetic(&options)?,
    };
    if let Some(threads) = args.next().filter(|t| t != "-") {
        model = model.with_pool(smartmixed_infer::Pool::new(threads.parse()?)?);
    }
    let mixes = match args.next() {
        Some(list) => list
            .split(',')
            .map(
                |mix| -> Result<(usize, usize), Box<dyn std::error::Error>> {
                    let (c, b) = mix.split_once('x').ok_or("a mix is CALLERSxBATCH")?;
                    Ok((c.parse()?, b.parse()?))
                },
            )
            .collect::<Result<Vec<_>, _>>()?,
        None => BATCHES
            .iter()
            .flat_map(|&b| CALLERS.iter().map(move |&c| (c, b)))
            .collect(),
    };
    let model = Arc::new(model);
    println!("{}", model.kernel_description());
    println!("| callers | batch | samples/s | p50 ms | p99 ms |");
    println!("|---|---|---|---|---|");
    for (callers, batch) in mixes {
        let m = measure(&model, callers, batch, seconds);
        println!(
            "| {callers} | {batch} | {:.1}k | {:.3} | {:.3} |",
            m.samples_per_s / 1e3,
            m.p50_ms,
            m.p99_ms
        );
    }
    Ok(())
}
