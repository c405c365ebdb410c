//! Helpers for tests that drive the real binary: start `spool serve` on a free loopback port,
//! and a minimal HTTP/1.1 client (one request per connection) so the tests need no client
//! library.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub const ADMIN_KEY: &str = "sk_test_crash_admin_key_0123456789abcdef";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub struct Server {
    pub child: Child,
    pub addr: String,
}

/// A server is killed when its test lets go of it, also when the test fails: a test that panics
/// leaves no `spool serve` running (they piled up across runs before).
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start(data_dir: &Path) -> Server {
    start_with(data_dir, &[("RUST_LOG", "warn")])
}

/// The server's stdout and stderr go to `<data_dir>.log` (appended).
pub fn server_log(data_dir: &Path) -> String {
    std::fs::read_to_string(data_dir.with_extension("log")).unwrap_or_default()
}

pub fn serve_command(data_dir: &Path, addr: &str, envs: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_spool"));
    cmd.args(["serve", "--listen", addr, "--data-dir"])
        .arg(data_dir)
        .env("SPOOL_API_KEY", ADMIN_KEY)
        .env_remove("SPOOL_MASTER_KEY")
        // A cluster on PostgreSQL of one partition unless the test says otherwise (the
        // default, 32, is the SDK suite's one-node pass on PostgreSQL).
        .env("SPOOL_PARTITIONS", "0");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd
}

pub fn start_with(data_dir: &Path, envs: &[(&str, &str)]) -> Server {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let log = std::fs::OpenOptions::new().create(true).append(true).open(data_dir.with_extension("log")).unwrap();
    let log2 = log.try_clone().unwrap();
    let child = serve_command(data_dir, &addr, envs).stdout(log2).stderr(log).spawn().expect("start spool serve");
    let server = Server { child, addr };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok((200, _)) = request(&server.addr, "GET", "/healthz", None, None) {
            return server;
        }
        assert!(Instant::now() < deadline, "spool serve did not become healthy");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One request with the admin key; the body parsed as JSON (`Null` when empty).
pub fn call(addr: &str, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
    let (s, b) = request(addr, method, path, Some(ADMIN_KEY), body).unwrap();
    (
        s,
        if b.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&b).unwrap_or_else(|e| panic!("{e}: {b}"))
        },
    )
}

/// One request; returns (status, body). Errors are connection failures.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    request_h(addr, method, path, key, body, &[])
}

/// A request with extra headers.
pub fn request_h(
    addr: &str,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = body.unwrap_or("");
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    if let Some(k) = key {
        req.push_str(&format!("X-API-Key: {k}\r\n"));
    }
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, rest) = text.split_once("\r\n\r\n").ok_or_else(|| std::io::Error::other("no header end"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status"))?;
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    let body = if chunked { dechunk(rest) } else { rest.to_string() };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

pub fn sigterm(child: &Child) {
    let pid = i32::try_from(child.id()).expect("pid");
    // `unsafe_code` is forbidden workspace-wide, so the test asks kill(1) instead of libc.
    let ok = Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill").success();
    assert!(ok);
}

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// An `http` processor played by a test: answers every request
/// `{"metadata":{"label":<segment id>,"pad":"x"×pad}, …}` after 1 ms; counts calls per segment.
/// Calls per segment id.
pub type Calls = Arc<Mutex<BTreeMap<String, u64>>>;

pub fn worker(pad: usize) -> (String, Calls, Arc<AtomicU64>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let calls: Calls = Default::default();
    let total = Arc::new(AtomicU64::new(0));
    let (c, t) = (calls.clone(), total.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (c, t) = (c.clone(), t.clone());
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                loop {
                    let mut len = 0usize;
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 {
                            return;
                        }
                        if h == "\r\n" {
                            break;
                        }
                        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; len];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    let id = v["segment"]["segment_id"].as_str().unwrap_or("").to_string();
                    *c.lock().unwrap().entry(id.clone()).or_default() += 1;
                    t.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(1));
                    let answer = serde_json::json!({ "metadata": { "label": id, "pad": "x".repeat(pad) }, "metadata_text": "ok", "usage": { "input_tokens": 3, "output_tokens": 1 } }).to_string();
                    let mut s = stream.try_clone().unwrap();
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                        answer.len()
                    );
                    if s.write_all(head.as_bytes()).and_then(|_| s.write_all(answer.as_bytes())).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, calls, total)
}

/// A webhook receiver on loopback: counts each `X-Delivery-ID`, answers 200.
pub fn receiver() -> (String, std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, u32>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let seen: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, u32>>> = Default::default();
    let s2 = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let seen = s2.clone();
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let mut got = Vec::new();
                let mut buf = [0u8; 16384];
                let head = loop {
                    let Ok(n) = stream.read(&mut buf) else { return };
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let head = text[..end].to_string();
                        let len = head
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if got.len() >= end + 4 + len {
                            break head;
                        }
                    }
                };
                let id = head.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("x-delivery-id").then(|| v.trim().to_string())
                });
                if let Some(id) = id {
                    *seen.lock().unwrap().entry(id).or_insert(0) += 1;
                }
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
            });
        }
    });
    (url, seen)
}

/// `GET path` and the body's bytes as sent (the answer must carry a `Content-Length`).
pub fn get_bytes(addr: &str, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    get_bytes_h(addr, path, &[])
}

/// [`get_bytes`] with extra headers.
pub fn get_bytes_h(addr: &str, path: &str, headers: &[(&str, &str)]) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}\r\n").as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| std::io::Error::other("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status"))?;
    Ok((status, raw[end + 4..].to_vec()))
}

/// Every file under `dir` (none when it is missing).
pub fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() { stack.push(p) } else { out.push(p) }
        }
    }
    out
}
