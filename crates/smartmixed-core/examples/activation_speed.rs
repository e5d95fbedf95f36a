//! Nanoseconds per element of each built-in activation's slice loops (with the bias add):
//! `cargo run --release -p smartmixed-core --example activation_speed`.

use std::time::Instant;
fn main() {
    let n = 1 << 14;
    let base: Vec<f32> = (0..n).map(|i| ((i % 1000) as f32 - 500.0) * 0.01).collect();
    let bias = vec![0.1f32; n];
    let (mut out, mut d) = (vec![0.0f32; n], vec![0.0f32; n]);
    for name in smartmixed_core::PAPER_POOL {
        let act = smartmixed_core::lookup(name).unwrap();
        let reps = 2000;
        let t = Instant::now();
        for _ in 0..reps {
            (act.apply)(&base, &bias, &mut out);
        }
        let ns = t.elapsed().as_nanos() as f64 / (reps * n) as f64;
        let t = Instant::now();
        for _ in 0..reps {
            (act.apply_with_derivative)(&base, &bias, &mut out, &mut d);
        }
        let ns2 = t.elapsed().as_nanos() as f64 / (reps * n) as f64;
        println!("{name:<12} apply {ns:.3} ns/elem  with derivative {ns2:.3} ns/elem");
    }
}
