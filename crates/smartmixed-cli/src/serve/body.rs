//! A predict request's body, read by the handler itself (not by axum's `Bytes`
//! extractor) so that each way it can fail is a one-line JSON error: a `Content-Length`
//! over `--max-body-bytes` is refused before a byte of the body is read (413), a body
//! that grows past it while it streams in is cut off (413), one that has not all arrived
//! within `--body-timeout-ms` of its headers is abandoned (408), and broken framing (a bad
//! chunk) is a 400.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use http_body_util::BodyExt;

use super::Failure;

/// `--max-body-bytes` and `--body-timeout-ms`.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_bytes: usize,
    pub timeout: Duration,
}

fn too_large(limits: &BodyLimits, what: String) -> Failure {
    Failure(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "{what}, more than --max-body-bytes ({} bytes)",
            limits.max_bytes
        ),
    )
}

/// The whole body, within the limits.
pub async fn read(
    headers: &HeaderMap,
    body: Body,
    limits: &BodyLimits,
) -> std::result::Result<Vec<u8>, Failure> {
    // hyper has refused a Content-Length that is not a number (or two that disagree).
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared.filter(|&n| n > limits.max_bytes as u64) {
        return Err(too_large(limits, format!("a body of {n} bytes")));
    }
    // Room for what was declared (within the limit), else grown as the frames come.
    let mut bytes = Vec::with_capacity(declared.map_or(0, |n| n as usize));
    let mut body = body;
    let read = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                Failure(
                    StatusCode::BAD_REQUEST,
                    format!("body: {}", crate::shown(&e.to_string())),
                )
            })?;
            if let Ok(data) = frame.into_data() {
                if bytes.len() + data.len() > limits.max_bytes {
                    return Err(too_large(limits, "a body".into()));
                }
                bytes.extend_from_slice(&data);
            }
        }
        Ok(())
    };
    let outcome = tokio::time::timeout(limits.timeout, read).await;
    match outcome {
        Ok(result) => result.map(|()| bytes),
        Err(_) => Err(Failure(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the body did not arrive within --body-timeout-ms ({} ms)",
                limits.timeout.as_millis()
            ),
        )),
    }
}
