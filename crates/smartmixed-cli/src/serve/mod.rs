//! `smartmixed-cli serve`: an exported model behind HTTP, on the runtime's dynamic batcher
//! ([`BatchedModel`]): `POST /v1/predict` (JSON rows of raw values, or f32 little-endian
//! rows), `GET /v1/model`, `GET /healthz`, `GET /metrics` (Prometheus text). A full queue
//! answers 503, a bad request 400 with a one-line reason, a body over the limit 413;
//! SIGTERM or Ctrl-C stops accepting connections and finishes the requests already taken
//! (within a deadline). The accept loop and its limits are in `conn`, the reading of a
//! request's body in `body`.

mod body;
mod conn;
mod json_rows;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use smartmixed_infer::{
    BatchOptions, BatchedModel, Error, LoadOptions, Model, Pool, Precision, Prediction,
    BATCH_BUCKETS,
};

#[derive(clap::Args)]
pub struct ServeArgs {
    /// An exported model directory (model.safetensors + manifest.toml).
    #[arg(long)]
    model: PathBuf,
    /// The arithmetic: f32 (the trainer's), bf16 (weights and each layer's input
    /// rounded to bf16, f32 sums) or int8 (i8 weights scaled per neuron, each layer's
    /// input quantised per row, i32 sums).
    #[arg(long, default_value = "f32")]
    precision: Precision,
    /// Address to listen on (port 0: any free port; the one taken is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Most rows the batcher runs in one forward pass.
    #[arg(long, default_value_t = 32)]
    max_batch: usize,
    /// Longest a row waits for others to join its batch, in microseconds (0: a batch
    /// starts whenever the batcher is free, with every row queued by then; at most 1 s).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    max_wait_us: u64,
    /// Microseconds a row may wait, past --max-wait-us, for as many rows as the last batch
    /// had (clients just answered sending their next request); 0: never.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    regather_us: u64,
    /// Rows that may wait; a request whose rows do not all fit is answered 503, one with
    /// more rows than this 413.
    #[arg(long, default_value_t = 1024)]
    queue: usize,
    /// Threads of the model's pool, which runs each batch: 0 (the default) every core this
    /// process may use, else 1 up to that many (more would only wait for a core).
    #[arg(long, default_value_t = 0, value_parser = parse_threads)]
    threads: usize,
    /// Largest request body accepted, in bytes (larger: 413, from the Content-Length
    /// before any of the body is read).
    #[arg(long, default_value_t = 8 << 20, value_parser = clap::value_parser!(u64).range(1..=1 << 30))]
    max_body_bytes: u64,
    /// Connections open at once; more wait in the kernel's backlog until one closes.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    max_connections: u64,
    /// Milliseconds a connection may take to send a request's headers, the idle time
    /// between keep-alive requests included; then it is closed.
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    header_timeout_ms: u64,
    /// Milliseconds a request's body may take to arrive after its headers (later: 408).
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    body_timeout_ms: u64,
    /// Milliseconds the open connections get to finish after SIGTERM or Ctrl-C; then
    /// (or at a second signal) they are dropped and the server exits with an error.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    drain_timeout_ms: u64,
}

/// The cores this process may use (affinity and cgroup quotas followed), as the pool's
/// own default counts them.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `--threads`: 0 (every core) up to the cores this process may use. A pool runs one
/// batch at a time, so threads past the cores only take turns on them.
fn parse_threads(s: &str) -> std::result::Result<usize, String> {
    let cores = cores();
    match s.parse::<usize>() {
        Ok(n) if n <= cores => Ok(n),
        _ => Err(format!(
            "expected a thread count from 0 (every core) to {cores} (the cores this process may use)"
        )),
    }
}

/// Upper bounds of the request-latency histogram, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// What every handler shares: the batcher and the server's own counters.
struct App {
    batched: BatchedModel,
    body: body::BodyLimits,
    connections: Arc<conn::ConnStats>,
    /// `GET /v1/model`'s answer, made once.
    description: Value,
    requests: AtomicU64,
    errors: AtomicU64,
    rows: AtomicU64,
    /// Per bucket of [`LATENCY_BUCKETS`] (then +Inf), and the sum in microseconds.
    latency: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    latency_sum_us: AtomicU64,
}

/// A request answered with a status and a one-line reason.
struct Failure(StatusCode, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": crate::shown(&self.1) }))).into_response()
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let status = match e {
            Error::QueueFull { .. } | Error::ShutDown => StatusCode::SERVICE_UNAVAILABLE,
            Error::InputSize { .. }
            | Error::NonFiniteInput { .. }
            | Error::NonFinitePreprocessed { .. }
            | Error::NonFiniteOutput { .. } => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Failure(status, e.to_string())
    }
}

fn bad(message: String) -> Failure {
    Failure(StatusCode::BAD_REQUEST, message)
}

/// The model as `GET /v1/model` describes it.
fn describe(model: &Model) -> Value {
    let m = model.manifest();
    let input = model.input_description();
    let mut architecture = vec![m.inputs];
    architecture.extend(m.layers.iter().map(|l| l.outputs));
    let groups: Vec<Value> = model
        .group_sizes()
        .iter()
        .map(|layer| {
            layer
                .iter()
                .map(
                    |(activation, neurons)| json!({ "activation": activation, "neurons": neurons }),
                )
                .collect()
        })
        .collect();
    json!({
        "precision": model.precision().name(),
        "kernel": model.kernel_description(),
        "threads": model.pool().threads(),
        "architecture": architecture,
        "input": {
            "shape": input.shape,
            "divisor": input.divisor,
            "mean": input.mean,
            "std": input.std,
            "feature_names": input.feature_names,
        },
        "classes": (0..model.classes()).map(|c| model.class_name(c)).collect::<Vec<_>>(),
        "groups": groups,
    })
}

/// What a predict body holds, by its `Content-Type`.
#[derive(Debug, PartialEq, Eq)]
enum BodyKind {
    Json,
    Binary,
}

/// The body's kind from its media type (RFC 9110: the type and subtype are
/// case-insensitive, and parameters such as `; charset=utf-8` follow a `;`). No
/// `Content-Type` is JSON; an unknown type is a 415, not a guess.
fn body_kind(headers: &HeaderMap) -> std::result::Result<BodyKind, Failure> {
    // A compressed body read as rows would be answered as if it were some (RFC 9110: 415
    // for a content coding the server does not take).
    for coding in headers.get_all(header::CONTENT_ENCODING) {
        // A list (`gzip, identity`) over one or more lines; empty elements are no coding.
        let text = coding.to_str().unwrap_or("\u{fffd}");
        let plain = text
            .split(',')
            .map(str::trim)
            .all(|c| c.is_empty() || c.eq_ignore_ascii_case("identity"));
        if !plain {
            return Err(Failure(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "Content-Encoding `{}`: not supported, expected an unencoded body",
                    crate::shown(&String::from_utf8_lossy(coding.as_bytes()))
                ),
            ));
        }
    }
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(BodyKind::Json);
    };
    let text = value.to_str().unwrap_or("");
    let media = text.split(';').next().unwrap_or("").trim();
    if media.eq_ignore_ascii_case("application/json") {
        Ok(BodyKind::Json)
    } else if media.eq_ignore_ascii_case("application/octet-stream") {
        Ok(BodyKind::Binary)
    } else {
        Err(Failure(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Content-Type `{}`: expected application/json or application/octet-stream (f32 little-endian rows)",
                crate::shown(&String::from_utf8_lossy(value.as_bytes()))
            ),
        ))
    }
}

/// A request the queue could never hold would get 503 (try later) for ever: refused for
/// good, before any of its rows is queued (or built: a row of one value costs ten times
/// its bytes as a `Vec`).
fn check_rows(rows: usize, capacity: usize) -> std::result::Result<(), Failure> {
    if rows > capacity {
        return Err(Failure(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{rows} rows in one request, more than the queue holds (--queue {capacity}): send at most {capacity} rows a request"
            ),
        ));
    }
    Ok(())
}

/// The rows of a request body: JSON `{"inputs": [[...], ...]}`, or with
/// `Content-Type: application/octet-stream` f32 little-endian rows back to back; at most
/// `capacity` of them.
fn rows(
    kind: BodyKind,
    body: &[u8],
    width: usize,
    capacity: usize,
) -> std::result::Result<Vec<Vec<f32>>, Failure> {
    if kind == BodyKind::Binary {
        let row_bytes = width * 4;
        if body.is_empty() || !body.len().is_multiple_of(row_bytes) {
            return Err(bad(format!(
                "binary body of {} bytes, expected a whole number of rows of {width} f32 values ({row_bytes} bytes each)",
                body.len()
            )));
        }
        check_rows(body.len() / row_bytes, capacity)?;
        let rows: Vec<Vec<f32>> = body
            .chunks_exact(row_bytes)
            .map(|r| {
                r.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            })
            .collect();
        for (i, row) in rows.iter().enumerate() {
            if let Some(j) = row.iter().position(|v| !v.is_finite()) {
                return Err(bad(format!(
                    "row {i}, value {j}: {}, expected a finite number",
                    row[j]
                )));
            }
        }
        return Ok(rows);
    }
    let values = json_rows::parse(body, width).map_err(bad)?;
    check_rows(values.len() / width.max(1), capacity)?;
    Ok(values.chunks_exact(width).map(<[f32]>::to_vec).collect())
}

async fn predict(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Response {
    let start = Instant::now();
    // The media type first: a body that could not be parsed is not read.
    let result = match body_kind(&headers) {
        Ok(kind) => match body::read(&headers, body, &app.body).await {
            Ok(body) => answer(&app, kind, body).await,
            Err(f) => Err(f),
        },
        Err(f) => Err(f),
    };
    let elapsed = start.elapsed();
    let bucket = LATENCY_BUCKETS
        .iter()
        .position(|&b| elapsed.as_secs_f64() <= b)
        .unwrap_or(LATENCY_BUCKETS.len());
    app.latency[bucket].fetch_add(1, Ordering::Relaxed);
    app.latency_sum_us
        .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    match result {
        Ok(v) => Json(v).into_response(),
        Err(f) => f.into_response(),
    }
}

/// Every request the router sees, on any path, counted; those answered 4xx or 5xx counted
/// as errors too (a 404 or a 413 is as much the server's business as a bad row).
async fn count(
    State(app): State<Arc<App>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    app.requests.fetch_add(1, Ordering::Relaxed);
    let response = next.run(request).await;
    if response.status().is_client_error() || response.status().is_server_error() {
        app.errors.fetch_add(1, Ordering::Relaxed);
    }
    response
}

/// An unknown path: 404, with the endpoints there are.
async fn not_found(method: axum::http::Method, uri: axum::http::Uri) -> Failure {
    Failure(
        StatusCode::NOT_FOUND,
        format!(
            "no endpoint {method} {}; there are POST /v1/predict, GET /v1/model, GET /healthz, GET /metrics",
            uri.path()
        ),
    )
}

/// A known path with the wrong method: 405.
async fn wrong_method(method: axum::http::Method, uri: axum::http::Uri) -> Failure {
    let allowed = if uri.path() == "/v1/predict" {
        "POST"
    } else {
        "GET"
    };
    Failure(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} takes {allowed}, not {method}", uri.path()),
    )
}

/// `POST /v1/predict`'s answer: a row's answer each, in the request's order (typed, not a
/// `serde_json::Value`: no map of keys built and dropped per request).
#[derive(serde::Serialize)]
struct Predictions {
    predictions: Vec<RowAnswer>,
}

#[derive(serde::Serialize)]
struct RowAnswer {
    class: usize,
    name: String,
    /// f32, as computed: written in the fewest digits that read back to the same f32.
    probabilities: Vec<f32>,
}

/// Every row through the batcher (all submitted, then all awaited, so they can share
/// batches), answered as classes, names and probabilities.
async fn answer(
    app: &App,
    kind: BodyKind,
    body: Vec<u8>,
) -> std::result::Result<Predictions, Failure> {
    let model = app.batched.model();
    let capacity = app.batched.options().queue_capacity;
    let rows = rows(kind, &body, model.input_size(), capacity)?;
    // The rows hold what is needed; the body's memory goes before the wait for answers.
    drop(body);
    // All queued or none: a full queue computes nothing for a request it refuses.
    let tickets = app.batched.submit_all(rows)?;
    let mut predictions = Vec::with_capacity(tickets.len());
    for (i, t) in tickets.into_iter().enumerate() {
        let logits = t.await.map_err(|e| {
            // The runtime's message names the row ("input row i") where it can.
            if e.names_a_row() {
                return Failure::from(e);
            }
            let f = Failure::from(e);
            Failure(f.0, format!("inputs[{i}]: {}", f.1))
        })?;
        app.rows.fetch_add(1, Ordering::Relaxed);
        let p = Prediction::from_logits(&logits);
        predictions.push(RowAnswer {
            class: p.class,
            name: model.class_name(p.class),
            probabilities: p.probabilities,
        });
    }
    Ok(Predictions { predictions })
}

async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    let s = app.batched.stats();
    let mut text = String::new();
    let mut counter = |name: &str, help: &str, kind: &str, value: String| {
        text.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    };
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    counter(
        "smartmixed_requests_total",
        "HTTP requests received, on any path (malformed ones that hyper refused included).",
        "counter",
        (load(&app.requests) + load(&app.connections.malformed)).to_string(),
    );
    counter(
        "smartmixed_request_errors_total",
        "HTTP requests answered with a 4xx or 5xx status.",
        "counter",
        (load(&app.errors) + load(&app.connections.malformed)).to_string(),
    );
    counter(
        "smartmixed_rows_total",
        "Rows the batcher answered.",
        "counter",
        load(&app.rows).to_string(),
    );
    counter(
        "smartmixed_rows_refused_total",
        "Rows refused because the queue was full.",
        "counter",
        s.refused.to_string(),
    );
    counter(
        "smartmixed_batches_total",
        "Forward passes the batcher ran.",
        "counter",
        s.batches.to_string(),
    );
    counter(
        "smartmixed_connections_open",
        "HTTP connections open now.",
        "gauge",
        load(&app.connections.open).to_string(),
    );
    counter(
        "smartmixed_header_timeouts_total",
        "Connections closed because a request's headers did not arrive in time.",
        "counter",
        load(&app.connections.header_timeouts).to_string(),
    );
    counter(
        "smartmixed_queue_depth",
        "Rows waiting for a batch now.",
        "gauge",
        s.queued.to_string(),
    );
    text.push_str("# HELP smartmixed_batch_size Rows per forward pass.\n# TYPE smartmixed_batch_size histogram\n");
    let mut cumulative = 0;
    for (bound, count) in BATCH_BUCKETS.iter().zip(&s.batch_sizes) {
        cumulative += count;
        text.push_str(&format!(
            "smartmixed_batch_size_bucket{{le=\"{bound}\"}} {cumulative}\n"
        ));
    }
    text.push_str(&format!("smartmixed_batch_size_bucket{{le=\"+Inf\"}} {cumulative}\nsmartmixed_batch_size_sum {}\nsmartmixed_batch_size_count {cumulative}\n", s.batched_rows));
    text.push_str("# HELP smartmixed_request_duration_seconds Predict request latency.\n# TYPE smartmixed_request_duration_seconds histogram\n");
    let mut cumulative = 0;
    for (i, c) in app.latency.iter().enumerate() {
        cumulative += load(c);
        let le = LATENCY_BUCKETS
            .get(i)
            .map_or("+Inf".to_string(), |b| b.to_string());
        text.push_str(&format!(
            "smartmixed_request_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}\n"
        ));
    }
    text.push_str(&format!(
        "smartmixed_request_duration_seconds_sum {}\nsmartmixed_request_duration_seconds_count {cumulative}\n",
        load(&app.latency_sum_us) as f64 / 1e6
    ));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

/// A line on stdout, for whoever watches the server; a stdout that is gone (SIGPIPE is
/// ignored in `serve`, so the write fails with EPIPE) does not stop it.
fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

pub fn run(args: ServeArgs) -> Result<()> {
    let options = LoadOptions {
        precision: args.precision,
    };
    let mut model = Model::load_dir_with(&args.model, &options)?;
    if args.threads > 0 {
        // Before any call, so the process's global pool is never started.
        model = model.with_pool(Pool::new(args.threads)?);
    }
    let model = Arc::new(model);
    let options = BatchOptions {
        max_batch: args.max_batch,
        max_wait: Duration::from_micros(args.max_wait_us),
        queue_capacity: args.queue,
        regather: Duration::from_micros(args.regather_us),
    };
    let connections = Arc::new(conn::ConnStats::default());
    let app = Arc::new(App {
        description: describe(&model),
        batched: BatchedModel::new(model, options).context("--max-batch, --queue")?,
        body: body::BodyLimits {
            // At most 2^30 (the flag's range): a usize on every platform Rust serves from.
            max_bytes: args.max_body_bytes as usize,
            timeout: Duration::from_millis(args.body_timeout_ms),
        },
        connections: connections.clone(),
        requests: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        rows: AtomicU64::new(0),
        latency: Default::default(),
        latency_sum_us: AtomicU64::new(0),
    });
    let router = Router::new()
        .route("/v1/predict", post(predict))
        .route(
            "/v1/model",
            get(|State(app): State<Arc<App>>| async move { Json(app.description.clone()) }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(wrong_method)
        .layer(axum::middleware::from_fn_with_state(app.clone(), count))
        .with_state(app.clone());
    let limits = conn::Limits {
        max_connections: args.max_connections as usize,
        header_timeout: Duration::from_millis(args.header_timeout_ms),
        drain_timeout: Duration::from_millis(args.drain_timeout_ms),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the HTTP runtime")?;
    let stop = runtime.block_on(async {
        let signals = conn::Signals::new().context("cannot watch for SIGTERM and SIGINT")?;
        let listener = tokio::net::TcpListener::bind(args.addr)
            .await
            .with_context(|| format!("--addr {}: cannot listen", args.addr))?;
        let local = listener.local_addr()?;
        say(&format!("listening on http://{local}"));
        anyhow::Ok(
            conn::serve(listener, router, limits, connections, signals, || {
                // The queued rows run now, not after their wait: the drain waits for them.
                app.batched.close()
            })
            .await,
        )
    })?;
    // The connections' tasks end with the runtime (those the deadline cut are dropped).
    drop(runtime);
    app.batched.shut_down();
    match stop {
        conn::Stop::Drained => {
            say("stopped: every accepted request answered");
            Ok(())
        }
        conn::Stop::DeadlinePassed(open) => anyhow::bail!(
            "stopped: {open} connection(s) still open after --drain-timeout-ms ({} ms) were dropped, their requests unanswered",
            args.drain_timeout_ms
        ),
        conn::Stop::SecondSignal(open) => anyhow::bail!(
            "stopped at a second signal: {open} open connection(s) dropped, their requests unanswered"
        ),
    }
}
