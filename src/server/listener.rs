//! Each shard binds the listen address itself (glommio sets SO_REUSEPORT, so the kernel
//! spreads incoming connections over the shards) and accepts its own connections.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use futures_util::future::{select, Either};
use glommio::net::TcpListener;

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

/// Accepts connections until shutdown; returns once every connection has finished.
pub async fn accept_loop(ctx: Rc<ShardContext>, listener: TcpListener, shutdown: Rc<ShutdownSignal>) {
    let active = Rc::new(Cell::new(0usize));
    loop {
        let accepted = match select(Box::pin(listener.accept()), Box::pin(shutdown.wait())).await {
            Either::Left((accepted, _)) => accepted,
            Either::Right(_) => break,
        };
        let stream = match accepted {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(shard = ctx.id, %error, "accept failed");
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let peer = stream.peer_addr().unwrap_or_else(|_| ([0, 0, 0, 0], 0).into());
        let (ctx, shutdown, active) = (ctx.clone(), shutdown.clone(), active.clone());
        active.set(active.get() + 1);
        glommio::spawn_local(async move {
            tracing::debug!(shard = ctx.id, %peer, "connection accepted");
            super::connection::serve(ctx, stream, peer, shutdown).await;
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
