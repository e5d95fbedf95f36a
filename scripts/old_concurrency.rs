//! The "old build" side of issue 19's comparisons (README "Embedding"): callers of one
//! `Arc<Model>`, each with its own `Scratch::new(SCRATCH_THREADS)`, on the runtime as it
//! was at commit 273ed66, before the shared pool (each scratch owned its workers). Not
//! part of the workspace; to build it:
//!
//! ```text
//! git worktree add /tmp/old273 273ed66
//! cp scripts/old_concurrency.rs /tmp/old273/crates/smartmixed-infer/examples/concurrency.rs
//! (cd /tmp/old273 && cargo build --release -p smartmixed-infer --example concurrency)
//! target/release/examples/concurrency --save /tmp/synth   # the model, from this checkout
//! SCRATCH_THREADS=2 /tmp/old273/target/release/examples/concurrency 2 /tmp/synth 1x1,8x1
//! ```
//!
//! Arguments: SECONDS MODEL_DIR MIXES (callers x batch, comma-separated); it prints the
//! same table as today's `concurrency` example.
use smartmixed_infer::{Model, Scratch};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let secs: f64 = a[1].parse().unwrap();
    let model = Arc::new(Model::load_dir(&a[2]).unwrap());
    let t: usize = std::env::var("SCRATCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    println!("| callers | batch | samples/s | p50 ms | p99 ms |  (old, scratch threads {t})");
    for mix in a[3].split(',') {
        let (c, b) = mix.split_once('x').unwrap();
        let (callers, batch): (usize, usize) = (c.parse().unwrap(), b.parse().unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let start = Arc::new(Barrier::new(callers + 1));
        let hs: Vec<_> = (0..callers)
            .map(|i| {
                let (m, stop, start) = (model.clone(), stop.clone(), start.clone());
                std::thread::spawn(move || {
                    let n = m.input_size();
                    let x: Vec<f32> = (0..batch * n)
                        .map(|j| ((j * 31 + i * 7) % 97) as f32 / 97.0)
                        .collect();
                    let mut out = vec![0f32; batch * m.classes()];
                    let mut s = Scratch::new(t);
                    m.forward(&x, batch, &mut s, &mut out).unwrap();
                    start.wait();
                    let mut lat = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let t0 = Instant::now();
                        m.forward(&x, batch, &mut s, &mut out).unwrap();
                        lat.push(t0.elapsed());
                    }
                    lat
                })
            })
            .collect();
        start.wait();
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs_f64(secs));
        stop.store(true, Ordering::Relaxed);
        let mut lat: Vec<Duration> = hs.into_iter().flat_map(|h| h.join().unwrap()).collect();
        let el = t0.elapsed().as_secs_f64();
        lat.sort();
        let q = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;
        println!(
            "| {callers} | {batch} | {:.1}k | {:.3} | {:.3} |",
            (lat.len() * batch) as f64 / el / 1e3,
            q(0.5),
            q(0.99)
        );
    }
}
