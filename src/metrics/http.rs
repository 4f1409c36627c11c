//! The admin HTTP endpoint (`--admin-listen`): `GET /metrics` (Prometheus text) and
//! `GET /health` (200 once every shard has recovered its logs and accepts connections,
//! 503 before). It runs on its own small thread, reads only the probes' atomics and
//! published snapshots, and so never competes with the shards' event loops. One request
//! per connection (`Connection: close`), which is what scrapers and probes send.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

const REQUEST_BYTES_MAX: usize = 16 << 10;
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds `address` and serves it on a background thread; returns the bound address.
pub fn start(address: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(address)?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new().name("tern-admin".into()).spawn(move || {
        for stream in listener.incoming() {
            match stream {
                Ok(stream) => {
                    if let Err(error) = answer(stream) {
                        tracing::debug!(%error, "admin request failed");
                    }
                }
                Err(error) => tracing::warn!(%error, "admin listener accept failed"),
            }
        }
    })?;
    Ok(bound)
}

fn answer(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut request = Vec::with_capacity(1024);
    let mut buffer = [0u8; 4096];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buffer[..n]);
        if request.len() > REQUEST_BYTES_MAX {
            return respond(&mut stream, "431 Request Header Fields Too Large", "text/plain", "request too large\n");
        }
    }
    let text = String::from_utf8_lossy(&request);
    let mut parts = text.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => {
            let body = super::prometheus::render(&super::all_probes());
            respond(&mut stream, "200 OK", "text/plain; version=0.0.4; charset=utf-8", &body)
        }
        ("GET", "/health") => {
            let (ready, total) = super::readiness();
            if total != usize::MAX && ready >= total {
                respond(&mut stream, "200 OK", "text/plain", &format!("ready: {ready} of {total} shards\n"))
            } else {
                let total = if total == usize::MAX { "?".to_string() } else { total.to_string() };
                respond(
                    &mut stream,
                    "503 Service Unavailable",
                    "text/plain",
                    &format!("starting: {ready} of {total} shards have recovered their logs\n"),
                )
            }
        }
        ("GET", _) => respond(&mut stream, "404 Not Found", "text/plain", "try /metrics or /health\n"),
        _ => respond(&mut stream, "405 Method Not Allowed", "text/plain", "only GET\n"),
    }
}

fn respond(stream: &mut TcpStream, status: &str, content_type: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()
}
