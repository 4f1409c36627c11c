//! Each shard binds the listen address itself (glommio sets SO_REUSEPORT, so the kernel
//! spreads incoming connections over the shards) and accepts its own connections.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{LazyLock, Mutex};
use std::task::{Context, Poll, Waker};

use futures_util::future::{select, Either};
use glommio::net::TcpListener;
use glommio::TaskQueueHandle;

use crate::config::ServeConfig;
use crate::shard::ShardContext;

/// A shard-local, one-shot "stop now" event.
#[derive(Debug, Default)]
pub struct ShutdownSignal {
    fired: Cell<bool>,
    /// Waiting futures by id; each removes itself when dropped.
    wakers: RefCell<Vec<(u64, Waker)>>,
    next_id: Cell<u64>,
}

impl ShutdownSignal {
    pub fn fire(&self) {
        self.fired.set(true);
        for (_, waker) in self.wakers.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    pub fn is_fired(&self) -> bool {
        self.fired.get()
    }

    pub fn wait(&self) -> ShutdownWait<'_> {
        self.next_id.set(self.next_id.get() + 1);
        ShutdownWait { signal: self, id: self.next_id.get() }
    }
}

#[derive(Debug)]
pub struct ShutdownWait<'a> {
    signal: &'a ShutdownSignal,
    id: u64,
}

impl Drop for ShutdownWait<'_> {
    fn drop(&mut self) {
        self.signal.wakers.borrow_mut().retain(|(id, _)| *id != self.id);
    }
}

impl Future for ShutdownWait<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.fired.get() {
            return Poll::Ready(());
        }
        let mut wakers = self.signal.wakers.borrow_mut();
        match wakers.iter_mut().find(|(id, _)| *id == self.id) {
            Some((_, waker)) => waker.clone_from(cx.waker()),
            None => wakers.push((self.id, cx.waker().clone())),
        }
        Poll::Pending
    }
}

/// Client connections open over all shards, and by peer address: max.connections and
/// max.connections.per.ip are limits of the whole broker, so the shards share them.
static OPEN_CONNECTIONS: AtomicUsize = AtomicUsize::new(0);
static OPEN_BY_ADDRESS: LazyLock<Mutex<HashMap<IpAddr, usize>>> = LazyLock::new(Mutex::default);

/// A connection's place under the limits, given back when the connection ends.
#[derive(Debug)]
struct ConnectionSlot {
    address: Option<IpAddr>,
}

impl ConnectionSlot {
    /// Takes a place for a connection from `address`, or says which limit is reached.
    fn take(address: IpAddr, config: &ServeConfig) -> Result<ConnectionSlot, &'static str> {
        if OPEN_CONNECTIONS.fetch_add(1, Ordering::Relaxed) >= config.max_connections {
            OPEN_CONNECTIONS.fetch_sub(1, Ordering::Relaxed);
            return Err("max.connections");
        }
        if config.max_connections_per_ip == usize::MAX {
            return Ok(ConnectionSlot { address: None });
        }
        let mut open = OPEN_BY_ADDRESS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = open.entry(address).or_default();
        if *count >= config.max_connections_per_ip {
            OPEN_CONNECTIONS.fetch_sub(1, Ordering::Relaxed);
            return Err("max.connections.per.ip");
        }
        *count += 1;
        Ok(ConnectionSlot { address: Some(address) })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        OPEN_CONNECTIONS.fetch_sub(1, Ordering::Relaxed);
        if let Some(address) = self.address {
            let mut open = OPEN_BY_ADDRESS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(count) = open.get_mut(&address) {
                *count -= 1;
                if *count == 0 {
                    open.remove(&address);
                }
            }
        }
    }
}

/// A token bucket for max.connection.creation.rate: `rate` accepts a second, bursts of
/// up to a tenth of a second's worth.
#[derive(Debug)]
struct AcceptPacing {
    rate: f64,
    tokens: f64,
    burst: f64,
    refilled: std::time::Instant,
}

impl AcceptPacing {
    fn new(rate: f64) -> AcceptPacing {
        let burst = (rate / 10.0).max(1.0);
        AcceptPacing { rate, tokens: burst, burst, refilled: std::time::Instant::now() }
    }

    /// Takes a token for one accept; `Some(wait)` when the caller must wait first (the
    /// token is then already taken).
    fn take(&mut self, now: std::time::Instant) -> Option<std::time::Duration> {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.tokens -= 1.0;
        (self.tokens < 0.0).then(|| std::time::Duration::from_secs_f64(-self.tokens / self.rate))
    }
}

/// How long the admission queue may keep the CPU when the main queue has work.
pub const ADMISSION_LATENCY: std::time::Duration = std::time::Duration::from_millis(5);

/// Waits until a new connection has sent its first bytes (true), or closed, failed, sat
/// silent for `connections.max.idle.ms`, or shutdown began (false: drop it). glommio's
/// `peek` ignores the socket's read timeout, so the idle limit is a timer raced against
/// it (a connection that never spoke was otherwise held until it closed).
async fn wait_for_first_bytes(ctx: &ShardContext, stream: &glommio::net::TcpStream, shutdown: &ShutdownSignal) -> bool {
    let idle = ctx.config.connections_max_idle;
    let mut byte = [0u8; 1];
    let peek = Box::pin(stream.peek(&mut byte));
    let give_up = Box::pin(select(Box::pin(glommio::timer::sleep(idle)), Box::pin(shutdown.wait())));
    let spoke = match select(peek, give_up).await {
        Either::Left((Ok(0), _)) => false,
        Either::Left((Ok(_), _)) => true,
        Either::Left((Err(error), _)) => {
            let peer = stream.peer_addr().unwrap_or_else(|_| ([0, 0, 0, 0], 0).into());
            super::connection::warn_bad_connection(peer, &std::io::Error::from(error));
            false
        }
        Either::Right((Either::Left(_), _)) => {
            crate::metrics::probes().connections_timed_out.add(1);
            false
        }
        Either::Right(_) => false,
    };
    // Bound first: the futures still pending in the `select` borrow `byte`, and are
    // dropped with the match, before it.
    spoke
}

/// Accepts connections until shutdown; returns once every connection has finished.
/// A connection over max.connections or max.connections.per.ip is closed at once (its
/// descriptor given back), counted in `tern_connections_refused_total`.
///
/// Admission and service run in different task queues. The caller runs this loop in a
/// low-priority admission queue (`admission_queue`), where each new connection waits
/// for its first bytes; only a connection that sends something moves to `serve_queue`
/// (the shard's main queue) for the rest of its life. A storm of connects and resets is
/// accepted and closed entirely in the admission queue, which the scheduler preempts
/// every `ADMISSION_LATENCY` when the main queue has work, so produce and fetch keep
/// their turn instead of waiting behind thousands of short-lived connection tasks.
pub async fn accept_loop(
    ctx: Rc<ShardContext>,
    listener: TcpListener,
    shutdown: Rc<ShutdownSignal>,
    serve_queue: TaskQueueHandle,
) {
    let active = Rc::new(Cell::new(0usize));
    let mut pacing = ctx.config.connection_creation_rate_per_shard.map(AcceptPacing::new);
    loop {
        if let Some(pacing) = pacing.as_mut() {
            // Over the creation rate: the next connection waits in the kernel's backlog.
            if let Some(wait) = pacing.take(std::time::Instant::now()) {
                crate::metrics::probes().connection_creation_throttled.add(1);
                glommio::timer::sleep(wait).await;
            }
        }
        let accepted = match select(Box::pin(listener.accept()), Box::pin(shutdown.wait())).await {
            Either::Left((accepted, _)) => accepted,
            Either::Right(_) => break,
        };
        let stream = match accepted {
            Ok(stream) => {
                crate::metrics::probes().connections_accepted.add(1);
                stream
            }
            Err(error) => {
                tracing::warn!(shard = ctx.id, %error, "accept failed");
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let peer = stream.peer_addr().unwrap_or_else(|_| ([0, 0, 0, 0], 0).into());
        let slot = match ConnectionSlot::take(peer.ip(), &ctx.config) {
            Ok(slot) => slot,
            Err(limit) => {
                crate::metrics::probes().connections_refused.add(1);
                tracing::debug!(shard = ctx.id, %peer, limit, "connection refused: limit reached");
                drop(stream);
                continue;
            }
        };
        let (ctx, shutdown, active) = (ctx.clone(), shutdown.clone(), active.clone());
        active.set(active.get() + 1);
        glommio::spawn_local(async move {
            tracing::debug!(shard = ctx.id, %peer, "connection accepted");
            if wait_for_first_bytes(&ctx, &stream, &shutdown).await {
                let serving = glommio::spawn_local_into(
                    async move {
                        super::connection::serve(ctx, stream, peer, shutdown).await;
                        drop(slot);
                    },
                    serve_queue,
                );
                match serving {
                    Ok(task) => task.await,
                    Err(error) => tracing::error!(%error, "cannot start serving a connection"),
                }
            }
            active.set(active.get() - 1);
        })
        .detach();
    }
    drop(listener);
    // In-flight requests finish and their responses go out before we return, within
    // the drain timeout.
    let deadline = std::time::Instant::now() + crate::config::CONNECTION_DRAIN_TIMEOUT;
    while active.get() > 0 && std::time::Instant::now() < deadline {
        glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
    }
    if active.get() > 0 {
        tracing::warn!(shard = ctx.id, connections = active.get(), "connections still busy at the drain timeout");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_pacing_allows_the_rate_and_a_small_burst() {
        let start = std::time::Instant::now();
        let mut pacing = AcceptPacing::new(100.0);
        // A burst of a tenth of a second's worth passes at once, then each accept waits.
        for _ in 0..10 {
            assert_eq!(pacing.take(start), None);
        }
        let wait = pacing.take(start).expect("over the rate");
        assert!((wait.as_secs_f64() - 0.01).abs() < 1e-6, "{wait:?}");
        // A second later the bucket is full again (not more than the burst).
        let later = start + std::time::Duration::from_secs(1);
        for _ in 0..10 {
            assert_eq!(pacing.take(later), None);
        }
        assert!(pacing.take(later).is_some());
    }
}
