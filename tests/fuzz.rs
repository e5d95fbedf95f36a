//! Fuzz-style tests on stable Rust, run by CI: every parser of user files gets thousands of
//! seeded mutants (bit flips, truncations, inserted and deleted bytes, size fields and
//! numbers set to extremes) of valid inputs and of the interesting cases kept in
//! `tests/fuzz-corpus/<target>/`. Each case must return (an error is fine) without a panic,
//! within a time limit (a watchdog aborts the test binary on a hang) and within a memory
//! bound measured by a counting allocator.
//!
//! `SMARTMIXED_FUZZ_MUTANTS=N` runs N mutants per target instead of the default 5000.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dfdx::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use smartmixed_core::Manifest;
use smartmixed_infer::{Model, Scratch};
use smartmixed_train::data::image::{parse_pgm, read_png};
use smartmixed_train::data::read_idx;
use smartmixed_train::data::table;
use smartmixed_train::{checkpoint, export, rundir, Network};
use smartmixed_train::{InvalidCells, SweepConfig, TrainConfig};

// ---------------------------------------------------------------------------------------
// A counting allocator: bytes live per thread, and the peak since the last reset.

struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn track(delta: isize) {
    // `try_with`: allocations during thread teardown are not counted.
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every method forwards to the system allocator unchanged and only updates
// thread-local counters, which neither allocate nor unwind.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        track(layout.size() as isize);
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        track(layout.size() as isize);
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        track(-(layout.size() as isize));
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        track(new_size as isize - layout.size() as isize);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes this thread allocated at its peak while running `f`, beyond what it held before.
fn peak_during(f: impl FnOnce()) -> usize {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    f();
    (PEAK.with(Cell::get) - base).max(0) as usize
}

// ---------------------------------------------------------------------------------------
// Mutations.

/// Numbers that break careless size arithmetic, as text.
const EXTREME_TEXT: &[&str] = &[
    "0",
    "1",
    "-1",
    "255",
    "256",
    "65536",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "99999999999999999999999",
    "1e308",
    "-1e308",
    "inf",
    "nan",
    "1048577",
];

/// The same as little- or big-endian 4- and 8-byte fields.
const EXTREME_U64: &[u64] = &[
    0,
    1,
    0x7f,
    0xff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    i64::MAX as u64,
    u64::MAX,
];

fn mutate(rng: &mut StdRng, seed: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..rng.gen_range(1..=3) {
        let len = b.len();
        match rng.gen_range(0..8) {
            // Bit flips.
            0 if len > 0 => {
                for _ in 0..rng.gen_range(1..=8) {
                    let i = rng.gen_range(0..len);
                    b[i] ^= 1 << rng.gen_range(0..8);
                }
            }
            // Truncation.
            1 => b.truncate(rng.gen_range(0..=len)),
            // Random bytes overwritten.
            2 if len > 0 => {
                let i = rng.gen_range(0..len);
                let n = rng.gen_range(1..=16).min(len - i);
                rng.fill(&mut b[i..i + n]);
            }
            // A size field set to an extreme, preferring the header.
            3 if len >= 8 => {
                let width = if rng.gen_bool(0.5) { 4 } else { 8 };
                let hi = if rng.gen_bool(0.7) { len.min(64) } else { len };
                let i = rng.gen_range(0..=hi.saturating_sub(width).min(len - width));
                let v = EXTREME_U64[rng.gen_range(0..EXTREME_U64.len())];
                let le = rng.gen_bool(0.5);
                let field = match (width, le) {
                    (4, true) => (v as u32).to_le_bytes().to_vec(),
                    (4, false) => (v as u32).to_be_bytes().to_vec(),
                    (_, true) => v.to_le_bytes().to_vec(),
                    (_, false) => v.to_be_bytes().to_vec(),
                };
                b[i..i + width].copy_from_slice(&field);
            }
            // A decimal number (TOML, CSV, JSON headers, PGM headers) set to an extreme.
            4 => {
                let runs = digit_runs(&b);
                if let Some(&(s, e)) = runs.get(rng.gen_range(0..runs.len().max(1))) {
                    let t = EXTREME_TEXT[rng.gen_range(0..EXTREME_TEXT.len())];
                    b.splice(s..e, t.bytes());
                }
            }
            // Inserted bytes, or a duplicated slice.
            5 => {
                let i = rng.gen_range(0..=len);
                if len > 0 && rng.gen_bool(0.5) {
                    let s = rng.gen_range(0..len);
                    let e = (s + rng.gen_range(1..=64)).min(len);
                    let copy = b[s..e].to_vec();
                    b.splice(i..i, copy);
                } else {
                    let n = rng.gen_range(1..=8);
                    let bytes: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
                    b.splice(i..i, bytes);
                }
            }
            // A deleted range.
            6 if len > 0 => {
                let s = rng.gen_range(0..len);
                let e = (s + rng.gen_range(1..=32)).min(len);
                b.drain(s..e);
            }
            // A line deleted or duplicated (text formats).
            _ => {
                let lines: Vec<&[u8]> = b.split_inclusive(|&c| c == b'\n').collect();
                if lines.len() > 1 {
                    let i = rng.gen_range(0..lines.len());
                    let mut out: Vec<u8> = Vec::with_capacity(len + 64);
                    for (k, l) in lines.iter().enumerate() {
                        if k != i || rng.gen_bool(0.5) {
                            out.extend_from_slice(l);
                        }
                        if k == i && rng.gen_bool(0.5) {
                            out.extend_from_slice(l);
                        }
                    }
                    b = out;
                }
            }
        }
    }
    b
}

fn digit_runs(b: &[u8]) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let s = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            runs.push((s, i));
        } else {
            i += 1;
        }
    }
    runs
}

// ---------------------------------------------------------------------------------------
// The harness.

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz-corpus")
        .join(target)
}

/// The kept interesting cases of `target`, as seeds.
fn corpus(target: &str) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir(target))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    files.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

fn mutants() -> usize {
    std::env::var("SMARTMIXED_FUZZ_MUTANTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000)
}

/// No case may take longer than this (the slowest valid case takes milliseconds).
const HANG: Duration = Duration::from_secs(20);

/// Runs `parse` on every seed and on [`mutants`] mutants of them; fails on a panic or on a
/// case allocating more than `bound` bytes, aborts on a hang. A failing input is written
/// to `target/fuzz-failures/` for reproduction.
fn fuzz(target: &str, seeds: Vec<Vec<u8>>, bound: usize, parse: impl Fn(&[u8])) {
    fuzz_bounded(target, seeds, |_| bound, parse)
}

/// [`fuzz`] with a bound per case: for readers whose memory a file's own header may
/// legitimately set (a gzip IDX file declaring 4 MB of pixels and inflating to them).
fn fuzz_bounded(
    target: &str,
    seeds: Vec<Vec<u8>>,
    bound_of: impl Fn(&[u8]) -> usize,
    parse: impl Fn(&[u8]),
) {
    let mut seeds = seeds;
    seeds.extend(corpus(target));
    assert!(!seeds.is_empty(), "{target}: no seeds");
    let progress = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    {
        let (progress, done, name) = (progress.clone(), done.clone(), target.to_string());
        std::thread::spawn(move || {
            let mut last = (0, Instant::now());
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                let now = progress.load(Ordering::Relaxed);
                if now != last.0 {
                    last = (now, Instant::now());
                } else if last.1.elapsed() > HANG {
                    eprintln!("fuzz {name}: case {now} hangs (no progress for {HANG:?})");
                    std::process::abort();
                }
            }
        });
    }
    let mut rng = StdRng::seed_from_u64(0x5eed_f022 ^ target.len() as u64);
    let total = seeds.len() + mutants();
    let (mut worst, mut slowest) = (0usize, Duration::ZERO);
    for case in 0..total {
        let input = if case < seeds.len() {
            seeds[case].clone()
        } else {
            let seed = &seeds[rng.gen_range(0..seeds.len())];
            mutate(&mut rng, seed)
        };
        progress.store(case as u64 + 1, Ordering::Relaxed);
        let t = Instant::now();
        let mut panicked = false;
        let peak = peak_during(|| {
            panicked = std::panic::catch_unwind(AssertUnwindSafe(|| parse(&input))).is_err();
        });
        slowest = slowest.max(t.elapsed());
        worst = worst.max(peak);
        let bound = bound_of(&input);
        if panicked || peak > bound {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-failures");
            let _ = std::fs::create_dir_all(&dir);
            let file = dir.join(format!("{target}-{case}.bin"));
            let _ = std::fs::write(&file, &input);
            done.store(true, Ordering::Relaxed);
            panic!(
                "fuzz {target}: case {case} {} (input kept in {})",
                if panicked {
                    "panicked".to_string()
                } else {
                    format!("allocated {peak} bytes, more than the bound of {bound}")
                },
                file.display()
            );
        }
    }
    done.store(true, Ordering::Relaxed);
    eprintln!(
        "fuzz {target}: {total} cases in {:.1} s, slowest {:.1} ms, peak {} kB",
        start.elapsed().as_secs_f64(),
        slowest.as_secs_f64() * 1e3,
        worst / 1024
    );
}

/// A scratch file for readers that take paths.
struct Scratchpad(tempfile::TempDir);

impl Scratchpad {
    fn new() -> Self {
        Self(tempfile::tempdir().unwrap())
    }
    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

const MB: usize = 1 << 20;

// ---------------------------------------------------------------------------------------
// Valid seeds.

/// A small trained-shape network: 12 inputs, hidden 8 and 6, 3 classes.
fn selective() -> Network<Cpu> {
    let dev = Cpu::default();
    let pool = ["relu", "tanh", "elu"]
        .iter()
        .map(|n| smartmixed_core::lookup(n).unwrap())
        .collect();
    let mut rng = StdRng::seed_from_u64(3);
    Network::selective(&dev, &[12, 8, 6, 3], pool, 0.3, &mut rng)
}

/// An exported model: (model.safetensors, manifest.toml).
/// An exported model whose manifest carries the version-2 tables (a standardised 3 x 4
/// input with feature names, named classes), so mutants reach their validation too.
fn exported() -> (Vec<u8>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let description = export::Description {
        input: Some(smartmixed_core::InputManifest {
            shape: vec![3, 4],
            divisor: 1.0,
            mean: (0..12).map(|i| i as f32 * 0.5).collect(),
            std: (0..12).map(|i| 1.0 + i as f32).collect(),
            feature_names: (0..12).map(|i| format!("f{i}")).collect(),
        }),
        class_names: vec!["a".into(), "b".into(), "c".into()],
    };
    export::export_described(&selective(), dir.path(), false, &description).unwrap();
    (
        std::fs::read(dir.path().join("model.safetensors")).unwrap(),
        std::fs::read(dir.path().join("manifest.toml")).unwrap(),
    )
}

fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

fn png_bytes(w: u32, h: u32, colour: png::ColorType) -> Vec<u8> {
    let mut out = Vec::new();
    let n = (w * h) as usize * colour.samples();
    let data: Vec<u8> = (0..n).map(|i| (i * 37 % 256) as u8).collect();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(colour);
        enc.set_depth(png::BitDepth::Eight);
        enc.write_header().unwrap().write_image_data(&data).unwrap();
    }
    out
}

// ---------------------------------------------------------------------------------------
// The targets.

/// Runs a loaded model once, so that what loads also runs.
fn exercise(model: &Model) {
    let x = vec![0.5f32; 2 * model.input_size()];
    let mut out = vec![0.0f32; 2 * model.classes()];
    let _ = model.forward(&x, 2, &mut Scratch::new(), &mut out);
}

#[test]
fn fuzz_model_weights_bytes() {
    let (weights, manifest) = exported();
    fuzz("model-weights", vec![weights], 16 * MB, |w| {
        if let Ok(m) = Model::from_bytes(w, &manifest) {
            exercise(&m);
        }
        if let Ok(m) = Model::from_safetensors(w) {
            exercise(&m);
        }
    });
}

#[test]
fn fuzz_model_directory() {
    let (weights, manifest) = exported();
    let pad = Scratchpad::new();
    let dir = pad.0.path().to_path_buf();
    let seeds = vec![weights.clone(), manifest.clone()];
    fuzz("model-directory", seeds, 16 * MB, |bytes| {
        // Mutants of either file, beside an intact copy of the other.
        let is_weights = bytes.first().is_some_and(|&b| b != b'f' && b != b'[');
        let (w, m) = if is_weights {
            (bytes, &manifest[..])
        } else {
            (&weights[..], bytes)
        };
        pad.write("model.safetensors", w);
        pad.write("manifest.toml", m);
        if let Ok(model) = Model::load_dir(&dir) {
            exercise(&model);
        }
    });
}

#[test]
fn fuzz_manifest() {
    let (_, manifest) = exported();
    fuzz("manifest", vec![manifest], 4 * MB, |m| {
        if let Ok(text) = std::str::from_utf8(m) {
            let _ = Manifest::from_toml(text);
        }
    });
}

/// `weights` without the manifest copy in its metadata, so any manifest can go beside it.
fn without_metadata(weights: &[u8]) -> Vec<u8> {
    let n = u64::from_le_bytes(weights[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&weights[8..8 + n]).unwrap();
    header.as_object_mut().unwrap().remove("__metadata__");
    let mut json = serde_json::to_vec(&header).unwrap();
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    out.extend_from_slice(&weights[8 + n..]);
    out
}

/// Manifests whose preprocessing numbers sit at the edges of f32 (subnormal, the least
/// normal, 1e30, f32::MAX, infinities, NaN, negatives), as tables and as images. Whatever
/// loads must never answer with a non-finite logit: an image model must compute pixels 0
/// and 255 (its declared range), and any row either gives finite logits or an error.
#[test]
fn fuzz_manifest_extreme_preprocessing() {
    let (weights, manifest) = exported();
    let weights = without_metadata(&weights);
    let base = Manifest::from_toml(std::str::from_utf8(&manifest).unwrap()).unwrap();
    let edges = [
        0.0f32,
        1e-45,
        1e-38,
        f32::MIN_POSITIVE,
        1e-30,
        1e-15,
        1.0,
        255.0,
        1e15,
        1e30,
        3e38,
        f32::MAX,
        -1.0,
        -3e38,
        f32::INFINITY,
        f32::NAN,
    ];
    let mut seeds = Vec::new();
    for (i, &divisor) in edges.iter().enumerate() {
        for (j, &value) in edges.iter().enumerate() {
            let mut m = base.clone();
            let input = m.input.as_mut().unwrap();
            input.divisor = divisor;
            input.mean[(i + j) % 12] = value;
            input.std[(i * 7 + j) % 12] = edges[(i + 3 * j) % edges.len()];
            if (i + j) % 2 == 0 {
                input.feature_names.clear(); // an image of 3 x 4 pixels
            }
            if j % 5 == 0 {
                input.mean.clear();
            }
            seeds.push(m.to_toml().into_bytes());
        }
    }
    fuzz("manifest-preprocessing", seeds, 4 * MB, |m| {
        let Ok(model) = Model::from_bytes(&weights, m) else {
            return;
        };
        let n = model.input_size();
        let mut out = vec![0.0f32; 2 * model.classes()];
        let mut scratch = Scratch::new();
        let image = model.input_description().feature_names.is_empty();
        let pixels: Vec<f32> = (0..2 * n)
            .map(|i| if i < n { 0.0 } else { 255.0 })
            .collect();
        let result = model.forward_raw(&pixels, 2, &mut scratch, &mut out);
        if image {
            assert!(result.is_ok(), "pixels 0 and 255 refused: {result:?}");
        }
        if result.is_ok() {
            assert!(out.iter().all(|v| v.is_finite()), "{out:?}");
        }
        let rows: Vec<f32> = (0..2 * n).map(|i| (i as f32 - 7.0) * 1e3).collect();
        if model.forward_raw(&rows, 2, &mut scratch, &mut out).is_ok() {
            assert!(out.iter().all(|v| v.is_finite()), "{out:?}");
        }
    });
}

#[test]
fn fuzz_checkpoint() {
    let bytes = checkpoint::to_bytes(&selective());
    let mixed = checkpoint::to_bytes(&selective().to_mixed(None).unwrap());
    let dev = Cpu::default();
    fuzz("checkpoint", vec![bytes, mixed], 16 * MB, |b| {
        let _ = checkpoint::from_bytes(&dev, b, Path::new("fuzz.safetensors"));
    });
}

#[test]
fn fuzz_idx_raw_and_gzip() {
    let images = idx(&[3, 4, 5], &(0..60).collect::<Vec<u8>>());
    let labels = idx(&[3], &[0, 1, 2]);
    let seeds = vec![images.clone(), labels.clone(), gzip(&images), gzip(&labels)];
    let pad = Scratchpad::new();
    // The reader holds no more than the header declares: 4 MB, plus twice the declared
    // data (a growing buffer's doubling) for the mutant whose gzip really inflates to it.
    fuzz_bounded(
        "idx",
        seeds,
        |b| {
            idx_declared_bytes(b)
                .saturating_mul(2)
                .saturating_add(4 * MB)
        },
        |b| {
            let _ = read_idx(&pad.write("data", b));
        },
    );
}

/// The data size an IDX file's header declares (after gunzip), 0 if it has no header.
fn idx_declared_bytes(file: &[u8]) -> usize {
    use std::io::Read;
    let mut head = Vec::new();
    let reader: Box<dyn Read + '_> = if file.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let _ = reader.take(4 + 4 * 255).read_to_end(&mut head);
    let Some(&dims) = head.get(3) else {
        return 0;
    };
    head.get(4..4 + 4 * dims as usize).map_or(0, |d| {
        d.chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
            .try_fold(1usize, usize::checked_mul)
            .unwrap_or(0)
    })
}

#[test]
fn fuzz_train_config() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let seeds = ["configs/quick.toml", "configs/paper-representative.toml"]
        .iter()
        .map(|c| std::fs::read(root.join(c)).unwrap())
        .collect();
    fuzz("config", seeds, 4 * MB, |b| {
        if let Ok(text) = std::str::from_utf8(b) {
            if let Ok(cfg) = TrainConfig::from_toml_str(text, "fuzz") {
                let _ = cfg.check_memory("fuzz", 784, 10, 1 << 30);
                let _ = cfg.to_toml_string();
            }
        }
    });
}

#[test]
fn fuzz_sweep_config() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let seeds = vec![std::fs::read(root.join("configs/paper-sweep.toml")).unwrap()];
    fuzz("sweep", seeds, 8 * MB, |b| {
        if let Ok(text) = std::str::from_utf8(b) {
            let _ = SweepConfig::from_toml_str(text, "fuzz");
        }
    });
}

#[test]
fn fuzz_pgm() {
    let seeds = vec![
        b"P5 4 3 255\n\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b".to_vec(),
        b"P2\n# a comment\n4 3\n15\n0 1 2 3\n4 5 6 7\n8 9 10 11\n".to_vec(),
    ];
    fuzz("pgm", seeds, 4 * MB, |b| {
        let _ = parse_pgm(b, 784);
    });
}

#[test]
fn fuzz_png() {
    let seeds = vec![
        png_bytes(4, 3, png::ColorType::Grayscale),
        png_bytes(3, 2, png::ColorType::Rgba),
        png_bytes(2, 2, png::ColorType::Rgb),
    ];
    let pad = Scratchpad::new();
    fuzz("png", seeds, 4 * MB, |b| {
        let _ = read_png(&pad.write("image.png", b), 784);
    });
}

#[test]
fn fuzz_csv_tables() {
    let seeds = vec![
        b"size,species,weight\n1.5,alpha,2\n-3e2,beta,0.25\n\"4\",\"gamma, x\",5\n".to_vec(),
        b"a,species\n1,x\n,y\nfoo,z\n".to_vec(),
    ];
    let pad = Scratchpad::new();
    let names = ["size".to_string(), "weight".to_string()];
    fuzz("csv", seeds, 4 * MB, |b| {
        let _ = table::parse_table(b, "species", InvalidCells::Error);
        let _ = table::parse_table(b, "species", InvalidCells::Drop);
        let _ = table::read_rows(&pad.write("rows.csv", b), &names, 2);
    });
}

/// `eval`'s CSV header reader (it finds the label column in the header): each case is an
/// error or distinct names, and a table read with the last of them as its label has the
/// others as its features, in order.
#[test]
fn fuzz_csv_header_eval_infers_its_label_from() {
    let seeds = vec![
        b"size,species,weight\n1.5,alpha,2\n".to_vec(),
        b"\"a,b\", c ,species\n1,2,x\n".to_vec(),
    ];
    let pad = Scratchpad::new();
    fuzz("csv-header", seeds, 4 * MB, |b| {
        let Ok(header) = table::read_header(&pad.write("header.csv", b)) else {
            return;
        };
        let distinct: std::collections::HashSet<&String> = header.iter().collect();
        assert_eq!(distinct.len(), header.len(), "{header:?}");
        let Some(label) = header.last() else { return };
        if let Ok(t) = table::parse_table(b, label, InvalidCells::Error) {
            let others: Vec<&String> = header.iter().filter(|h| *h != label).collect();
            assert_eq!(t.features.iter().collect::<Vec<_>>(), others);
        }
    });
}

/// Header names the CSV reader sees alike or apart: repeated, spaced, quoted, with commas,
/// doubled quotes, control characters; the label among them or given twice.
const CSV_HEADER_NAMES: &[&str] = &[
    "a",
    "a",
    " a",
    "a ",
    "\"a\"",
    "A",
    "b",
    "\"a,b\"",
    "\"\"\"q\"\"\"",
    "\x1b[31mred\x1b[0m",
    "\t",
    "",
    "\0",
    "\u{7f}",
    "é",
    " species ",
    "\"species\"",
    "\"a\nb\"",
];

/// Tables whose headers mix [`CSV_HEADER_NAMES`] around a `species` column, from a seeded
/// generator, then mutants of them: each case is an error or a table whose invariants
/// hold (distinct feature names, none of them the label; `rows x features` finite values;
/// each row's label an index into distinct texts), and predict's rows have its width.
#[test]
fn fuzz_csv_headers_repeated_quoted_and_control() {
    let mut rng = StdRng::seed_from_u64(0x7ab1e5);
    let seeds: Vec<Vec<u8>> = (0..64)
        .map(|_| {
            let mut names: Vec<&str> = (0..rng.gen_range(1..=5))
                .map(|_| CSV_HEADER_NAMES[rng.gen_range(0..CSV_HEADER_NAMES.len())])
                .collect();
            names.insert(rng.gen_range(0..=names.len()), "species");
            let mut text = names.join(",") + "\n";
            for r in 0..rng.gen_range(1..=4) {
                let cells: Vec<String> = names
                    .iter()
                    .map(|n| match n.trim().trim_matches('"') {
                        "species" => ["x", "\"y,z\"", "\x1b[0m"][r % 3].to_string(),
                        _ => rng.gen_range(-9..=9).to_string(),
                    })
                    .collect();
                text += &(cells.join(",") + "\n");
            }
            text.into_bytes()
        })
        .collect();
    let pad = Scratchpad::new();
    let model_names = ["a".to_string(), "b".to_string()];
    fuzz("csv-headers", seeds, 4 * MB, |b| {
        for invalid in [InvalidCells::Error, InvalidCells::Drop] {
            let Ok(t) = table::parse_table(b, "species", invalid) else {
                continue;
            };
            let mut names = t.features.clone();
            names.push("species".into());
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), t.features.len() + 1, "{:?}", t.features);
            assert!(t.rows() > 0 && t.values.len() == t.rows() * t.features.len());
            assert!(t.values.iter().all(|v| v.is_finite()));
            assert!(t.row_labels.iter().all(|&l| (l as usize) < t.labels.len()));
            let mut labels = t.labels.clone();
            labels.sort_unstable();
            labels.dedup();
            assert_eq!(labels.len(), t.labels.len(), "{:?}", t.labels);
        }
        if let Ok(rows) = table::read_rows(&pad.write("rows.csv", b), &model_names, 2) {
            assert!(
                !rows.is_empty() && rows.len() % 2 == 0,
                "{} values",
                rows.len()
            );
            assert!(rows.iter().all(|v| v.is_finite()));
        }
    });
}

#[test]
fn fuzz_run_directory_readers() {
    let metrics = b"phase,epoch,train_loss,validation_loss,validation_accuracy,seconds,samples_per_second,grad_norm\nphase1,1,0.500000,0.400000,0.900000,1.000,100.0,0.100000\nphase2,1,0.300000,0.200000,0.950000,1.000,100.0,0.100000\n".to_vec();
    let choices = b"epoch,layer,activation,count\n1,1,relu,5\n1,1,tanh,3\n1,2,relu,6\n".to_vec();
    let summary = br#"{"mode":"smartmixed","architecture":[784,16,10],"seed":0,"split_seed":42,"train_samples":100,"validation_samples":10,"test_samples":10,"phases":[{"phase":"phase1","epochs":1,"best_epoch":1,"validation_loss":0.4,"validation_accuracy":0.9,"test_accuracy":0.9,"test_loss":0.4,"seconds":1.0,"checkpoint":"phase1-best.safetensors"}],"flush_denormals":true,"threads":2,"final_choices":[[["relu",10],["tanh",6]]],"seconds":2.0}"#.to_vec();
    let pad = Scratchpad::new();
    fuzz(
        "run-directory",
        vec![metrics, choices, summary],
        4 * MB,
        |b| {
            let _ = rundir::read_metrics(&pad.write("metrics.csv", b));
            let _ = rundir::read_choices(&pad.write("choices.csv", b));
            let _ = rundir::read_summary(&pad.write("summary.json", b));
        },
    );
}

/// Sets the stop flag (as Ctrl-C does) once epoch `epoch` of `phase` has finished.
struct ResumeStateStopAfter<'a> {
    phase: &'static str,
    epoch: usize,
    stop: &'a AtomicBool,
}

impl smartmixed_train::Progress for ResumeStateStopAfter<'_> {
    fn epoch(&mut self, r: &rundir::EpochRecord, _: Option<&[Vec<usize>]>) {
        if r.phase.name() == self.phase && r.epoch == self.epoch {
            self.stop.store(true, Ordering::Relaxed);
        }
    }
}

/// Safetensors `bytes` with their `__metadata__` edited by `edit` (the header rewritten;
/// tensor offsets are relative to the data, which stays).
fn resume_state_edited(
    bytes: &[u8],
    edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(header["__metadata__"].as_object_mut().unwrap());
    let text = serde_json::to_string(&header).unwrap();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&bytes[8 + n..]);
    out
}

/// A tiny run (12 inputs, hidden [4], 3 classes, 2 + 2 epochs of 4 batches) in a
/// directory whose files can be put back before each case.
struct ResumeStateRun {
    cfg: TrainConfig,
    data: smartmixed_train::data::Splits,
    dir: tempfile::TempDir,
    /// The run directory's files when the run stopped.
    files: Vec<(PathBuf, Vec<u8>)>,
}

impl ResumeStateRun {
    /// The run stopped after `epoch` of `phase`.
    fn stopped(phase: &'static str, epoch: usize) -> Self {
        use smartmixed_train::data::{Dataset, Splits};
        let cfg = TrainConfig::from_toml_str(
            "[model]\nhidden = [4]\npool = [\"relu\", \"tanh\"]\n[phase1]\nepochs = 2\nlr = 0.01\n[phase2]\nepochs = 2\nlr = 0.01\n[training]\nbatch_size = 8\nseed = 1\n",
            "fuzz",
        )
        .unwrap();
        let set = |n: usize, salt: usize| {
            let pixels = (0..n * 12).map(|i| ((i * 37 + salt) % 256) as u8).collect();
            Dataset::new(12, pixels, (0..n).map(|i| (i % 3) as u8).collect())
        };
        let data = Splits {
            train: set(30, 0),
            validation: set(9, 1),
            test: set(9, 2),
            classes: 3,
            class_names: Vec::new(),
            dropped_rows: 0,
            imprecise_features: Vec::new(),
        };
        // On tmpfs where there is one: every case rewrites the run's files, and a resumed
        // case syncs each file it writes, which costs milliseconds on a disk.
        let dir = tempfile::tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .unwrap();
        let stop = AtomicBool::new(false);
        let mut progress = ResumeStateStopAfter {
            phase,
            epoch,
            stop: &stop,
        };
        let mut run = rundir::RunDir::create(dir.path()).unwrap();
        let err = smartmixed_train::Trainer {
            dev: &Cpu::default(),
            config: &cfg,
            data: &data,
            run: &mut run,
            progress: &mut progress,
            stop: &stop,
            threads: 1,
        }
        .run()
        .unwrap_err();
        assert!(matches!(err, smartmixed_train::Error::Interrupted), "{err}");
        let files = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
            .collect();
        Self {
            cfg,
            data,
            dir,
            files,
        }
    }

    fn state(&self) -> Vec<u8> {
        let state = self.dir.path().join(rundir::STATE);
        self.files
            .iter()
            .find(|(p, _)| *p == state)
            .unwrap()
            .1
            .clone()
    }

    /// The run directory put back, with `state` as its state file, resumed.
    fn resume(&self, state: &[u8]) -> Result<smartmixed_train::Summary, String> {
        let _ = std::fs::remove_file(self.dir.path().join(rundir::SUMMARY));
        for (p, bytes) in &self.files {
            std::fs::write(p, bytes).unwrap();
        }
        std::fs::write(self.dir.path().join(rundir::STATE), state).unwrap();
        let mut run = rundir::RunDir::open(self.dir.path()).map_err(|e| e.to_string())?;
        smartmixed_train::Trainer {
            dev: &Cpu::default(),
            config: &self.cfg,
            data: &self.data,
            run: &mut run,
            progress: &mut smartmixed_train::Silent,
            stop: &AtomicBool::new(false),
            threads: 1,
        }
        .resume()
        .map_err(|e| e.to_string())
    }
}

/// Run states with extreme positions (issue 18): the states of a tiny run stopped in
/// phase 1 and in phase 2, each position field set to 0, 1, the budget, the budget + 1,
/// u64::MAX, negative, NaN, infinite or missing. Each must be refused with an error naming
/// the field, or resume to a summary within the budgets (and, for an unchanged value,
/// exactly the uninterrupted run's); then seeded mutants of them go through the harness
/// (no panic, hang or unbounded allocation on this thread).
#[test]
fn fuzz_resume_state_positions() {
    use serde_json::{json, Value};
    let runs = [
        ResumeStateRun::stopped("phase1", 1),
        ResumeStateRun::stopped("phase2", 1),
    ];
    let whole = runs[0].resume(&runs[0].state()).unwrap();
    let budget = 2u64;
    let batches = 4u64; // 30 rows at batch 8
    let integers = [
        json!(0),
        json!(1),
        json!(budget),
        json!(budget + 1),
        json!(u64::MAX),
        json!(-1),
        json!(1.5),
    ];
    let floats = [
        json!(0.0),
        json!(1.0),
        json!(-1.0),
        Value::Null,
        json!(1e308),
    ];
    // (position field as a JSON pointer, the name an error must give, values to try).
    let mut cases: Vec<(&str, &str, Vec<Value>)> = vec![
        ("/epochs_done", "epochs_done", integers.to_vec()),
        ("/best_epoch", "best_epoch", integers.to_vec()),
        ("/seconds", "seconds", floats.to_vec()),
        ("/best_validation/loss", "best_validation", floats.to_vec()),
        (
            "/best_validation/accuracy",
            "best_validation",
            floats.to_vec(),
        ),
        (
            "/phase",
            "phase",
            vec![
                json!("phase1"),
                json!("phase2"),
                json!("fixed"),
                json!("x"),
                json!(1),
            ],
        ),
        ("/watch/lowest_loss/0", "watch", integers.to_vec()),
        ("/watch/lowest_loss/1", "watch", floats.to_vec()),
        ("/watch/last_change/0/0", "watch", integers.to_vec()),
        (
            "/completed",
            "completed",
            vec![json!([]), json!(null), json!(5)],
        ),
    ];
    for field in ["epochs", "best_epoch"] {
        cases.push((
            if field == "epochs" {
                "/completed/0/epochs"
            } else {
                "/completed/0/best_epoch"
            },
            "completed",
            integers.to_vec(),
        ));
    }
    for field in ["seconds", "validation_loss", "test_accuracy"] {
        let pointer = match field {
            "seconds" => "/completed/0/seconds",
            "validation_loss" => "/completed/0/validation_loss",
            _ => "/completed/0/test_accuracy",
        };
        cases.push((pointer, "completed", floats.to_vec()));
    }
    let mut seeds = Vec::new();
    let (mut checked, mut resumed) = (0, 0);
    for run in &runs {
        let state = run.state();
        // (case, the name an error must give, the state, whether the value is unchanged).
        let mut edits: Vec<(String, &str, Vec<u8>, bool)> = Vec::new();
        for (pointer, name, values) in &cases {
            for v in values.iter().map(Some).chain([None]) {
                let (mut missing, mut unchanged) = (false, false);
                let bytes = resume_state_edited(&state, |m| {
                    let mut p: Value = serde_json::from_str(m["resume"].as_str().unwrap()).unwrap();
                    unchanged = p.pointer(pointer) == v;
                    let (parent, key) = pointer.rsplit_once('/').unwrap();
                    match (p.pointer_mut(parent), v) {
                        (Some(Value::Object(o)), Some(v)) => {
                            o.insert(key.to_string(), v.clone());
                        }
                        (Some(Value::Object(o)), None) => {
                            o.remove(key);
                        }
                        (Some(Value::Array(a)), v) => {
                            match (key.parse::<usize>().ok().and_then(|i| a.get_mut(i)), v) {
                                (Some(slot), Some(v)) => *slot = v.clone(),
                                _ => missing = true,
                            }
                        }
                        _ => missing = true,
                    }
                    m.insert("resume".into(), p.to_string().into());
                });
                if !missing {
                    edits.push((format!("{pointer} = {v:?}"), *name, bytes, unchanged));
                }
            }
        }
        let meta_values = [
            "0".to_string(),
            "1".into(),
            (budget * batches).to_string(),
            (budget * batches + 1).to_string(),
            u64::MAX.to_string(),
            "-1".into(),
            "NaN".into(),
            "inf".into(),
            "1e308".into(),
        ];
        for key in ["adam_step", "temperature"] {
            for v in meta_values.iter().map(Some).chain([None]) {
                let bytes = resume_state_edited(&state, |m| match v {
                    Some(v) => {
                        m.insert(key.into(), v.clone().into());
                    }
                    None => {
                        m.remove(key);
                    }
                });
                edits.push((format!("{key} = {v:?}"), key, bytes, false));
            }
        }
        let figures = |s: &smartmixed_train::Summary| -> Vec<(usize, usize, f64, f64)> {
            let p = s.phases.iter();
            p.map(|p| (p.epochs, p.best_epoch, p.validation_loss, p.test_accuracy))
                .collect()
        };
        for (case, name, bytes, unchanged) in edits {
            match run.resume(&bytes) {
                Err(e) => {
                    assert!(
                        e.contains(name) && e.contains(rundir::STATE) && !e.contains('\n'),
                        "{case}: `{name}` not named in: {e}"
                    );
                }
                Ok(summary) => {
                    for p in &summary.phases {
                        assert!(
                            (1..=budget as usize).contains(&p.epochs)
                                && (1..=p.epochs).contains(&p.best_epoch),
                            "{case}: resumed to {p:?}"
                        );
                    }
                    if unchanged {
                        assert_eq!(figures(&summary), figures(&whole), "{case}");
                    }
                    resumed += 1;
                }
            }
            checked += 1;
            seeds.push(bytes);
        }
        seeds.push(state);
    }
    eprintln!("fuzz resume-state: {checked} extreme positions, {resumed} resumed, the rest refused by name");
    let pad = &runs[0];
    fuzz("resume-state", seeds, 16 * MB, |b| {
        let _ = pad.resume(b);
    });
}

/// A sweep config for the merge targets: huge seeds and several architectures.
const FUZZ_SWEEP: &str = "[sweep]\narchitectures = [[6], [4, 3]]\nmethods = [\"relu\", \"tanh\", \"smartmixed\"]\nseeds = [0, 1, 9223372036854775807]\n[phase1]\nepochs = 1\n[phase2]\nepochs = 1\n[data]\nclasses = 2\n";

/// A finished cell's summary.json with this test accuracy.
fn fuzz_cell_summary(test_accuracy: f64) -> String {
    format!(
        r#"{{"mode":"fixed","architecture":[30,6,2],"seed":0,"split_seed":42,"train_samples":100,"validation_samples":10,"test_samples":10,"phases":[{{"phase":"fixed","epochs":3,"best_epoch":1,"validation_loss":0.4,"validation_accuracy":0.5,"test_accuracy":{test_accuracy},"test_loss":0.4,"seconds":1.0,"checkpoint":"fixed-best.safetensors"}}],"seconds":2.5}}"#
    )
}

/// Sweep shards whose cell directories have hostile names (commas, quotes, newlines,
/// non-UTF-8 bytes, unknown methods, huge seeds and architecture numbers), the same name
/// in both shards (identical or not) and, for some cases, shards of different configs:
/// the merge plan is made or refused, never panics, and the results.csv of a plan reads
/// back with the csv crate as one ten-field row per planned cell.
#[cfg(unix)]
#[test]
fn fuzz_sweep_shard_names_merge() {
    use std::os::unix::ffi::OsStrExt;
    let seeds: Vec<Vec<u8>> = [
        "a01-relu-s0",
        "a02-tanh-s9223372036854775807",
        "a01-smartmixed-s1",
        "a01-re,lu-s0",
        "a01-re\"lu-s0",
        "a01-relu\n-s0",
        "a01-gelu-s0",
        "a99999999999999999999-relu-s0",
        "a01-relu-s18446744073709551615",
        "a00-relu-s0",
        "a1-relu-s0",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    let pad = Scratchpad::new();
    let mixed = FUZZ_SWEEP.replace("seeds = [0, 1,", "seeds = [0, 2,");
    // Two shards with one ordinary cell each, made once; each case adds its own.
    const FIXED: [&str; 2] = ["a02-relu-s0", "a01-tanh-s0"];
    let shards = [pad.0.path().join("a"), pad.0.path().join("b")];
    for (shard, cell) in shards.iter().zip(FIXED) {
        let dir = shard.join("cells").join(cell);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("summary.json"), fuzz_cell_summary(0.5)).unwrap();
        std::fs::write(shard.join("sweep.toml"), FUZZ_SWEEP).unwrap();
    }
    let merged = std::sync::atomic::AtomicUsize::new(0);
    fuzz("sweep-shard-names", seeds, 4 * MB, |name| {
        // Names a file system cannot hold are not directories anyone can make.
        if name.is_empty() || name.len() > 255 || name.contains(&b'/') || name.contains(&0) {
            return;
        }
        if name == b"." || name == b".." {
            return;
        }
        let name = std::ffi::OsStr::from_bytes(name);
        if FIXED.iter().any(|f| std::ffi::OsStr::new(f) == name) {
            return;
        }
        // Some cases merge shards of different configs.
        let variant = name.len() % 3;
        let config = if variant == 0 {
            mixed.as_str()
        } else {
            FUZZ_SWEEP
        };
        std::fs::write(shards[1].join("sweep.toml"), config).unwrap();
        // The hostile name in both shards: an identical copy, or another result.
        let hostile: Vec<PathBuf> = shards.iter().map(|s| s.join("cells").join(name)).collect();
        for (k, dir) in hostile.iter().enumerate() {
            std::fs::create_dir_all(dir).unwrap();
            let acc = if k == 1 && variant == 1 { 0.25 } else { 0.75 };
            std::fs::write(dir.join("summary.json"), fuzz_cell_summary(acc)).unwrap();
        }
        sweep_merge_plan_reads_back(&shards, &merged);
        for dir in &hostile {
            let _ = std::fs::remove_dir_all(dir);
        }
    });
    // The valid seeds merge: the target reaches results.csv, not only refusals.
    assert!(merged.load(Ordering::Relaxed) >= 3);
}

/// Plans the merge of `shards`; a plan's results.csv must read back with the csv crate as
/// one ten-field row per planned cell.
#[cfg(unix)]
fn sweep_merge_plan_reads_back(shards: &[PathBuf], merged: &std::sync::atomic::AtomicUsize) {
    use smartmixed_train::sweep::{plan_merge, results_csv, ResultRow, RESULTS_HEADER};
    let Ok(plan) = plan_merge(shards) else {
        return;
    };
    merged.fetch_add(1, Ordering::Relaxed);
    let rows: Vec<ResultRow> = plan
        .cells
        .iter()
        .map(|(cell, dir)| {
            let s = rundir::read_summary(&dir.join("summary.json")).unwrap();
            ResultRow {
                cell: cell.clone(),
                validation_accuracy: s.phases[0].validation_accuracy,
                test_accuracy: s.phases[0].test_accuracy,
                best_epoch: s.phases[0].best_epoch,
                epochs: s.phases[0].epochs,
                seconds: s.seconds,
            }
        })
        .collect();
    let bytes = results_csv(&rows).unwrap();
    let mut r = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(&bytes[..]);
    assert_eq!(r.headers().unwrap().len(), RESULTS_HEADER.len());
    let records: Vec<csv::StringRecord> = r.records().map(|r| r.unwrap()).collect();
    assert_eq!(records.len(), rows.len());
    for (rec, row) in records.iter().zip(&rows) {
        assert_eq!(rec.len(), RESULTS_HEADER.len(), "{rec:?}");
        assert_eq!(&rec[0], row.cell.id());
    }
}

/// A choices.csv of thousands of layers through the reader the run report draws from:
/// at most 24 bands whatever the layer numbers, memory bounded by the rows.
#[test]
fn fuzz_report_choices_of_thousands_of_layers() {
    let many = |layers: usize, epochs: usize| {
        let mut csv = String::from("epoch,layer,activation,count\n");
        for e in 1..=epochs {
            for l in 1..=layers {
                csv.push_str(&format!("{e},{l},relu,{}\n{e},{l},tanh,{}\n", l % 7, e));
            }
        }
        csv.into_bytes()
    };
    let seeds = vec![many(3000, 1), many(1000, 3), many(30, 2)];
    let pad = Scratchpad::new();
    fuzz("report-choices", seeds, 8 * MB, |b| {
        if let Ok(s) = rundir::read_choice_shares(&pad.write("choices.csv", b), 24) {
            assert!(s.bands.len() <= 24 && s.bands.len() <= s.layers);
            for band in &s.bands {
                assert!(band.layers.0 <= band.layers.1);
                assert_eq!(band.series.len(), s.activations.len());
            }
        }
    });
}

// ---------------------------------------------------------------------------------------
// The harness itself can fail.

#[test]
#[should_panic(expected = "panicked")]
fn the_harness_reports_a_panicking_parser() {
    fuzz("self-test", vec![b"boom".to_vec()], MB, |b| {
        assert!(!b.starts_with(b"boom"), "boom");
    });
}

#[test]
#[should_panic(expected = "more than the bound")]
fn the_harness_reports_a_parser_that_allocates_too_much() {
    fuzz("self-test", vec![vec![1]], MB, |_| {
        std::hint::black_box(vec![1u8; 2 * MB]);
    });
}

// ---------------------------------------------------------------------------------------
// The same allocator checks the runtime's promise of no allocation once warm.

/// A warm `Model::forward` allocates nothing on the calling thread: on one thread at every
/// batch size, and with columns or rows split over a pool's workers.
#[test]
fn a_warm_forward_allocates_nothing() {
    let (weights, manifest) = exported();
    for threads in [1, 2] {
        let model = Model::from_bytes(&weights, &manifest)
            .unwrap()
            .with_pool(smartmixed_infer::Pool::new(threads).unwrap());
        let mut scratch = Scratch::new();
        for batch in [1, 3, 4, 32, 100, 256] {
            let x = vec![0.25f32; batch * model.input_size()];
            let mut out = vec![0.0f32; batch * model.classes()];
            model.forward(&x, batch, &mut scratch, &mut out).unwrap();
            let peak = peak_during(|| {
                for _ in 0..10 {
                    model.forward(&x, batch, &mut scratch, &mut out).unwrap();
                }
            });
            assert_eq!(
                peak, 0,
                "{threads} threads, batch {batch}: allocated {peak} bytes"
            );
        }
    }
}
