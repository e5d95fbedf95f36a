//! `smartmixed-cli serve` through real HTTP on the loopback address: answers equal to
//! the runtime's for the same raw rows (JSON and binary), the model's description, health
//! and metrics; each bad request a 400 (or 413) with a one-line reason; a full queue a
//! 503; SIGTERM answering the request already accepted before the server exits 0. Every
//! request has a read timeout and the server is killed if it outlives its test.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use smartmixed_infer::Model;

/// A running server, killed on drop if the test did not stop it.
struct Server {
    child: Child,
    addr: String,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(model: &Path, extra: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_smartmixed-cli"))
        .args([
            "serve",
            "--model",
            model.to_str().unwrap(),
            "--addr",
            "127.0.0.1:0",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    Server {
        child,
        addr,
        stdout,
    }
}

/// One HTTP/1.1 request on its own connection: (status, body).
fn request(addr: &str, method: &str, path: &str, content_type: &str, body: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    let _ = stream.write_all(body);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// The first `n` test images of the synthetic data, raw.
fn raw_rows(data: &Path, n: usize) -> Vec<Vec<f32>> {
    let bytes = std::fs::read(data.join("t10k-images-idx3-ubyte")).unwrap();
    bytes[16..16 + 30 * n]
        .chunks(30)
        .map(|r| r.iter().map(|&p| f32::from(p)).collect())
        .collect()
}

#[test]
fn the_server_answers_as_the_runtime_does_and_refuses_bad_requests_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, model_dir, data) = small_model(tmp.path());
    let model = Model::load_dir(&model_dir).unwrap();
    let server = serve(
        &model_dir,
        &["--max-body-bytes", "4096", "--max-wait-us", "200"],
    );
    let a = server.addr.as_str();
    assert_eq!(
        request(a, "GET", "/healthz", "text/plain", b""),
        (200, "ok\n".into())
    );
    let (status, body) = request(a, "GET", "/v1/model", "text/plain", b"");
    assert_eq!(status, 200);
    let described = json(&body);
    assert_eq!(described["architecture"], serde_json::json!([30, 16, 8, 2]));
    assert_eq!(described["input"]["shape"], serde_json::json!([6, 5]));
    assert_eq!(described["classes"], serde_json::json!(["0", "1"]));
    let neurons: u64 = described["groups"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["neurons"].as_u64().unwrap())
        .sum();
    assert_eq!(neurons, 16);

    // The same rows as JSON and as binary: the runtime's answers for each row alone.
    let rows = raw_rows(&data, 5);
    let body = serde_json::json!({ "inputs": rows }).to_string();
    let binary: Vec<u8> = rows
        .iter()
        .flatten()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    for (content_type, payload) in [
        ("application/json", body.as_bytes()),
        ("application/octet-stream", &binary[..]),
    ] {
        let (status, text) = request(a, "POST", "/v1/predict", content_type, payload);
        assert_eq!(status, 200, "{text}");
        let answer = json(&text);
        for (row, got) in rows.iter().zip(answer["predictions"].as_array().unwrap()) {
            let want = model.predict_raw(row).unwrap();
            assert_eq!(got["class"], want.class);
            assert_eq!(got["name"], model.class_name(want.class));
            for (g, w) in got["probabilities"]
                .as_array()
                .unwrap()
                .iter()
                .zip(&want.probabilities)
            {
                assert!((g.as_f64().unwrap() - f64::from(*w)).abs() < 1e-5, "{text}");
            }
        }
    }

    let short = serde_json::json!({ "inputs": [vec![1.0; 29]] }).to_string();
    let huge = format!("{{\"inputs\": [[1e39{}]]}}", ", 0".repeat(29));
    let mut nan = binary[..120].to_vec();
    nan[12..16].copy_from_slice(&f32::NAN.to_le_bytes());
    let cases: [(&str, &[u8], u16, &str); 6] = [
        (
            "application/json",
            short.as_bytes(),
            400,
            "inputs[0]: 29 values, the model takes 30",
        ),
        (
            "application/json",
            huge.as_bytes(),
            400,
            "inputs[0][0]: 1e39, expected a finite number",
        ),
        ("application/octet-stream", &nan, 400, "row 0, value 3: NaN"),
        (
            "application/octet-stream",
            &binary[..100],
            400,
            "100 bytes, expected a whole number of rows of 30 f32 values",
        ),
        ("application/json", b"{\"inputs\": [[1, 2", 400, "body: EOF"),
        (
            "application/json",
            &[b' '; 5000],
            413,
            "a body of 5000 bytes, more than --max-body-bytes (4096 bytes)",
        ),
    ];
    for (content_type, payload, want_status, needle) in cases {
        let (status, text) = request(a, "POST", "/v1/predict", content_type, payload);
        assert_eq!(status, want_status, "{text}");
        let error = json(&text)["error"].as_str().unwrap().to_string();
        assert!(error.contains(needle) && !error.contains('\n'), "{error}");
    }
    let (status, text) = request(a, "GET", "/nowhere", "text/plain", b"");
    assert_eq!(status, 404);
    assert!(
        json(&text)["error"]
            .as_str()
            .unwrap()
            .contains("no endpoint GET /nowhere"),
        "{text}"
    );

    let (status, metrics) = request(a, "GET", "/metrics", "text/plain", b"");
    assert_eq!(status, 200);
    // 12 requests (this one included): 2 good predictions, 6 bad and the 404 counted as
    // errors; 8 reached the predict handler; 10 rows were answered.
    for line in [
        "smartmixed_requests_total 12",
        "smartmixed_request_errors_total 7",
        "smartmixed_rows_total 10",
        "smartmixed_queue_depth 0",
        "smartmixed_request_duration_seconds_count 8",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no `{line}` in\n{metrics}"
        );
    }
    assert!(metrics.contains("smartmixed_batch_size_bucket{le=\"+Inf\"}"));
}

/// With room for one waiting row and a long batch wait, a second request finds the
/// queue full (503); SIGTERM then stops the server, which first answers the accepted one
/// (at once, not after its wait). A wait over 1 s is refused.
#[cfg(unix)]
#[test]
fn a_full_queue_is_503_and_sigterm_answers_the_accepted_request_first() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, model_dir, data) = small_model(tmp.path());
    let mut server = serve(
        &model_dir,
        &[
            "--queue",
            "1",
            "--max-batch",
            "8",
            "--max-wait-us",
            "1000000",
        ],
    );
    let addr = server.addr.clone();
    let row = serde_json::json!({ "inputs": raw_rows(&data, 1) }).to_string();
    let sent = Instant::now();
    let first = {
        let (addr, row) = (addr.clone(), row.clone());
        std::thread::spawn(move || {
            let answer = request(
                &addr,
                "POST",
                "/v1/predict",
                "application/json",
                row.as_bytes(),
            );
            (answer, sent.elapsed())
        })
    };
    let start = Instant::now();
    loop {
        let metrics = request(&addr, "GET", "/metrics", "text/plain", b"").1;
        if metrics.lines().any(|l| l == "smartmixed_queue_depth 1") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the first request never queued"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let (status, text) = request(
        &addr,
        "POST",
        "/v1/predict",
        "application/json",
        row.as_bytes(),
    );
    assert_eq!(status, 503, "{text}");
    assert!(json(&text)["error"]
        .as_str()
        .unwrap()
        .contains("queue is full"));
    // SAFETY: sends a signal to the child process this test started and still owns.
    unsafe {
        libc::kill(server.child.id() as libc::pid_t, libc::SIGTERM);
    }
    let ((status, text), took) = first.join().unwrap();
    assert_eq!(status, 200, "{text}");
    // Audit defect 5: the shutdown tells the batcher to run its queued rows now; before,
    // this answer came only when its --max-wait-us had passed.
    assert!(
        took < Duration::from_secs(1),
        "answered after {took:?}, not at SIGTERM"
    );
    assert_eq!(json(&text)["predictions"].as_array().unwrap().len(), 1);
    let mut rest = String::new();
    server.stdout.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("stopped"), "{rest}");
    assert!(server.child.wait().unwrap().success());
    let refused = Command::new(env!("CARGO_BIN_EXE_smartmixed-cli"))
        .args(["serve", "--model", model_dir.to_str().unwrap()])
        .args([
            "--addr",
            "127.0.0.1:0",
            "--max-wait-us",
            "18446744073709551615",
        ])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("--max-wait-us") && stderr.trim().lines().count() == 1,
        "{stderr}"
    );
}

/// Audit defect 1: a client that pipelines requests and hangs up without reading made
/// the server's next answer raise SIGPIPE, whose default action (restored by `main` for
/// every subcommand) ended the whole server. Each hang-up must cost that connection only.
#[test]
fn a_client_that_pipelines_requests_and_hangs_up_leaves_the_server_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, model_dir, _) = small_model(tmp.path());
    let mut server = serve(&model_dir, &[]);
    let addr = server.addr.clone();
    let one = format!("GET /v1/model HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    for attempt in 0..20 {
        let mut stream = TcpStream::connect(&addr).unwrap();
        stream.write_all(one.repeat(8).as_bytes()).unwrap();
        drop(stream);
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            server.child.try_wait().unwrap().is_none(),
            "the server died after hang-up {attempt}: {:?}",
            server.child.try_wait()
        );
        assert_eq!(request(&addr, "GET", "/healthz", "text/plain", b"").0, 200);
    }
}

/// Whether the server has closed `stream` (EOF or a reset) and what it sent first; a
/// stream still open after `patience` is `None`.
fn closed_by_server(stream: &mut TcpStream, patience: Duration) -> Option<String> {
    stream.set_read_timeout(Some(patience)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Some(String::from_utf8_lossy(&got).into_owned()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return None
            }
            Err(_) => return Some(String::from_utf8_lossy(&got).into_owned()),
        }
    }
}

fn connect_and_send(addr: &str, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(bytes).unwrap();
    stream
}

/// The JSON error of a raw HTTP response: (status, error text).
fn status_and_error(response: &str) -> (u16, String) {
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {response:?}"));
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let error = json(body)["error"].as_str().unwrap_or_default().to_string();
    (status, error)
}

/// Audit defect 2: half-sent headers, a body that never finishes, an idle keep-alive
/// connection and a Content-Length far over the limit each held a connection (and its
/// buffers) for ever. Now the headers and the body have deadlines, the Content-Length is
/// refused before the body is read, and the connections are capped.
#[test]
fn slow_or_oversized_requests_are_cut_off_and_connections_are_capped() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, model_dir, _) = small_model(tmp.path());
    let server = serve(
        &model_dir,
        &[
            "--header-timeout-ms",
            "300",
            "--body-timeout-ms",
            "300",
            "--max-body-bytes",
            "4096",
        ],
    );
    let a = server.addr.as_str();
    let patience = Duration::from_secs(20);
    let mut partial_header = connect_and_send(a, b"POST /v1/predict HTTP/1.1\r\nHost: x\r\n");
    let mut partial_body = connect_and_send(
        a,
        b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"inp",
    );
    let mut huge = connect_and_send(
        a,
        b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999\r\n\r\n",
    );
    let mut idle = TcpStream::connect(a).unwrap();
    assert!(
        closed_by_server(&mut partial_header, patience).is_some(),
        "half-sent headers kept their connection"
    );
    assert!(
        closed_by_server(&mut idle, patience).is_some(),
        "an idle connection stayed open"
    );
    let response = closed_by_server(&mut partial_body, patience).expect("a body never finished");
    let (status, error) = status_and_error(&response);
    assert_eq!(status, 408, "{response}");
    assert!(error.contains("--body-timeout-ms (300 ms)"), "{error}");
    let response = closed_by_server(&mut huge, patience).expect("a huge Content-Length waited");
    let (status, error) = status_and_error(&response);
    assert_eq!(status, 413, "{response}");
    assert!(
        error.contains("99999999999999 bytes, more than --max-body-bytes (4096 bytes)"),
        "{error}"
    );
    let (status, metrics) = request(a, "GET", "/metrics", "text/plain", b"");
    assert_eq!(status, 200);
    assert!(
        metrics
            .lines()
            .any(|l| l == "smartmixed_header_timeouts_total 2"),
        "{metrics}"
    );
    drop(server);

    // Two connections at most: a third is not served until one of them closes.
    let server = serve(
        &model_dir,
        &["--max-connections", "2", "--header-timeout-ms", "60000"],
    );
    let a = server.addr.as_str();
    let first = TcpStream::connect(a).unwrap();
    let _second = TcpStream::connect(a).unwrap();
    let mut third = connect_and_send(a, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut buf = [0u8; 64];
    third
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let early = third.read(&mut buf);
    assert!(
        early.is_err(),
        "a third connection was served past --max-connections 2: {early:?}"
    );
    drop(first);
    third.set_read_timeout(Some(patience)).unwrap();
    let n = third.read(&mut buf).unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
}

/// Audit defect 2: a client whose request never finishes kept SIGTERM from ever ending the
/// server, and further signals were ignored. Now the drain has a deadline, and a second
/// signal ends it at once; either way the exit says that connections were dropped.
#[cfg(unix)]
#[test]
fn shutdown_ends_at_its_deadline_or_at_a_second_signal() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, model_dir, _) = small_model(tmp.path());
    let unfinished = b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"inp";
    for (flags, signals) in [
        (["--drain-timeout-ms", "300"], &[libc::SIGTERM][..]),
        (
            ["--drain-timeout-ms", "3600000"],
            &[libc::SIGTERM, libc::SIGINT][..],
        ),
    ] {
        let mut server = serve(
            &model_dir,
            &[
                &flags[..],
                &[
                    "--body-timeout-ms",
                    "3600000",
                    "--header-timeout-ms",
                    "3600000",
                ],
            ]
            .concat(),
        );
        let _client = connect_and_send(&server.addr, unfinished);
        // The request is being read once the server counts it (beside the scrapes).
        let start = Instant::now();
        for scrapes in 1.. {
            let metrics = request(&server.addr, "GET", "/metrics", "text/plain", b"").1;
            let counted = format!("smartmixed_requests_total {}", scrapes + 1);
            if metrics.lines().any(|l| l == counted) {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "never counted");
            std::thread::sleep(Duration::from_millis(10));
        }
        for &signal in signals {
            // SAFETY: signals the child process this test started and still owns.
            unsafe {
                libc::kill(server.child.id() as libc::pid_t, signal);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let start = Instant::now();
        let status = loop {
            if let Some(status) = server.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{flags:?}: still running after {signals:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(status.code(), Some(2), "{flags:?}");
    }
}

/// Audit defect 3: a request of more rows than `--queue` got 503 "queue full" (retry) on an
/// idle server, after the rows that fitted had been computed and thrown away. Now it is a
/// 413 naming the limit, and nothing is queued or counted as answered.
#[test]
fn a_request_larger_than_the_queue_is_413_and_computes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, model_dir, data) = small_model(tmp.path());
    let server = serve(&model_dir, &["--queue", "4"]);
    let a = server.addr.as_str();
    let five = serde_json::json!({ "inputs": raw_rows(&data, 5) }).to_string();
    let (status, text) = request(
        a,
        "POST",
        "/v1/predict",
        "application/json",
        five.as_bytes(),
    );
    assert_eq!(status, 413, "{text}");
    let error = json(&text)["error"].as_str().unwrap().to_string();
    assert!(
        error.contains("5 rows in one request") && error.contains("--queue 4"),
        "{error}"
    );
    let four = serde_json::json!({ "inputs": raw_rows(&data, 4) }).to_string();
    let (status, text) = request(
        a,
        "POST",
        "/v1/predict",
        "application/json",
        four.as_bytes(),
    );
    assert_eq!(status, 200, "{text}");
    let metrics = request(a, "GET", "/metrics", "text/plain", b"").1;
    // The batch-size histogram's sum: every row of every batch.
    for line in [
        "smartmixed_rows_total 4",
        "smartmixed_rows_refused_total 0",
        "smartmixed_batch_size_sum 4",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no `{line}` in\n{metrics}"
        );
    }
    let batches: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("smartmixed_batches_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=4).contains(&batches), "{metrics}");
}

/// Audit defect 8: a wrong method and a broken chunked body got axum's bare or plain-text
/// answers, and none of these (nor what hyper refuses itself) reached the counters. Now
/// each is a one-line JSON error (hyper's own 400 for an unparsable request stays bare:
/// no handler ever sees it) and every one is counted.
#[test]
fn misrouted_and_malformed_requests_get_json_errors_and_are_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, model_dir, _) = small_model(tmp.path());
    let server = serve(&model_dir, &[]);
    let a = server.addr.as_str();
    for (method, path, want) in [
        ("GET", "/v1/predict", "/v1/predict takes POST, not GET"),
        ("DELETE", "/healthz", "/healthz takes GET, not DELETE"),
    ] {
        let (status, text) = request(a, method, path, "text/plain", b"");
        assert_eq!(status, 405, "{text}");
        assert!(
            json(&text)["error"].as_str().unwrap().contains(want),
            "{text}"
        );
    }
    let mut chunked = connect_and_send(
        a,
        b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    );
    let response = closed_by_server(&mut chunked, Duration::from_secs(30)).expect("no answer");
    let (status, error) = status_and_error(&response);
    assert_eq!(status, 400, "{response}");
    assert!(error.starts_with("body: "), "{error}");
    let mut garbage = connect_and_send(a, b"GARBAGE\r\n\r\n");
    let response = closed_by_server(&mut garbage, Duration::from_secs(30)).expect("no answer");
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    let metrics = request(a, "GET", "/metrics", "text/plain", b"").1;
    for line in [
        "smartmixed_requests_total 5",
        "smartmixed_request_errors_total 4",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no `{line}` in\n{metrics}"
        );
    }
}

/// Audit defect 9: the Content-Type was matched case-sensitively and by prefix, so
/// `Application/Octet-Stream` was parsed as JSON and `application/octet-streamXX` as
/// binary. Now the media type is compared as RFC 9110 says, parameters allowed, and an
/// unknown one is a 415.
#[test]
fn the_media_type_is_parsed_and_unknown_ones_are_415() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, model_dir, data) = small_model(tmp.path());
    let server = serve(&model_dir, &[]);
    let a = server.addr.as_str();
    let rows = raw_rows(&data, 2);
    let binary: Vec<u8> = rows
        .iter()
        .flatten()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let text = serde_json::json!({ "inputs": rows }).to_string();
    for (content_type, payload) in [
        ("Application/Octet-Stream", &binary[..]),
        ("application/octet-stream; foo=bar", &binary[..]),
        ("APPLICATION/JSON; charset=utf-8", text.as_bytes()),
    ] {
        let (status, answer) = request(a, "POST", "/v1/predict", content_type, payload);
        assert_eq!(status, 200, "{content_type}: {answer}");
        assert_eq!(json(&answer)["predictions"].as_array().unwrap().len(), 2);
    }
    for content_type in ["application/octet-streamXX", "text/csv"] {
        let (status, answer) = request(a, "POST", "/v1/predict", content_type, &binary);
        assert_eq!(status, 415, "{content_type}: {answer}");
        let error = json(&answer)["error"].as_str().unwrap().to_string();
        assert!(
            error.contains(content_type) && error.contains("application/json"),
            "{error}"
        );
    }
    // A compressed body would be read as rows of its compressed bytes: 415, naming the
    // coding (the header rides on the Content-Type line here); identity is no coding.
    let gzip = "application/octet-stream\r\nContent-Encoding: gzip";
    let (status, answer) = request(a, "POST", "/v1/predict", gzip, &binary);
    assert_eq!(status, 415, "{answer}");
    let error = json(&answer)["error"].as_str().unwrap().to_string();
    assert!(error.contains("Content-Encoding `gzip`"), "{error}");
    let identity = "application/octet-stream\r\nContent-Encoding: Identity";
    assert_eq!(request(a, "POST", "/v1/predict", identity, &binary).0, 200);
    // A second header line is a coding too.
    let second = "application/octet-stream\r\nContent-Encoding: identity\r\nContent-Encoding: gzip";
    assert_eq!(request(a, "POST", "/v1/predict", second, &binary).0, 415);
}

/// Audit defect 10: `--threads 0` silently meant one thread, `--threads 300` started 256
/// workers on two cores, and with `--threads N` the process's global pool still started
/// its workers. Now 0 is every core, more than the cores is refused, and a given pool is
/// the only one.
#[test]
fn threads_zero_means_every_core_and_too_many_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, model_dir, _) = small_model(tmp.path());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for (flag, want) in [("0", cores), ("1", 1)] {
        let server = serve(&model_dir, &["--threads", flag]);
        let (status, text) = request(&server.addr, "GET", "/v1/model", "text/plain", b"");
        assert_eq!(status, 200);
        assert_eq!(json(&text)["threads"], want, "--threads {flag}: {text}");
        #[cfg(target_os = "linux")]
        if flag == "1" {
            let tasks = format!("/proc/{}/task", server.child.id());
            let workers: Vec<String> = std::fs::read_dir(tasks)
                .unwrap()
                .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .filter(|name| name.starts_with("smartmixed-infe"))
                .collect();
            assert!(
                workers.is_empty(),
                "pool workers beside --threads 1: {workers:?}"
            );
        }
    }
    let too_many = (cores + 1).to_string();
    let refused = Command::new(env!("CARGO_BIN_EXE_smartmixed-cli"))
        .args(["serve", "--model", model_dir.to_str().unwrap()])
        .args(["--addr", "127.0.0.1:0", "--threads", &too_many])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("--threads") && stderr.trim().lines().count() == 1,
        "{stderr}"
    );
}
