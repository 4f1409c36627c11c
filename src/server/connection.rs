//! One client connection on the shard that accepted it.
//!
//! The reader parses frames (length checked against `--max-request-bytes` before the body
//! is read) and starts a task per request, so pipelined requests run concurrently; the
//! writer sends their responses strictly in request order. At most
//! `CONNECTION_INFLIGHT_MAX` requests are in flight: beyond that the reader stops reading
//! (backpressure). A malformed frame, an unknown API key or an unsupported version closes
//! this connection only, with a log line saying why. Response chunks that are segment
//! file regions go out with sendfile (`sendfile`), in order with the rest.

use std::cell::Cell;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use futures_util::future::{select, Either};
use glommio::channels::local_channel;
use glommio::net::TcpStream;
use kafka_protocol::messages::ApiKey;

use crate::config::CONNECTION_INFLIGHT_MAX;
use crate::shard::ShardContext;
use crate::storage::RecordChunk;

use super::frame::{frame_length, parse_header, peek_api, FrameError};
use super::handlers::{self, api_versions};
use super::listener::ShutdownSignal;
use super::sendfile::{send_region, LazySendSocket};

/// The first read of a request. Reads within a frame double from here up to what the
/// frame still needs, so a large request takes few reads and a stalled one holds little.
const READ_CHUNK_BYTES: usize = 16 << 10;

type Pending = glommio::Task<Answer>;

/// A request's outcome, as the connection's writer takes it.
struct Answer {
    result: Result<handlers::Response, FrameError>,
    /// When the handler finished (the response's time in the connection's queue and on
    /// the socket is measured from here).
    ready_at: std::time::Instant,
    produce: bool,
}

impl Answer {
    fn ready(result: Result<handlers::Response, FrameError>, produce: bool) -> Answer {
        Answer { result, ready_at: std::time::Instant::now(), produce }
    }
}

pub async fn serve(ctx: Rc<ShardContext>, stream: TcpStream, peer: SocketAddr, shutdown: Rc<ShutdownSignal>) {
    let _ = stream.set_nodelay(true);
    // A client that stops reading cannot hold a response (or a shutdown) forever.
    let write_timeout = ctx.config.response_write_timeout;
    let _ = stream.set_write_timeout(Some(write_timeout));
    // Reads wake up at least this often, so the idle and request-read timeouts are
    // checked without a timer per read (glommio links the timeout to the read itself).
    let limits = ReadLimits {
        request_bytes_max: ctx.config.request_bytes_max,
        idle: ctx.config.connections_max_idle,
        request: ctx.config.request_read_timeout,
    };
    let _ = stream.set_read_timeout(Some(limits.idle.min(limits.request)));
    let fd = stream.as_raw_fd();
    let send_socket = match LazySendSocket::new(fd) {
        Ok(socket) => socket,
        Err(error) => {
            tracing::warn!(%peer, %error, "cannot prepare the socket for zero-copy sends; closing");
            return;
        }
    };
    let probes = crate::metrics::probes();
    probes.connections_opened.add(1);
    let _closed = CountClose(probes.clone());
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    let (queue, responses) = local_channel::new_bounded::<Pending>(CONNECTION_INFLIGHT_MAX);
    // Requests read and not yet answered: a connection waiting on its own requests (a
    // long poll, a slow append) is not idle.
    let in_flight = Rc::new(Cell::new(0usize));
    let answered = in_flight.clone();

    let writer_task = glommio::spawn_local(async move {
        while let Some(pending) = responses.recv().await {
            let Answer { result, ready_at, produce } = pending.await;
            answered.set(answered.get().saturating_sub(1));
            match result {
                Ok(Some(chunks)) => {
                    probes.bytes_sent.add(chunks.iter().map(RecordChunk::len).sum::<usize>() as u64);
                    if let Err(error) = write_response(&mut writer, &send_socket, &chunks, write_timeout).await {
                        if matches!(error.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock) {
                            // A client that stopped reading its responses.
                            probes.connections_timed_out.add(1);
                        }
                        tracing::debug!(%peer, %error, "client went away while we wrote");
                        break;
                    }
                    if produce {
                        probes.produce_response_write.observe(ready_at.elapsed());
                    }
                }
                Ok(None) => {}
                Err(error) => {
                    warn_bad_connection(peer, &error);
                    break;
                }
            }
        }
        // Bounded: a client that stopped reading cannot hold the close (nor, through a
        // full request queue, the reader) either.
        let _ = select(writer.close(), Box::pin(glommio::timer::sleep(write_timeout))).await;
        // Make the reader see the end too (it may be parked in a read).
        // SAFETY: `fd` belongs to the stream, which both halves keep open until dropped.
        unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
    });

    let reading = shutdown.clone();
    let budget = RequestBudget::of(&ctx);
    let run = async move {
        let mut buffer = BytesMut::with_capacity(READ_CHUNK_BYTES);
        loop {
            let frame = match select(
                Box::pin(read_frame(&mut reader, &mut buffer, limits, &in_flight, &budget)),
                Box::pin(reading.wait()),
            )
            .await
            {
                Either::Left((Ok(Some(frame)), _)) => frame,
                Either::Left((Ok(None), _)) | Either::Left((Err(ConnectionError::ShuttingDown), _)) => break,
                Either::Left((Err(error @ (ConnectionError::Idle(_) | ConnectionError::RequestReadTimeout(_))), _)) => {
                    crate::metrics::probes().connections_timed_out.add(1);
                    tracing::debug!(%peer, %error, "closing connection");
                    break;
                }
                Either::Left((Err(error), _)) => {
                    warn_bad_connection(peer, &error);
                    break;
                }
                Either::Right(_) => break,
            };
            let (frame, permit) = frame;
            let pending = match start_request(&ctx, frame, permit, peer) {
                Ok(pending) => pending,
                Err(error) => {
                    warn_bad_connection(peer, &error);
                    break;
                }
            };
            in_flight.set(in_flight.get() + 1);
            if queue.send(pending).await.is_err() {
                break;
            }
        }
        drop(queue);
        writer_task.await;
    };
    // The responses to requests already read still go out, unless the broker is
    // shutting down and the client is not taking them (or not sending the rest of a
    // request): then the connection gets `SHUTDOWN_WRITE_GRACE` and is closed; dropping
    // `run` drops its reader and cancels its writer task.
    let grace = async {
        shutdown.wait().await;
        glommio::timer::sleep(crate::config::SHUTDOWN_WRITE_GRACE).await;
    };
    if let Either::Right(_) = select(Box::pin(run), Box::pin(grace)).await {
        tracing::debug!(%peer, "closing a connection still busy at the end of the shutdown grace");
        // SAFETY: `fd` belongs to the stream, open until the halves are dropped.
        unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
    }
}

/// Bad connections (malformed frames, refused requests) logged per shard: one line a
/// second with the count held back; every one is counted in
/// `tern_connections_bad_total`. A storm of them must not turn into a storm of log lines.
const BAD_CONNECTION_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

thread_local! {
    static BAD_CONNECTION_WARNINGS: std::cell::RefCell<crate::warn_limit::WarningLimiter> =
        std::cell::RefCell::new(crate::warn_limit::WarningLimiter::new(BAD_CONNECTION_LOG_INTERVAL));
}

pub(super) fn warn_bad_connection(peer: SocketAddr, error: &dyn std::fmt::Display) {
    crate::metrics::probes().connections_bad.add(1);
    let admitted = BAD_CONNECTION_WARNINGS.with(|limiter| limiter.borrow_mut().admit(std::time::Instant::now()));
    if let Some(held_back) = admitted {
        tracing::warn!(%peer, %error, similar_held_back = held_back, "closing connection");
    }
}

/// Writes a response's chunks in order: memory through the stream, file regions with
/// sendfile on the same socket once everything before them has been handed to it.
async fn write_response<W: futures_lite::AsyncWrite + Unpin>(
    writer: &mut W,
    socket: &LazySendSocket,
    chunks: &[RecordChunk],
    write_timeout: std::time::Duration,
) -> std::io::Result<()> {
    for chunk in chunks {
        match chunk {
            RecordChunk::Memory(bytes) => writer.write_all(bytes).await?,
            RecordChunk::File(region) => {
                writer.flush().await?;
                send_region(socket.get()?, region, write_timeout).await?;
            }
        }
    }
    Ok(())
}

/// What a connection's reader allows.
#[derive(Debug, Clone, Copy)]
struct ReadLimits {
    request_bytes_max: usize,
    /// No byte read and no request in flight for this long closes the connection.
    idle: Duration,
    /// A frame started and not finished within this long closes the connection.
    request: Duration,
}

/// Reads one whole frame (without its length prefix); `None` at a clean end of stream.
///
/// The buffer grows with the bytes that actually arrive (doubling, from one read chunk),
/// never with what a length prefix announces: a client that sends a 100 MB prefix and
/// stops holds one read chunk of memory, and is closed after the request-read timeout.
async fn read_frame<R: futures_lite::AsyncRead + Unpin>(
    reader: &mut R,
    buffer: &mut BytesMut,
    limits: ReadLimits,
    in_flight: &Cell<usize>,
    budget: &RequestBudget,
) -> Result<Option<(Bytes, RequestPermit)>, ConnectionError> {
    let mut frame_started = (!buffer.is_empty()).then(Instant::now);
    let mut idle_since = Instant::now();
    loop {
        let want = match frame_length(buffer, limits.request_bytes_max)? {
            Some(length) if buffer.len() >= 4 + length => {
                // A whole request takes its bytes from the shard's budget before it goes
                // to its handler: with the budget used up, this connection is not read
                // further until earlier requests finish. (A request still arriving holds
                // only what has arrived, and the request-read timeout bounds it: reserving
                // what a length prefix announces would let a client exhaust the budget
                // with a few prefixes.)
                let permit = budget.reserve(4 + length).await?;
                let frame = buffer.split_to(4 + length).freeze().slice(4..);
                return Ok(Some((frame, permit)));
            }
            Some(length) => (4 + length - buffer.len()).min(READ_CHUNK_BYTES.max(buffer.len())),
            None => READ_CHUNK_BYTES,
        };
        match read_more(reader, buffer, want).await? {
            Some(0) => return if buffer.is_empty() { Ok(None) } else { Err(ConnectionError::Truncated) },
            Some(_) => {
                frame_started.get_or_insert_with(Instant::now);
            }
            None => match frame_started {
                Some(started) if started.elapsed() >= limits.request => {
                    return Err(ConnectionError::RequestReadTimeout(limits.request));
                }
                Some(_) => {}
                None if in_flight.get() > 0 => idle_since = Instant::now(),
                None if idle_since.elapsed() >= limits.idle => return Err(ConnectionError::Idle(limits.idle)),
                None => {}
            },
        }
    }
}

/// A shard's budget of request bytes being read or handled (`--queued-max-request-bytes`).
pub(crate) struct RequestBudget {
    semaphore: Rc<glommio::sync::Semaphore>,
    total: u64,
}

/// Bytes of one request reserved from the budget; given back when dropped (when the
/// request's handler is done).
pub(crate) type RequestPermit = glommio::sync::StaticPermit;

impl RequestBudget {
    fn of(ctx: &ShardContext) -> RequestBudget {
        RequestBudget { semaphore: ctx.request_bytes_budget.clone(), total: ctx.request_bytes_budget_total }
    }

    /// Waits until `bytes` (at most the whole budget) are free and takes them.
    async fn reserve(&self, bytes: usize) -> Result<RequestPermit, ConnectionError> {
        let units = (bytes as u64).min(self.total);
        if self.semaphore.available() < units {
            crate::metrics::probes().request_budget_waits.add(1);
        }
        self.semaphore.acquire_static_permit(units).await.map_err(|_| ConnectionError::ShuttingDown)
    }
}

/// Reads up to `want` more bytes onto the end of `buffer`: the count (0 at the end of the
/// stream), or `None` when the socket's read timeout passed with nothing to read.
async fn read_more<R: futures_lite::AsyncRead + Unpin>(
    reader: &mut R,
    buffer: &mut BytesMut,
    want: usize,
) -> std::io::Result<Option<usize>> {
    let start = buffer.len();
    buffer.resize(start + want, 0);
    let read = reader.read(&mut buffer[start..]).await;
    let n = *read.as_ref().unwrap_or(&0);
    buffer.truncate(start + n);
    match read {
        Ok(n) => Ok(Some(n)),
        Err(error) if error.kind() == std::io::ErrorKind::TimedOut => Ok(None),
        Err(error) => Err(error),
    }
}

/// Counts the connection as closed however `serve` ends.
struct CountClose(std::sync::Arc<crate::metrics::ShardProbes>);

impl Drop for CountClose {
    fn drop(&mut self) {
        self.0.connections_closed.add(1);
    }
}

/// Parses the header and starts the handler task; errors close the connection.
/// `permit` holds the request's bytes in the shard's budget until its handler is done.
fn start_request(
    ctx: &Rc<ShardContext>,
    frame: Bytes,
    permit: RequestPermit,
    peer: SocketAddr,
) -> Result<Pending, FrameError> {
    let probes = crate::metrics::probes();
    probes.bytes_received.add(4 + frame.len() as u64);
    let (key, version) = peek_api(&frame)?;
    probes.count_request(key);
    let counted = |error: FrameError| {
        probes.count_request_error(key);
        error
    };
    let api = ApiKey::try_from(key).map_err(|_| counted(FrameError::UnknownApiKey(key)))?;
    let supported = handlers::support_for(api).is_some_and(|s| (s.min..=s.max).contains(&version));
    if !supported {
        if api == ApiKey::ApiVersions {
            let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
            let response = api_versions::unsupported_version_response(correlation_id);
            return Ok(glommio::spawn_local(async move {
                Answer::ready(Ok(Some(vec![RecordChunk::Memory(response)])), false)
            }));
        }
        return Err(counted(FrameError::UnsupportedVersion { api, version }));
    }
    let mut request = parse_header(frame, api, version).map_err(counted)?;
    request.client_host = format!("/{}", peer.ip());
    let ctx = ctx.clone();
    Ok(glommio::spawn_local(async move {
        let started = std::time::Instant::now();
        let result = handlers::dispatch(&ctx, request).await;
        drop(permit);
        let probes = crate::metrics::probes();
        match (&result, api) {
            (Err(_), _) => probes.count_request_error(key),
            (Ok(_), ApiKey::Produce) => probes.produce_latency.observe(started.elapsed()),
            (Ok(_), ApiKey::Fetch) => probes.fetch_latency.observe(started.elapsed()),
            _ => {}
        }
        Answer::ready(result, api == ApiKey::Produce)
    }))
}

#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("connection closed in the middle of a request")]
    Truncated,
    #[error("request not complete after {0:?} (request-read timeout)")]
    RequestReadTimeout(Duration),
    #[error("idle for {0:?} (connections.max.idle.ms)")]
    Idle(Duration),
    #[error("the shard is shutting down")]
    ShuttingDown,
}
