//! `serve`'s accept loop and connections: at most `--max-connections` open at once (the
//! rest wait in the kernel's backlog), each on hyper's HTTP/1 with a timeout for a
//! request's headers (idle keep-alive time included), and the stop: the first SIGTERM or
//! Ctrl-C stops accepting and lets the open connections finish for up to
//! `--drain-timeout-ms`, after which, or at a second signal, the rest are dropped.
//!
//! Why not `axum::serve`: it has no header timeout, no connection cap and no drain
//! deadline, so one client that sends half a request holds memory for ever and keeps a
//! graceful shutdown from ever finishing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// The connection-level limits (`serve`'s flags).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub drain_timeout: Duration,
}

/// Counters the connections keep that no handler sees.
#[derive(Default)]
pub struct ConnStats {
    /// Connections open now.
    pub open: AtomicU64,
    /// Requests hyper refused before any handler ran (a request line or headers it cannot
    /// parse, headers too large): it answers them itself, with an empty body.
    pub malformed: AtomicU64,
    /// Connections closed because a request's headers did not arrive in time.
    pub header_timeouts: AtomicU64,
}

/// How the serving ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    /// Every open connection finished within the drain deadline.
    Drained,
    /// The deadline passed with this many connections still open; they were dropped.
    DeadlinePassed(usize),
    /// A second signal came with this many connections still open; they were dropped.
    SecondSignal(usize),
}

/// SIGTERM (what a supervisor or a load balancer's drain sends) and SIGINT (Ctrl-C),
/// subscribed once so that a second signal is seen too.
pub struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn new() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// The next SIGTERM or SIGINT.
    pub async fn next(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {},
            _ = self.int.recv() => {},
        }
        #[cfg(not(unix))]
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Serves `router` on `listener` until a signal; then `on_stop` runs (the batcher is told
/// to flush) and the connections drain as [`Stop`] says.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    stats: Arc<ConnStats>,
    mut signals: Signals,
    on_stop: impl FnOnce(),
) -> Stop {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    loop {
        // Finished connections' results, so the set holds only open ones.
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = signals.next() => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, say: others may close; do not spin.
                    eprintln!("warning: accept: {}", crate::shown(&e.to_string()));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = signals.next() => break,
        };
        // (The router takes hyper's body as it is: axum wraps it in its own `Body`.)
        let service = TowerToHyperService::new(router.clone());
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let (stats, mut stop) = (stats.clone(), stop_rx.clone());
        connections.spawn(async move {
            let _permit = permit;
            stats.open.fetch_add(1, Ordering::Relaxed);
            let mut connection = std::pin::pin!(connection);
            // (A dropped sender also means stop.)
            let stopping = async move {
                let _ = stop.wait_for(|&s| s).await;
            };
            let result = tokio::select! {
                r = connection.as_mut() => r,
                () = stopping => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                if e.is_parse() || e.is_parse_too_large() {
                    stats.malformed.fetch_add(1, Ordering::Relaxed);
                } else if e.is_timeout() {
                    stats.header_timeouts.fetch_add(1, Ordering::Relaxed);
                }
            }
            stats.open.fetch_sub(1, Ordering::Relaxed);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    on_stop();
    enum Ended {
        Drained,
        Deadline,
        Signal,
    }
    let ended = tokio::select! {
        () = async { while connections.join_next().await.is_some() {} } => Ended::Drained,
        () = tokio::time::sleep(limits.drain_timeout) => Ended::Deadline,
        () = signals.next() => Ended::Signal,
    };
    let open = connections.len();
    // Dropping the set aborts what is left.
    drop(connections);
    match ended {
        Ended::Drained => Stop::Drained,
        Ended::Deadline => Stop::DeadlinePassed(open),
        Ended::Signal => Stop::SecondSignal(open),
    }
}
