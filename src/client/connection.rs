//! One pipelined client connection to a Kafka-compatible broker, on a glommio executor.
//!
//! Requests are framed by the caller's task and handed to a writer task over a bounded
//! channel; the writer records what answer each request expects (in send order) before it
//! writes, and a reader task matches responses to requests in that order, checking the
//! correlation id. Any number of requests may be in flight; callers bound that themselves
//! (the load tool's `--max-in-flight`). A request that expects no answer (Produce with
//! acks=0) completes once its bytes are handed to the socket. When the connection breaks,
//! every pending request fails with [`ClientError::Disconnected`]; nothing is retried.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use bytes::{BufMut, Bytes, BytesMut};
use futures_channel::oneshot;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel::{self, LocalSender};
use glommio::net::TcpStream;
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};

use super::error::ClientError;

/// Largest response frame we accept; a bigger length prefix means a broken stream.
const RESPONSE_BYTES_MAX: usize = 512 << 20;
const READ_CHUNK_BYTES: usize = 256 << 10;
const READ_STEP_BYTES_MAX: usize = 1 << 20;
/// Responses at least this large are read into recycled buffers (`BufferPool`).
const LARGE_RESPONSE_BYTES: usize = 1 << 20;
const OUTBOUND_QUEUE_DEPTH: usize = 1024;

type Reply = oneshot::Sender<Result<Bytes, ClientError>>;

struct Outbound {
    frame: Bytes,
    correlation_id: i32,
    /// `None`: no response will come (acks=0); the reply fires once the frame is written.
    expects: Option<i16>,
    reply: Reply,
}

struct Awaiting {
    correlation_id: i32,
    response_header_version: i16,
    reply: Reply,
}

/// A connection shared by the tasks of one executor (`Rc`). Dropping the last handle
/// closes the outbound channel, which ends the writer; closing the socket ends the reader.
pub struct Connection {
    address: String,
    client_id: String,
    outbound: LocalSender<Outbound>,
    next_correlation_id: Cell<i32>,
    broken: Rc<Cell<bool>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("address", &self.address).finish_non_exhaustive()
    }
}

impl Connection {
    /// Connects and starts the reader and writer tasks on the current executor.
    pub async fn connect(address: &str, client_id: &str) -> Result<Rc<Connection>, ClientError> {
        let stream = TcpStream::connect(address)
            .await
            .map_err(|e| ClientError::Connect { address: address.to_string(), reason: e.to_string() })?;
        let _ = stream.set_nodelay(true);
        let (reader, writer) = futures_lite::io::split(stream);
        let (outbound, queue) = local_channel::new_bounded::<Outbound>(OUTBOUND_QUEUE_DEPTH);
        let awaiting: Rc<RefCell<VecDeque<Awaiting>>> = Rc::default();
        let broken = Rc::new(Cell::new(false));

        glommio::spawn_local(write_loop(writer, queue, awaiting.clone(), broken.clone(), address.to_string())).detach();
        glommio::spawn_local(read_loop(reader, awaiting, broken.clone(), address.to_string())).detach();

        Ok(Rc::new(Connection {
            address: address.to_string(),
            client_id: client_id.to_string(),
            outbound,
            next_correlation_id: Cell::new(1),
            broken,
        }))
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// True once the connection failed; every later call fails at once.
    pub fn is_broken(&self) -> bool {
        self.broken.get()
    }

    /// Sends `body` as version `version` of its API and decodes the response.
    pub async fn call<R: Request>(&self, version: i16, body: &R) -> Result<R::Response, ClientError> {
        let api = api_key(R::KEY)?;
        let mut response = self.call_raw::<R>(version, body, true).await?;
        R::Response::decode(&mut response, version).map_err(|e| ClientError::Decode { api, reason: e.to_string() })
    }

    /// Sends a request that gets no response (Produce with acks=0); resolves once written.
    pub async fn send_without_response<R: Request>(&self, version: i16, body: &R) -> Result<(), ClientError> {
        self.call_raw::<R>(version, body, false).await.map(drop)
    }

    async fn call_raw<R: Request>(&self, version: i16, body: &R, expects_response: bool) -> Result<Bytes, ClientError> {
        let api = api_key(R::KEY)?;
        if self.broken.get() {
            return Err(ClientError::Disconnected(self.address.clone()));
        }
        let correlation_id = self.next_correlation_id.get();
        self.next_correlation_id.set(correlation_id.wrapping_add(1).max(1));
        let frame = encode_request(api, version, correlation_id, &self.client_id, body)?;
        let (reply, answer) = oneshot::channel();
        let outbound = Outbound {
            frame,
            correlation_id,
            expects: expects_response.then(|| api.response_header_version(version)),
            reply,
        };
        if self.outbound.send(outbound).await.is_err() {
            return Err(ClientError::Disconnected(self.address.clone()));
        }
        answer.await.unwrap_or_else(|_| Err(ClientError::Disconnected(self.address.clone())))
    }
}

fn api_key(key: i16) -> Result<ApiKey, ClientError> {
    ApiKey::try_from(key).map_err(|_| ClientError::Protocol(format!("unknown api key {key}")))
}

/// `[i32 length][request header][body]`, ready for the socket.
pub fn encode_request<R: Encodable>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    client_id: &str,
    body: &R,
) -> Result<Bytes, ClientError> {
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_string(client_id.to_string())));
    let header_version = api.request_header_version(version);
    let encode_error = |reason: String| ClientError::Encode { api, version, reason };
    let size = header.compute_size(header_version).map_err(|e| encode_error(e.to_string()))?
        + body.compute_size(version).map_err(|e| encode_error(e.to_string()))?;
    let mut frame = BytesMut::with_capacity(4 + size);
    frame.put_i32(size as i32);
    header.encode(&mut frame, header_version).map_err(|e| encode_error(e.to_string()))?;
    body.encode(&mut frame, version).map_err(|e| encode_error(e.to_string()))?;
    Ok(frame.freeze())
}

async fn write_loop<W: futures_lite::AsyncWrite + Unpin>(
    mut writer: W,
    queue: local_channel::LocalReceiver<Outbound>,
    awaiting: Rc<RefCell<VecDeque<Awaiting>>>,
    broken: Rc<Cell<bool>>,
    address: String,
) {
    while let Some(outbound) = queue.recv().await {
        if broken.get() {
            let _ = outbound.reply.send(Err(ClientError::Disconnected(address.clone())));
            continue;
        }
        let written_reply = match outbound.expects {
            Some(response_header_version) => {
                awaiting.borrow_mut().push_back(Awaiting {
                    correlation_id: outbound.correlation_id,
                    response_header_version,
                    reply: outbound.reply,
                });
                None
            }
            None => Some(outbound.reply),
        };
        match writer.write_all(&outbound.frame).await {
            Ok(()) => {
                if let Some(reply) = written_reply {
                    let _ = reply.send(Ok(Bytes::new()));
                }
            }
            Err(error) => {
                tracing::debug!(%address, %error, "write failed");
                if let Some(reply) = written_reply {
                    let _ = reply.send(Err(ClientError::Io { address: address.clone(), reason: error.to_string() }));
                }
                broken.set(true);
                break;
            }
        }
    }
    broken.set(true);
    let _ = writer.close().await;
    // Wake the reader if it is parked in a read, and fail what is still waiting.
    fail_all(&awaiting, &address);
}

async fn read_loop<R: futures_lite::AsyncRead + Unpin>(
    mut reader: R,
    awaiting: Rc<RefCell<VecDeque<Awaiting>>>,
    broken: Rc<Cell<bool>>,
    address: String,
) {
    let mut buffer = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let pool = Arc::new(BufferPool::default());
    loop {
        let frame = match read_frame(&mut reader, &mut buffer, &pool).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(reason) => {
                tracing::debug!(%address, %reason, "read failed");
                break;
            }
        };
        let Some(next) = awaiting.borrow_mut().pop_front() else {
            tracing::debug!(%address, "response without a request");
            break;
        };
        let mut body = frame;
        match ResponseHeader::decode(&mut body, next.response_header_version) {
            Ok(header) if header.correlation_id == next.correlation_id => {
                let _ = next.reply.send(Ok(body));
            }
            Ok(header) => {
                let _ = next.reply.send(Err(ClientError::Protocol(format!(
                    "response correlation id {} where {} was expected",
                    header.correlation_id, next.correlation_id
                ))));
                break;
            }
            Err(error) => {
                let _ = next.reply.send(Err(ClientError::Protocol(format!("bad response header: {error}"))));
                break;
            }
        }
    }
    broken.set(true);
    fail_all(&awaiting, &address);
}

fn fail_all(awaiting: &RefCell<VecDeque<Awaiting>>, address: &str) {
    let pending: Vec<Awaiting> = awaiting.borrow_mut().drain(..).collect();
    for entry in pending {
        let _ = entry.reply.send(Err(ClientError::Disconnected(address.to_string())));
    }
}

async fn read_frame<R: futures_lite::AsyncRead + Unpin>(
    reader: &mut R,
    buffer: &mut BytesMut,
    pool: &Arc<BufferPool>,
) -> Result<Option<Bytes>, String> {
    loop {
        if buffer.len() >= 4 {
            let length = i32::from_be_bytes([buffer[0], buffer[1], buffer[2], buffer[3]]);
            if length < 4 || length as usize > RESPONSE_BYTES_MAX {
                return Err(format!("response length {length} is out of range"));
            }
            let total = 4 + length as usize;
            if buffer.len() >= total {
                return Ok(Some(buffer.split_to(total).freeze().slice(4..)));
            }
            if length as usize >= LARGE_RESPONSE_BYTES {
                // Nothing past this frame is buffered yet (it is incomplete): read the
                // rest straight into a recycled buffer.
                let mut frame = pool.take(length as usize);
                let have = buffer.len() - 4;
                frame.data[..have].copy_from_slice(&buffer[4..]);
                buffer.clear();
                let mut filled = have;
                while filled < frame.len {
                    let n = reader.read(&mut frame.data[filled..frame.len]).await.map_err(|e| e.to_string())?;
                    if n == 0 {
                        return Err("connection closed in the middle of a response".into());
                    }
                    filled += n;
                }
                return Ok(Some(Bytes::from_owner(frame)));
            }
            let want = (total - buffer.len()).clamp(READ_CHUNK_BYTES, READ_STEP_BYTES_MAX);
            buffer.reserve(total - buffer.len());
            if read_more(reader, buffer, want).await? == 0 {
                return Err("connection closed in the middle of a response".into());
            }
        } else if read_more(reader, buffer, READ_CHUNK_BYTES).await? == 0 {
            return if buffer.is_empty() {
                Ok(None)
            } else {
                Err("connection closed in the middle of a response".into())
            };
        }
    }
}

/// Large responses (catch-up fetches of tens of MiB) are read into buffers that are
/// recycled once the response is dropped: fresh allocations of that size are mmap'ed,
/// page-faulted and zeroed by the kernel every time, which cost more than the copy.
#[derive(Debug, Default)]
struct BufferPool {
    free: Mutex<Vec<Vec<u8>>>,
}

const POOLED_BUFFERS_MAX: usize = 4;

impl BufferPool {
    fn take(self: &Arc<BufferPool>, len: usize) -> PooledFrame {
        let mut data = self.free.lock().expect("buffer pool").pop().unwrap_or_default();
        if data.len() < len {
            data.resize(len, 0);
        }
        PooledFrame { data, len, pool: self.clone() }
    }
}

/// A response body in a recycled buffer; goes back to the pool when dropped.
struct PooledFrame {
    data: Vec<u8>,
    len: usize,
    pool: Arc<BufferPool>,
}

impl AsRef<[u8]> for PooledFrame {
    fn as_ref(&self) -> &[u8] {
        &self.data[..self.len]
    }
}

impl Drop for PooledFrame {
    fn drop(&mut self) {
        let mut free = self.pool.free.lock().expect("buffer pool");
        if free.len() < POOLED_BUFFERS_MAX {
            free.push(std::mem::take(&mut self.data));
        }
    }
}

async fn read_more<R: futures_lite::AsyncRead + Unpin>(
    reader: &mut R,
    buffer: &mut BytesMut,
    want: usize,
) -> Result<usize, String> {
    let start = buffer.len();
    buffer.resize(start + want, 0);
    let read = reader.read(&mut buffer[start..]).await;
    let n = *read.as_ref().unwrap_or(&0);
    buffer.truncate(start + n);
    read.map_err(|e| e.to_string())
}
