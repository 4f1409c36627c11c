//! Starting and stopping the broker: startup checks, one pinned glommio executor per
//! listed CPU, the cross-shard mesh, recovery of every shard's logs before it accepts
//! connections, and a graceful shutdown on SIGTERM/SIGINT (stop accepting, finish
//! in-flight requests, flush and close every log, exit 0).

mod cluster;

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use glommio::channels::channel_mesh::MeshBuilder;
use glommio::net::TcpListener;
use glommio::{CpuSet, LocalExecutorBuilder, Placement, PoolPlacement};

use crate::cluster::ClusterView;
use crate::config::{ServeConfig, MESH_CHANNEL_CAPACITY, SEND_POOL_THREADS};
use crate::server::listener::{accept_loop, ShutdownSignal};
use crate::storage::{spawn_cleaner_task, spawn_retention_task};

use crate::shard::context::DELETED_MARKER;
use crate::shard::mesh::ShardRequest;
use crate::shard::router::shard_for;
use crate::shard::{handler, metrics_publisher, ShardContext};

/// How long startup waits for a port held by a broker that is still exiting.
const PORT_RELEASE_WAIT: Duration = Duration::from_secs(3);

/// Locked memory glommio needs beyond the io_uring buffers (rings, bookkeeping).
const MEMLOCK_HEADROOM_BYTES: u64 = 512 << 10;

/// Descriptors kept out of `max.connections`' default for segment files, index files,
/// the admin endpoint and startup.
const RESERVED_DESCRIPTORS: u64 = 1024;

/// Raises the soft open-files limit to the hard limit (a broker holds a descriptor per
/// connection and per open segment file) and returns the limit now in force.
pub fn raise_open_files_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read and write only the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
    }
    limit.rlim_cur
}

/// max.connections when not given: the open-files limit (raised) less a reserve for
/// files, so new connections are refused cleanly before descriptors run out.
pub fn default_max_connections() -> usize {
    let limit = raise_open_files_limit();
    let reserve = RESERVED_DESCRIPTORS.max(limit / 10);
    usize::try_from(limit.saturating_sub(reserve).max(64)).unwrap_or(usize::MAX)
}

/// Checks what commonly keeps a broker from starting and says what to do about it.
/// Returns the data dir lock, held for the life of the broker.
pub fn startup_checks(config: &ServeConfig) -> Result<std::fs::File, String> {
    std::fs::create_dir_all(&config.data_dir).map_err(|e| {
        format!("cannot create data dir {}: {e}: check the path and its owner", config.data_dir.display())
    })?;
    let probe = config.data_dir.join(".write-test");
    std::fs::write(&probe, b"tern").and_then(|()| std::fs::remove_file(&probe)).map_err(|e| {
        format!("data dir {} is not writable: {e}: check its owner and permissions", config.data_dir.display())
    })?;

    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we pass and reads nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } == 0 && limit.rlim_cur != libc::RLIM_INFINITY {
        let needed = config.cores.len() as u64 * (config.shard_io_memory_bytes as u64 + MEMLOCK_HEADROOM_BYTES);
        if limit.rlim_cur < needed {
            return Err(format!(
                "locked-memory limit is {} KiB but {} shards with --memory {} bytes need about {} KiB: \
                 raise it (ulimit -l, or LimitMEMLOCK= in the systemd unit) or lower --memory/--cores",
                limit.rlim_cur / 1024,
                config.cores.len(),
                config.shard_io_memory_bytes,
                needed / 1024
            ));
        }
    }

    let lock = lock_data_dir(&config.data_dir)?;
    remove_deleted_leftovers(&config.data_dir);

    // A broker that was just killed may hold its listening socket for a moment after it
    // exits (its io_uring instance is torn down asynchronously): wait a little. A port
    // held only by closing connections of an earlier broker (TIME_WAIT, or FIN_WAIT2
    // while a client has not closed its end yet) fails this plain bind too, but not the
    // shards' SO_REUSEPORT binds: nobody accepting connections means the port is free.
    wait_for_port(config.listen, "--listen")?;
    if let Some(cluster) = &config.cluster {
        wait_for_port(cluster.cluster_listen, "--cluster-listen")?;
    }
    Ok(lock)
}

/// Binds a TCP socket to `address` and closes it without listening: tells whether the
/// port is free without ever accepting a connection. (A listening probe would let a
/// client that is waiting for the broker connect to it for a moment, find nobody and be
/// refused on its next connection.)
/// Waits (up to `PORT_RELEASE_WAIT`) until `address` can be bound, or says who holds it.
fn wait_for_port(address: SocketAddr, flag: &str) -> Result<(), String> {
    let deadline = std::time::Instant::now() + PORT_RELEASE_WAIT;
    loop {
        match bind_without_listening(address) {
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && !someone_listens(address) => break,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                return Err(format!(
                    "port {} is in use: stop the other process or pass {flag} with another port",
                    address
                ))
            }
            Err(e) => return Err(format!("cannot listen on {}: {e}", address)),
        }
    }
    Ok(())
}

fn bind_without_listening(address: std::net::SocketAddr) -> std::io::Result<()> {
    let (domain, storage, len) = match address {
        std::net::SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_in is plain old data; zeroed is a valid value.
            let mut raw: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            raw.sin_family = libc::AF_INET as libc::sa_family_t;
            raw.sin_port = v4.port().to_be();
            raw.sin_addr = libc::in_addr { s_addr: u32::from_ne_bytes(v4.ip().octets()) };
            // SAFETY: sockaddr_storage is large enough for any sockaddr and plain old data.
            let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
            // SAFETY: copying a sockaddr_in into the larger, suitably aligned storage.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in, raw) };
            (libc::AF_INET, storage, std::mem::size_of::<libc::sockaddr_in>())
        }
        std::net::SocketAddr::V6(v6) => {
            // SAFETY: as above, for sockaddr_in6.
            let mut raw: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            raw.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            raw.sin6_port = v6.port().to_be();
            raw.sin6_addr = libc::in6_addr { s6_addr: v6.ip().octets() };
            raw.sin6_scope_id = v6.scope_id();
            // SAFETY: as above.
            let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
            // SAFETY: as above.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in6, raw) };
            (libc::AF_INET6, storage, std::mem::size_of::<libc::sockaddr_in6>())
        }
    };
    // SAFETY: plain socket(2) call; the descriptor is closed below on every path.
    let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `storage` holds a valid sockaddr of `len` bytes for `domain`.
    let bound = unsafe { libc::bind(fd, &storage as *const _ as *const libc::sockaddr, len as libc::socklen_t) };
    let result = if bound == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) };
    // SAFETY: closing the descriptor we opened.
    unsafe { libc::close(fd) };
    result
}

/// True when a connection to `address` is accepted (a listening socket exists).
fn someone_listens(address: std::net::SocketAddr) -> bool {
    let mut target = address;
    if target.ip().is_unspecified() {
        target.set_ip(match address {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    std::net::TcpStream::connect_timeout(&target, Duration::from_millis(200)).is_ok()
}

/// Two brokers on one data dir would corrupt each other's logs: hold an exclusive lock
/// on `<data-dir>/.lock` (released by the kernel when the process ends, however it ends).
fn lock_data_dir(data_dir: &std::path::Path) -> Result<std::fs::File, String> {
    use std::os::fd::AsRawFd;
    let path = data_dir.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(format!(
            "data dir {} is in use by another tern process: stop it, or pass another --data-dir",
            data_dir.display()
        ));
    }
    Ok(file)
}

/// Deletes partition directories whose deletion a crash interrupted.
fn remove_deleted_leftovers(data_dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(data_dir) else { return };
    for entry in entries.flatten() {
        if entry.file_name().to_str().is_some_and(|name| name.contains(DELETED_MARKER)) {
            if let Err(error) = std::fs::remove_dir_all(entry.path()) {
                tracing::warn!(path = %entry.path().display(), %error, "could not remove a deleted partition's leftovers");
            }
        }
    }
}

/// Runs the broker until SIGTERM/SIGINT. Returns an error message for the operator.
pub fn run(config: ServeConfig) -> Result<(), String> {
    let open_files = raise_open_files_limit();
    // An unset per-address limit is stored as usize::MAX; say "unlimited" instead.
    let per_ip = match config.max_connections_per_ip {
        usize::MAX => "unlimited".to_string(),
        limit => limit.to_string(),
    };
    tracing::info!(
        open_files,
        max_connections = config.max_connections,
        max_connections_per_ip = %per_ip,
        "descriptor limits"
    );
    let _data_dir_lock = startup_checks(&config)?;
    crate::stop::install_signal_handlers();
    crate::metrics::expect_shards(config.cores.len());
    if let Some(address) = config.admin_listen {
        let bound = crate::metrics::http::start(address).map_err(|e| {
            format!(
                "cannot serve /metrics and /health on {address}: {e}: pass --admin-listen with another address, or off"
            )
        })?;
        tracing::info!(address = %bound, "admin endpoint: /metrics and /health");
    }
    let config = Arc::new(config);
    let cluster_view = config.cluster.as_ref().map(|cluster| Arc::new(ClusterView::new(cluster.peer_ids())));
    let shard_count = config.cores.len();
    let mesh = MeshBuilder::<ShardRequest, _>::full(shard_count, MESH_CHANNEL_CAPACITY);
    let drained = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::with_capacity(shard_count);
    // Each shard reports here once its logs are closed, before its executor tears down.
    let (finished, outcomes) = std::sync::mpsc::channel::<Result<(), String>>();
    for (index, &cpu) in config.cores.iter().enumerate() {
        let placement = if config.pin { Placement::Fixed(cpu) } else { Placement::Unbound };
        let (config, mesh, drained, finished) = (config.clone(), mesh.clone(), drained.clone(), finished.clone());
        let cluster_view = cluster_view.clone();
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("tern-shard-{index}"))
            .io_memory(config.shard_io_memory_bytes)
            .blocking_thread_pool_placement(send_pool_placement(config.pin, cpu))
            .spawn(move || async move {
                let outcome = shard_main(config, mesh, drained, cluster_view).await;
                let _ = finished.send(outcome.clone());
                outcome
            })
            .map_err(|e| {
                format!("cannot start shard on cpu {cpu}: {e}: io_uring may be unavailable (kernel 5.8+, not blocked by seccomp)")
            })?;
        handles.push(handle);
    }
    drop(finished);
    // Once every shard has closed its logs, the broker is done: the process exit releases
    // the shards' memory and descriptors at once, where tearing the executors down (every
    // partition's handles, indexes and tasks, one by one) took 1.2 s with 5,000
    // partitions. A shard that fails without reporting (a panic) is joined for its error.
    let mut failure = None;
    let mut reported = 0;
    while reported < shard_count {
        match outcomes.recv() {
            Ok(Ok(())) => reported += 1,
            Ok(Err(message)) => {
                reported += 1;
                failure = failure.or(Some(message));
            }
            Err(_) => break,
        }
    }
    if reported < shard_count {
        for handle in handles {
            match handle.join() {
                Ok(Ok(())) => {}
                Ok(Err(message)) => failure = failure.or(Some(message)),
                Err(error) => failure = failure.or(Some(format!("shard thread failed: {error}"))),
            }
        }
    }
    failure.map_or(Ok(()), Err)
}

/// Counts a shard as drained when it finishes, however it finishes, and stops the
/// broker when a shard fails: the other shards must not wait for it forever.
struct DrainGuard {
    drained: Arc<AtomicUsize>,
    counted: bool,
}

impl DrainGuard {
    fn count(&mut self) {
        if !std::mem::replace(&mut self.counted, true) {
            self.drained.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Drop for DrainGuard {
    fn drop(&mut self) {
        if !self.counted {
            crate::stop::request_stop();
            self.count();
        }
    }
}

async fn shard_main(
    config: Arc<ServeConfig>,
    mesh: MeshBuilder<ShardRequest, glommio::channels::channel_mesh::Full>,
    drained: Arc<AtomicUsize>,
    cluster_view: Option<Arc<ClusterView>>,
) -> Result<(), String> {
    let mut guard = DrainGuard { drained: drained.clone(), counted: false };
    let (senders, mut receivers) = mesh.join().await.map_err(|e| format!("joining the shard mesh failed: {e}"))?;
    let id = senders.peer_id();
    let metadata = cluster::initial_metadata(&config, id).await?;
    crate::server::sendfile::set_cold_read_budget(config.cold_read_budget_bytes_per_sec);
    let ctx = Rc::new(ShardContext::new(id, config.clone(), Arc::new(metadata), senders, cluster_view.clone()));
    ctx.start_replicas();
    ctx.apply_metadata(ctx.metadata()).await;
    if let (0, Some(view)) = (id, cluster_view) {
        cluster::start_quorum(&ctx, view)?;
    }
    let shards = ctx.shard_count;
    ctx.groups.load(&config.data_dir, |p| shard_for(crate::group::offsets::OFFSETS_TOPIC, p, shards) == id).await?;
    ctx.replicate_offsets().await?;
    glommio::spawn_local(ctx.groups.clone().run_timers()).detach();
    let owns_txn_state = |p| shard_for(crate::txn::TXN_STATE_TOPIC, p, shards) == id;
    let coordinates = |p| crate::shard::txn_cluster::coordinates_at_start(&ctx, p);
    ctx.txns.load(&config.data_dir, owns_txn_state, coordinates).await?;
    crate::shard::txn_cluster::replicate_txn_state(&ctx).await?;
    glommio::spawn_local(crate::shard::transactions::run_timeouts(ctx.clone())).detach();
    crate::shard::transactions::verify_offsets_commits(&ctx);
    tracing::info!(shard = id, partitions = ctx.logs().len(), "shard recovered its logs");

    // Requests from other shards: each runs as its own task so a slow one (a long poll)
    // never holds up the channel.
    for (_peer, receiver) in receivers.streams() {
        let ctx = ctx.clone();
        glommio::spawn_local(async move {
            while let Some(request) = receiver.recv().await {
                glommio::spawn_local(handler::execute(ctx.clone(), request)).detach();
            }
        })
        .detach();
    }
    let retention = {
        let ctx = ctx.clone();
        spawn_retention_task(config.retention_check_interval, Rc::new(move || ctx.logs()))
    };
    let cleaner = config.cleaner.enabled.then(|| {
        let ctx = ctx.clone();
        spawn_cleaner_task(
            config.cleaner,
            Rc::new(move || ctx.logs().into_iter().chain(ctx.groups.offset_logs()).chain(ctx.txns.logs()).collect()),
        )
    });

    let listener = bind_shard_listener(config.listen, config.defer_accept_secs)
        .map_err(|e| format!("shard {id} cannot listen on {}: {e}", config.listen))?;
    tracing::info!(shard = id, listen = %config.listen, "accepting connections");
    metrics_publisher::spawn(ctx.clone());
    crate::metrics::shard_ready();
    let shutdown = Rc::new(ShutdownSignal::default());
    {
        let shutdown = shutdown.clone();
        let mut stop = crate::stop::StopWaiter::register().map_err(|e| format!("shard {id}: {e}"))?;
        glommio::spawn_local(async move {
            stop.wait().await;
            shutdown.fire();
        })
        .detach();
    }
    // Connections are admitted in a low-priority queue and served in this (main) one.
    let serve_queue = glommio::executor().current_task_queue();
    let admission_queue = glommio::executor().create_task_queue(
        glommio::Shares::Static(100),
        glommio::Latency::Matters(crate::server::listener::ADMISSION_LATENCY),
        "admission",
    );
    glommio::spawn_local_into(accept_loop(ctx.clone(), listener, shutdown, serve_queue), admission_queue)
        .map_err(|e| format!("shard {id}: cannot start accepting: {e}"))?
        .await;

    // Wait until every shard has drained its connections (they may still send us
    // requests until then), then flush and close the logs.
    guard.count();
    while drained.load(Ordering::SeqCst) < ctx.shard_count {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    drop(retention);
    drop(cleaner);
    ctx.close_logs().await;
    ctx.groups.close().await;
    if let Err(error) = ctx.txns.close().await {
        tracing::warn!(shard = id, %error, "closing the transaction state logs failed");
    }
    let probes = crate::metrics::probes();
    let cache = ctx.storage_env.batch_cache.borrow().stats();
    tracing::info!(
        shard = id,
        batch_cache_hits = cache.hits,
        batch_cache_misses = cache.misses,
        batch_cache_bytes_served = probes.batch_cache_bytes_served.get(),
        sendfile_bytes = probes.sendfile_bytes.get(),
        sendfile_calls = probes.sendfile_calls.get(),
        segment_bytes_read = probes.segment_bytes_read.get(),
        segment_header_bytes_read = probes.segment_header_bytes_read.get(),
        "shard read statistics"
    );
    tracing::info!(shard = id, "shard stopped cleanly");
    // Every log is closed and synced. What is left (every partition's handles, indexes
    // and caches) the process exit releases at once; `run` returns without waiting for
    // the executors to tear down.
    std::mem::forget(ctx);
    Ok(())
}

/// The shard's listening socket: SO_REUSEPORT (every shard binds the same address and
/// the kernel spreads connections over them) and SO_REUSEADDR, which glommio's own
/// `bind` does not set: without it a port some client connection left in TIME_WAIT
/// (any port of the ephemeral range, after a burst of short connections) cannot be bound.
///
/// With `defer_accept_secs` > 0, TCP_DEFER_ACCEPT: the kernel completes the handshake
/// but queues the connection for accept only when data arrives (Kafka and inter-broker
/// clients speak first), or once that many seconds have passed. A connection opened and
/// reset before then costs the shard nothing: no accept, no task, no descriptor.
pub(crate) fn bind_shard_listener(address: SocketAddr, defer_accept_secs: u32) -> std::io::Result<TcpListener> {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let domain = if address.is_ipv6() { libc::AF_INET6 } else { libc::AF_INET };
    // SAFETY: plain socket(2); the descriptor is owned by `socket` from here on.
    let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket nobody else owns.
    let socket = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    let enable: libc::c_int = 1;
    for option in [libc::SO_REUSEADDR, libc::SO_REUSEPORT] {
        // SAFETY: setsockopt with a valid int option value on our socket.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                option,
                (&enable as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    if defer_accept_secs > 0 {
        let seconds = libc::c_int::try_from(defer_accept_secs).unwrap_or(libc::c_int::MAX);
        // SAFETY: setsockopt with a valid int option value on our socket.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_DEFER_ACCEPT,
                (&seconds as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    let (storage, len) = socket_address(address);
    // SAFETY: `storage` holds a valid sockaddr of `len` bytes.
    if unsafe { libc::bind(fd, (&storage as *const libc::sockaddr_storage).cast(), len) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: listen(2) on our bound socket.
    if unsafe { libc::listen(fd, 1024) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a listening TCP socket, handed over whole to glommio.
    Ok(unsafe { TcpListener::from_raw_fd(socket.into_raw_fd()) })
}

/// `address` as a sockaddr for bind(2).
fn socket_address(address: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is valid; the family-specific part is filled below.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match address {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(v4.ip().octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr { s6_addr: v6.ip().octets() },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// The shard's blocking pool runs zero-copy sends (`server::sendfile`): a few threads,
/// so one slow client's send does not queue the others', pinned to the shard's CPU so
/// the shard's work (and its kernel copies) stays on its core.
fn send_pool_placement(pin: bool, cpu: usize) -> PoolPlacement {
    let online = if pin { CpuSet::online().ok() } else { None };
    match online {
        Some(set) => PoolPlacement::Custom(vec![set.filter(|l| l.cpu == cpu); SEND_POOL_THREADS]),
        None => PoolPlacement::Unbound(SEND_POOL_THREADS),
    }
}
