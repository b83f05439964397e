//! [`MetricsServer`]: a minimal HTTP/1.1 endpoint on tokio serving
//! `GET /metrics` (the Prometheus text format rendered by
//! `metrics-exporter-prometheus`) and `GET /healthz` (200 `ok` while the
//! service runs, 503 `stopping` once it is shutting down), and nothing else.
//!
//! One request per connection (`Connection: close`): scrapers and health
//! probes open a connection per request anyway, and it keeps the server a
//! few dozen lines without an HTTP framework. A client gets a bounded time
//! to send its request and to take the answer, and at most
//! [`Limits::max_connections`] are served at once (the rest wait in the
//! listen backlog), so clients that never read hold no task or descriptor
//! for long.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::error::OpsError;
use crate::names;

/// The largest request head read; longer ones are answered 431.
const MAX_HEAD: usize = 8 * 1024;

/// How long and how many clients the endpoint serves.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The longest a client may take to send its request head.
    pub read_timeout: Duration,
    /// The longest a client may take to take the response.
    pub write_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            read_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            max_connections: 32,
        }
    }
}

/// The process's Prometheus recorder: installed by the first server started,
/// shared by any later one (the `metrics` facade has one global recorder).
static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();

/// Whether the service is healthy, as `/healthz` reports it. Cloning shares
/// the state.
#[derive(Clone, Debug)]
pub struct Health {
    stopping: Arc<AtomicBool>,
}

impl Health {
    fn new() -> Self {
        Self {
            stopping: Arc::new(AtomicBool::new(false)),
        }
    }

    /// From now on `/healthz` answers 503 `stopping` (the service is
    /// finishing its work after SIGTERM) and `pretext_up` is 0.
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        metrics::gauge!(names::UP).set(0.0);
    }

    /// Whether [`Self::set_stopping`] was called.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }
}

/// The `/metrics` and `/healthz` endpoint of one service; stops serving
/// when dropped.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    health: Health,
    task: JoinHandle<()>,
}

impl MetricsServer {
    /// Installs the Prometheus recorder (once per process; every metric gets
    /// the label `service="<service>"` of the first server), describes the
    /// metrics of [`names`], binds `addr` (port 0: any free port, see
    /// [`Self::local_addr`]) and serves on the current tokio runtime.
    pub async fn start(addr: SocketAddr, service: &str) -> Result<Self, OpsError> {
        Self::start_with(addr, service, Limits::default()).await
    }

    /// [`Self::start`] with other [`Limits`].
    pub async fn start_with(
        addr: SocketAddr,
        service: &str,
        limits: Limits,
    ) -> Result<Self, OpsError> {
        let handle = recorder(service)?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| OpsError::Bind { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| OpsError::Bind { addr, source })?;
        let health = Health::new();
        metrics::gauge!(names::UP).set(1.0);
        let task = tokio::spawn(serve(listener, handle, health.clone(), limits));
        tracing::info!(addr = %local, "serving /metrics and /healthz");
        Ok(Self {
            addr: local,
            health,
            task,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The health state `/healthz` reports.
    pub fn health(&self) -> Health {
        self.health.clone()
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn recorder(service: &str) -> Result<PrometheusHandle, OpsError> {
    if let Some(handle) = RECORDER.get() {
        return Ok(handle.clone());
    }
    // One installer at a time: a second server starting meanwhile waits and
    // then shares the first one's handle instead of failing to install.
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(handle) = RECORDER.get() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new()
        .add_global_label("service", service)
        .install_recorder()
        .map_err(|e| OpsError::Recorder(e.to_string()))?;
    names::describe();
    Ok(RECORDER.get_or_init(|| handle).clone())
}

async fn serve(listener: TcpListener, handle: PrometheusHandle, health: Health, limits: Limits) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    loop {
        // A free slot first: past the cap, clients wait in the backlog.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, _)) => {
                let (handle, health) = (handle.clone(), health.clone());
                tokio::spawn(async move {
                    if let Err(err) = respond(stream, &handle, &health, limits).await {
                        tracing::debug!(error = %err, "metrics request failed");
                    }
                    drop(slot);
                });
            }
            Err(err) => {
                // Out of file descriptors and the like: try again shortly.
                tracing::warn!(error = %err, "accepting a metrics connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads one request head and writes the response, each within its limit.
async fn respond<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    handle: &PrometheusHandle,
    health: &Health,
    limits: Limits,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let complete = tokio::time::timeout(limits.read_timeout, async {
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() <= MAX_HEAD {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        std::io::Result::Ok(())
    })
    .await;
    if !matches!(complete, Ok(Ok(()))) {
        return Ok(()); // slow or broken client: just close
    }
    let (status, content_type, body) = if head.len() > MAX_HEAD {
        (431, "text/plain", "request head too large\n".to_owned())
    } else {
        route(&head, handle, health)
    };
    let response = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        reason(status),
        body.len()
    );
    tokio::time::timeout(limits.write_timeout, async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "client did not read"))?
}

/// Status, content type and body for a request head.
fn route(head: &[u8], handle: &PrometheusHandle, health: &Health) -> (u16, &'static str, String) {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" {
        return (405, "text/plain", "only GET\n".to_owned());
    }
    let path = target.split('?').next().unwrap_or("");
    match path {
        "/metrics" => {
            handle.run_upkeep();
            (
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                handle.render(),
            )
        }
        "/healthz" if health.is_stopping() => (503, "text/plain", "stopping\n".to_owned()),
        "/healthz" => (200, "text/plain", "ok\n".to_owned()),
        _ => (
            404,
            "text/plain",
            "not found: try /metrics or /healthz\n".to_owned(),
        ),
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// `GET http://{addr}{path}`: the status and body. A client for tests and
/// health probes of the endpoint above (one request, `Connection: close`).
pub async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP response");
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    Ok((status, body.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_metrics_and_health_and_nothing_else() {
        let server = MetricsServer::start("127.0.0.1:0".parse().unwrap(), "test")
            .await
            .unwrap();
        let addr = server.local_addr();
        metrics::counter!(names::TRAINER_STEPS).increment(3);

        let (status, body) = http_get(addr, "/metrics").await.unwrap();
        assert_eq!(status, 200);
        assert!(
            body.lines()
                .any(|l| l == "pretext_trainer_steps_total{service=\"test\"} 3"),
            "{body}"
        );
        assert!(
            body.contains("# HELP pretext_trainer_steps_total"),
            "{body}"
        );
        assert!(body.contains("pretext_up{service=\"test\"} 1"), "{body}");

        assert_eq!(
            http_get(addr, "/healthz").await.unwrap(),
            (200, "ok\n".into())
        );
        assert_eq!(http_get(addr, "/nope").await.unwrap().0, 404);

        server.health().set_stopping();
        assert_eq!(
            http_get(addr, "/healthz").await.unwrap(),
            (503, "stopping\n".into())
        );
        let (_, body) = http_get(addr, "/metrics").await.unwrap();
        assert!(body.contains("pretext_up{service=\"test\"} 0"), "{body}");

        drop(server);
        // Dropped: the listener goes with the aborted task.
        tokio::task::yield_now().await;
        let mut refused = false;
        for _ in 0..100 {
            if http_get(addr, "/healthz").await.is_err() {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            refused,
            "the endpoint still answers after the server was dropped"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_never_reads_is_dropped_after_the_write_timeout() {
        let handle = recorder("test").unwrap();
        // A 64-byte pipe: the response cannot be written unless read.
        let (mut client, server) = tokio::io::duplex(64);
        client
            .write_all(b"GET /metrics HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let limits = Limits::default();
        let t0 = tokio::time::Instant::now();
        let err = respond(server, &handle, &Health::new(), limits)
            .await
            .expect_err("the write cannot finish");
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert!(t0.elapsed() >= limits.write_timeout);
        drop(client);
    }

    #[tokio::test]
    async fn connections_past_the_cap_wait_for_a_free_slot() {
        let limits = Limits {
            read_timeout: Duration::from_millis(300),
            max_connections: 1,
            ..Limits::default()
        };
        let server = MetricsServer::start_with("127.0.0.1:0".parse().unwrap(), "test", limits)
            .await
            .unwrap();
        let addr = server.local_addr();
        // One client holds the only slot and sends nothing.
        let idle = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The next is answered only once the idle one was closed (after
        // the read timeout), never beside it.
        assert_eq!(http_get(addr, "/healthz").await.unwrap().0, 200);
        let mut buf = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(1), idle.readable())
            .await
            .expect("the idle connection is still open while the next was served")
            .unwrap();
        assert_eq!(
            idle.try_read(&mut buf).unwrap(),
            0,
            "the idle connection was still open when the next was served"
        );
    }
}
