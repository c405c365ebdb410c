//! The connections of `spool serve`, plain or over TLS: each accepted connection is served by
//! hyper on its own task, within named bounds, so no client can hold the server or its stop:
//! - at most [`CONNECTIONS_MAX`] connections at once (past it, accepting waits);
//! - a request's headers must arrive within the header read timeout (`SPOOL_HEADER_READ_TIMEOUT`,
//!   default [`HEADER_READ_TIMEOUT_DEFAULT`]), else the connection is closed: half-open clients
//!   are not kept;
//! - a TLS handshake within [`crate::tls::TLS_HANDSHAKE_TIMEOUT`];
//! - on SIGTERM the server stops accepting, asks every connection to finish its request, and
//!   after the shutdown grace (`SPOOL_SHUTDOWN_GRACE`, default [`SHUTDOWN_GRACE_DEFAULT`]) drops
//!   whatever is still open (a live log tail, a stalled upload). Nothing acknowledged is lost:
//!   an answer is sent only after its events are durable.

use std::sync::Arc;
use std::time::Duration;

/// Connections served at once.
pub const CONNECTIONS_MAX: usize = 4096;
/// Longest wait for a request's headers.
pub const HEADER_READ_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// How long open connections get after SIGTERM before they are dropped.
pub const SHUTDOWN_GRACE_DEFAULT: Duration = Duration::from_secs(10);

/// The bounds of a connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { header_read_timeout: HEADER_READ_TIMEOUT_DEFAULT, shutdown_grace: SHUTDOWN_GRACE_DEFAULT }
    }
}

/// Serve `app` on `listener` (over TLS with `tls`) until `shutdown` resolves, then end within
/// the shutdown grace.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let slots = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS_MAX));
    tokio::pin!(shutdown);
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let slot = tokio::select! {
            _ = &mut shutdown => break,
            s = slots.clone().acquire_owned() => match s { Ok(s) => s, Err(_) => break },
        };
        let (tcp, _peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let stop = stop_rx.clone();
        conns.spawn(async move {
            let _slot = slot;
            match acceptor {
                None => serve_one(tcp, app, limits, stop).await,
                Some(acceptor) => {
                    let Ok(Ok(tls)) =
                        tokio::time::timeout(crate::tls::TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                    else {
                        return;
                    };
                    serve_one(tls, app, limits, stop).await
                }
            }
        });
        while conns.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let open = conns.len();
    if open > 0 {
        tracing::info!(open, grace_ms = spool_model::num::ms(limits.shutdown_grace), "finishing open connections");
    }
    let finished =
        tokio::time::timeout(limits.shutdown_grace, async { while conns.join_next().await.is_some() {} }).await;
    if finished.is_err() {
        tracing::warn!(dropped = conns.len(), "connections still open after the shutdown grace are dropped");
        conns.abort_all();
        while conns.join_next().await.is_some() {}
    }
    Ok(())
}

async fn serve_one<I>(io: I, app: axum::Router, limits: Limits, mut stop: tokio::sync::watch::Receiver<bool>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let service = hyper_util::service::TowerToHyperService::new(app);
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new()).keep_alive_interval(Some(Duration::from_secs(30)));
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    if *stop.borrow() {
        conn.as_mut().graceful_shutdown();
    }
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
