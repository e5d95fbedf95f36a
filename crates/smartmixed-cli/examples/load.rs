//! A load test of the runtime and of `smartmixed-cli serve`, bounded in time and count:
//! for 1, 8 and 64 concurrent callers of one row each, the samples per second and latency
//! percentiles of (a) each caller running its own batch-1 `forward` (no batching), (b)
//! the in-process `BatchedModel`, and (c) `smartmixed-cli serve` over loopback HTTP
//! (keep-alive connections on one client thread's event loop, JSON or binary bodies),
//! started from the binary beside this example.
//!
//! ```text
//! cargo build --release -p smartmixed-cli --examples --bins
//! target/release/examples/load MODEL_DIR [SECONDS_PER_CONFIGURATION] [MAX_WAIT_US] [SERVER_THREADS]
//! ```

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use smartmixed_infer::{BatchOptions, BatchedModel, Model, Scratch};

/// Requests per caller at most, whatever the time allows.
const MAX_REQUESTS: usize = 200_000;

/// Runs `callers` threads, each calling `call` until `seconds` have passed (or the cap);
/// returns (samples/s, p50 ms, p99 ms, errors).
fn measure<C: FnMut() -> bool + Send>(
    callers: usize,
    seconds: f64,
    make: impl Fn(usize) -> C + Sync,
) -> (f64, f64, f64, usize) {
    let stop = AtomicBool::new(false);
    let start_line = Barrier::new(callers + 1);
    let (latencies, errors, elapsed) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..callers)
            .map(|i| {
                let (stop, start_line, make) = (&stop, &start_line, &make);
                s.spawn(move || {
                    let mut call = make(i);
                    let (mut lat, mut errors) = (Vec::new(), 0usize);
                    start_line.wait();
                    while !stop.load(Ordering::Relaxed) && lat.len() < MAX_REQUESTS {
                        let t = Instant::now();
                        if !call() {
                            errors += 1;
                        }
                        lat.push(t.elapsed().as_secs_f64() * 1e3);
                    }
                    (lat, errors)
                })
            })
            .collect();
        start_line.wait();
        let t = Instant::now();
        std::thread::sleep(Duration::from_secs_f64(seconds));
        stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        let mut errors = 0;
        for h in handles {
            let (lat, e) = h.join().unwrap();
            all.extend(lat);
            errors += e;
        }
        (all, errors, t.elapsed().as_secs_f64())
    });
    summary(latencies, errors, elapsed)
}

/// (requests/s, p50 ms, p99 ms, errors) of the latencies (ms) seen in `elapsed` seconds.
fn summary(mut lat: Vec<f64>, errors: usize, elapsed: f64) -> (f64, f64, f64, usize) {
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    (lat.len() as f64 / elapsed, pct(0.5), pct(0.99), errors)
}

/// One keep-alive HTTP/1.1 connection posting the same body again and again.
struct Client {
    stream: tokio::net::TcpStream,
    request: Arc<Vec<u8>>,
    /// The answer being read.
    buf: Vec<u8>,
}

/// The request `Client` sends: a JSON body, or with `binary` f32 little-endian values.
fn request(addr: &str, row: &[f32], binary: bool) -> Vec<u8> {
    let (kind, body) = if binary {
        let bytes = row.iter().flat_map(|v| v.to_le_bytes()).collect();
        ("application/octet-stream", bytes)
    } else {
        let json = serde_json::json!({ "inputs": [row] }).to_string();
        ("application/json", json.into_bytes())
    };
    let mut request = format!(
        "POST /v1/predict HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    request
}

impl Client {
    async fn connect(addr: &str, request: Arc<Vec<u8>>) -> Self {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect to the server");
        stream.set_nodelay(true).ok();
        Self {
            stream,
            request,
            buf: Vec::with_capacity(4096),
        }
    }

    /// One request and its whole answer; true for a 200.
    async fn call(&mut self) -> bool {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        if self.stream.write_all(&self.request).await.is_err() {
            return false;
        }
        self.buf.clear();
        let (status, total) = loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]);
                let status: u16 = head
                    .strip_prefix("HTTP/1.1 ")
                    .and_then(|h| h.get(..3))
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
                let length: usize = head
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.trim().parse().ok())
                    .unwrap_or(0);
                break (status, end + 4 + length);
            }
            if !matches!(self.stream.read_buf(&mut self.buf).await, Ok(n) if n > 0) {
                return false;
            }
        };
        while self.buf.len() < total {
            if !matches!(self.stream.read_buf(&mut self.buf).await, Ok(n) if n > 0) {
                return false;
            }
        }
        status == 200
    }
}

/// `clients` connections to the server, each posting one row at a time until `seconds`
/// have passed (or the cap), all on one thread's event loop, as load generators such as
/// wrk do: a thread a connection would spend the two cores the server runs on in
/// switching between 64 client threads. Returns what [`measure`] does.
fn measure_served(
    clients: usize,
    seconds: f64,
    addr: &str,
    row: &[f32],
    binary: bool,
) -> (f64, f64, f64, usize) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("start the client's event loop");
    let request = Arc::new(request(addr, row, binary));
    let (lat, errors, elapsed) = runtime.block_on(async {
        let mut connected = Vec::new();
        for _ in 0..clients {
            connected.push(Client::connect(addr, request.clone()).await);
        }
        let start = Instant::now();
        let deadline = start + Duration::from_secs_f64(seconds);
        let tasks: Vec<_> = connected
            .into_iter()
            .map(|mut client| {
                tokio::spawn(async move {
                    let (mut lat, mut errors) = (Vec::new(), 0usize);
                    while Instant::now() < deadline && lat.len() < MAX_REQUESTS {
                        let t = Instant::now();
                        if !client.call().await {
                            errors += 1;
                        }
                        lat.push(t.elapsed().as_secs_f64() * 1e3);
                    }
                    (lat, errors)
                })
            })
            .collect();
        let (mut all, mut errors) = (Vec::new(), 0);
        for t in tasks {
            let (lat, e) = t.await.expect("a client task");
            all.extend(lat);
            errors += e;
        }
        (all, errors, start.elapsed().as_secs_f64())
    });
    summary(lat, errors, elapsed)
}

fn print(what: &str, callers: usize, r: (f64, f64, f64, usize)) {
    println!(
        "| {what} | {callers} | {:.0} | {:.3} | {:.3} | {} |",
        r.0, r.1, r.2, r.3
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(dir) = args.get(1) else {
        eprintln!("usage: load MODEL_DIR [SECONDS_PER_CONFIGURATION]");
        std::process::exit(2);
    };
    let seconds: f64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let max_wait = args
        .get(3)
        .and_then(|s| s.parse().ok())
        .map_or(BatchOptions::default().max_wait, Duration::from_micros);
    let model = Arc::new(Model::load_dir(dir).unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(2)
    }));
    let row: Vec<f32> = (0..model.input_size())
        .map(|i| (i * 37 % 256) as f32)
        .collect();
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.parent()?.parent()?.join("smartmixed-cli")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| {
            eprintln!(
                "error: no smartmixed-cli beside the examples directory: build it first \
                 (cargo build --release -p smartmixed-cli --bins)"
            );
            std::process::exit(2)
        });
    let mut server = Command::new(&binary)
        .args(["serve", "--model", dir, "--addr", "127.0.0.1:0"])
        .arg(format!("--max-wait-us={}", max_wait.as_micros()))
        .args(args.get(4).map(|t| format!("--threads={t}")))
        .stdout(Stdio::piped())
        .spawn()
        .expect("start smartmixed-cli serve");
    let mut first = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let addr = first
        .trim()
        .trim_start_matches("listening on http://")
        .to_string();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "{} cores; {seconds} s per configuration; rows of {} values",
        cores,
        row.len()
    );
    println!("| path | callers | samples/s | p50 ms | p99 ms | errors |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let options = BatchOptions {
        max_wait,
        ..BatchOptions::default()
    };
    let batched = BatchedModel::new(model.clone(), options).unwrap();
    let in_process = |callers: usize| {
        measure(callers, seconds, |_| {
            let (batched, row) = (&batched, row.clone());
            move || batched.logits(&row).is_ok()
        })
    };
    for callers in [1, 8, 64] {
        print(
            "unbatched, own Scratch::new()",
            callers,
            measure(callers, seconds, |_| {
                let (model, row) = (model.clone(), row.clone());
                let mut scratch = Scratch::new();
                let mut out = vec![0.0; model.classes()];
                move || model.forward_raw(&row, 1, &mut scratch, &mut out).is_ok()
            }),
        );
        let before = batched.stats();
        let m = in_process(callers);
        let after = batched.stats();
        let per_batch = (after.requests - before.requests) as f64
            / (after.batches - before.batches).max(1) as f64;
        print(
            &format!("in-process BatchedModel ({per_batch:.1} rows a batch)"),
            callers,
            m,
        );
        for (what, binary) in [
            ("served, JSON rows", false),
            ("served, binary f32 rows", true),
        ] {
            print(
                what,
                callers,
                measure_served(callers, seconds, &addr, &row, binary),
            );
        }
    }
    // The served target is a ratio of two figures, and this machine's speed drifts between
    // configurations: take it from pairs measured back to back.
    let ratios: Vec<String> = (0..3)
        .map(|_| {
            let batched = in_process(64).0;
            let served = measure_served(64, seconds, &addr, &row, true).0;
            format!("{served:.0}/{batched:.0} = {:.2}", served / batched)
        })
        .collect();
    println!(
        "served binary / in-process batched rows/s at 64, three pairs back to back: {}",
        ratios.join(", ")
    );
    // SAFETY: signals the server this program started and owns.
    #[cfg(unix)]
    unsafe {
        libc::kill(server.id() as libc::pid_t, libc::SIGTERM);
    }
    let _ = server.wait();
}
