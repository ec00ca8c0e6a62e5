//! The runtime: glommio executors, sockets, timers. Everything with I/O lives here; the logic
//! it drives is in `core`.
//!
//! Executors (ARCHITECTURE.md, "Who owns what"):
//! * `zoo-commit`: one executor, not pinned, owns the [`CommitCore`] (tree, sessions).
//! * `zoo-shard-N`: one per core, pinned; owns its connections, its watch table and its
//!   current tree snapshot.

pub mod commit_executor;
pub mod connection;
pub mod ensemble;
pub mod four_letter;
pub mod frame_reader;
pub mod limits;
pub mod log_writer;
pub mod memory;
pub mod messages;
pub mod peer;
pub mod publication;
pub mod rebase;
pub mod shard;
pub mod snapshot_check;
pub mod snapshot_schedule;
pub mod snapshot_worker;
pub mod stats;

use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{SystemTime, UNIX_EPOCH};

use glommio::channels::shared_channel;
use glommio::{LocalExecutorBuilder, Placement};

use crate::config::Config;
use crate::core::commit::CommitCore;
use crate::server::limits::{COMMIT_QUEUE_PER_SHARD_MAX, SHARD_INBOX_MAX};
use crate::server::messages::{ToCommit, ToShard};
use crate::server::shard::{ConnectionLimiter, Shard};
use crate::server::stats::ServerStats;

/// Milliseconds since the Unix epoch (ctime/mtime and session deadlines).
pub fn wall_clock_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// io_uring memory each executor registers; we use no DMA file buffers on the request path.
const EXECUTOR_IO_MEMORY_BYTES: usize = 1 << 20;

/// Raises RLIMIT_MEMLOCK so io_uring can register its rings (glommio asks for it).
fn raise_memlock_limit() {
    // SAFETY: plain libc calls on a stack-allocated struct.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) != 0 {
            return;
        }
        let wanted = libc::rlimit {
            rlim_cur: libc::RLIM_INFINITY,
            rlim_max: libc::RLIM_INFINITY,
        };
        if libc::setrlimit(libc::RLIMIT_MEMLOCK, &wanted) != 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit);
        }
    }
}

/// The CPUs this process may run on.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return (0..std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1))
                .collect();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|cpu| libc::CPU_ISSET(*cpu, &set))
            .collect()
    }
}

fn listen_address(config: &Config) -> Result<SocketAddr, String> {
    let ip: IpAddr = match &config.client_port_address {
        Some(address) => address
            .parse()
            .or_else(|_| {
                use std::net::ToSocketAddrs;
                (address.as_str(), 0)
                    .to_socket_addrs()
                    .ok()
                    .and_then(|mut a| a.next())
                    .map(|a| a.ip())
                    .ok_or(())
            })
            .map_err(|_| format!("clientPortAddress '{address}' is not an address"))?,
        None => IpAddr::from([0, 0, 0, 0]),
    };
    Ok(SocketAddr::new(ip, config.client_port))
}

/// `autopurge.purgeInterval`: every that many hours, delete snapshots beyond
/// `autopurge.snapRetainCount` and the log segments they make unnecessary.
fn start_autopurge(config: &Config) {
    if config.autopurge_purge_interval_hours == 0 {
        return;
    }
    let period = std::time::Duration::from_secs(config.autopurge_purge_interval_hours * 3600);
    let snapshot_dir = crate::storage::snapshot::snapshot_directory(&config.data_dir);
    let log_dir = crate::storage::log::log_directory(&config.data_log_dir);
    let retain = config.autopurge_snap_retain_count;
    let _ = std::thread::Builder::new()
        .name("zoo-purge".into())
        .spawn(move || {
            loop {
                std::thread::sleep(period);
                match crate::storage::recovery::purge(&snapshot_dir, &log_dir, retain) {
                    Ok(deleted) if !deleted.is_empty() => {
                        eprintln!("zoo: purged {} old snapshot and log files", deleted.len())
                    }
                    Ok(_) => {}
                    Err(e) => eprintln!("zoo: purge failed: {e}"),
                }
            }
        });
}

/// Listens on the client port with SO_REUSEPORT (every shard binds it; the kernel spreads
/// connections) and SO_REUSEADDR (a restart right after a crash must not wait for the old
/// connections' TIME_WAIT to expire, as ZooKeeper's Java sockets don't).
fn bind_client_port(address: SocketAddr) -> std::io::Result<glommio::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    use std::os::fd::{FromRawFd, IntoRawFd};
    let domain = if address.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&address.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    // SAFETY: the descriptor is a bound, listening TCP socket that we own and hand over.
    Ok(unsafe { glommio::net::TcpListener::from_raw_fd(socket.into_raw_fd()) })
}

/// SO_REUSEPORT would let a second server (say, a second zoo started by mistake) share the
/// port silently, each getting some of the connections. So first see whether anything already
/// accepts connections there, and refuse to start if so, as a ZooKeeper server's bind would.
///
/// A probe bind is no good: connections of a crashed predecessor that are still closing hold
/// the port for plain binds. And a listener of a predecessor killed a moment ago can still
/// accept for a short while, until the kernel tears down its io_uring ring; so a port counts as
/// busy only if it keeps accepting for `PORT_BUSY_GRACE_MS`. A listener that has stopped
/// accepting but not closed (its process still exiting) lets connections time out once its
/// queue is full, where a port no one holds refuses them at once: a timeout counts as busy.
fn ensure_port_is_free(address: SocketAddr) -> Result<(), String> {
    let target = if address.ip().is_unspecified() {
        SocketAddr::new(IpAddr::from([127, 0, 0, 1]), address.port())
    } else {
        address
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(PORT_BUSY_GRACE_MS);
    loop {
        let busy = match std::net::TcpStream::connect_timeout(
            &target,
            std::time::Duration::from_millis(500),
        ) {
            // A connection to itself (TCP simultaneous open, possible when the port is in the
            // ephemeral range) means nobody listens.
            Ok(stream) => stream.local_addr().ok() != stream.peer_addr().ok(),
            // A listener that does not accept (a process that is exiting) answers nothing
            // once its queue is full: it still holds the port. Refused means nobody does.
            Err(e) => e.kind() == std::io::ErrorKind::TimedOut,
        };
        if !busy {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(format!(
                "cannot listen on {address}: another process listens there"
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// How long a port may stay held by another process before this one refuses to start (see
/// `ensure_port_is_free`).
const PORT_BUSY_GRACE_MS: u64 = 3_000;

/// Pending connections the kernel queues per shard (capped by net.core.somaxconn).
const LISTEN_BACKLOG: i32 = 1024;

/// The recovered state a server starts from.
pub enum Start {
    Standalone(CommitCore),
    /// A member of an ensemble: the committed state plus log entries not yet known committed.
    Replicated(ensemble::Recovered),
}

/// Registers this process for private expedited memory barriers (`membarrier(2)`), which
/// glommio's executors ask for when they start. Call it while the process has one thread:
/// the kernel then only sets a flag, while with several threads the registration waits for
/// every CPU to pass a scheduling point (8 to 15 ms measured here, on every start). Failure
/// is harmless: glommio registers as before.
pub fn register_memory_barriers_early() {
    const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;
    // SAFETY: membarrier takes integer arguments only and changes a flag of this process.
    unsafe {
        libc::syscall(
            libc::SYS_membarrier,
            MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
            0 as libc::c_long,
            0 as libc::c_long,
        );
    }
}

/// Starts the server and blocks until it stops. `snapshot_check` is the structure check of the
/// snapshot `start` was recovered from, started once the server listens.
pub fn run(
    config: Config,
    start: Start,
    snapshot_check: Option<crate::storage::snapshot::DeferredCheck>,
) -> Result<(), String> {
    if config.is_ensemble() {
        ensemble::validate(&config)?;
        // The quorum listener binds with SO_REUSEPORT too: a server restarted while its
        // previous process still holds the port would share it, and the other servers'
        // connections could reach the dying process instead (an election that cannot finish).
        // Checked before the commit executor, which listens there, starts.
        ensure_port_is_free(ensemble::quorum_address(&config)?)?;
    }
    raise_memlock_limit();
    let cpus = allowed_cpus();
    let shard_count = if config.shards == 0 {
        cpus.len().max(1)
    } else {
        config.shards
    };
    let address = listen_address(&config)?;
    let tls = crate::tls::server_config(&config)?;
    let secure_address = match config.raw.get("secureClientPort") {
        Some(port) => {
            let port: u16 = port
                .trim()
                .parse()
                .map_err(|_| format!("secureClientPort '{port}' is not a port"))?;
            Some(SocketAddr::new(address.ip(), port))
        }
        None => None,
    };
    let config = Arc::new(config);
    let stats = Arc::new(ServerStats::new(shard_count));
    let limiter = Arc::new(ConnectionLimiter::default());
    let state = match &start {
        Start::Standalone(core) => core,
        Start::Replicated(r) => &r.applied,
    };
    commit_executor::publish_commit_stats(state, &stats);
    if config.is_ensemble() {
        stats.commit.mode.store(
            stats::ServerMode::Looking as u8,
            std::sync::atomic::Ordering::Relaxed,
        );
    }
    let initial = Arc::new(state.tree().clone());
    let demand = Arc::new(publication::TreeDemand::default());

    let mut to_commit_receivers = Vec::new();
    let mut to_shard_senders = Vec::new();
    let mut shard_ends = Vec::new();
    for _ in 0..shard_count {
        let (to_commit_tx, to_commit_rx) =
            shared_channel::new_bounded::<ToCommit>(COMMIT_QUEUE_PER_SHARD_MAX);
        let (to_shard_tx, to_shard_rx) = shared_channel::new_bounded::<ToShard>(SHARD_INBOX_MAX);
        to_commit_receivers.push(to_commit_rx);
        to_shard_senders.push(to_shard_tx);
        shard_ends.push((to_commit_tx, to_shard_rx));
    }

    let commit_config = config.clone();
    let log_dir = crate::storage::log::log_directory(&config.data_log_dir);
    let commit_stats = stats.clone();
    let commit_demand = demand.clone();
    let commit_task = move || -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> {
        match start {
            Start::Standalone(core) => Box::pin(commit_executor::run(
                commit_config,
                core,
                log_dir,
                to_commit_receivers,
                to_shard_senders,
                commit_stats,
                commit_demand,
            )),
            Start::Replicated(recovered) => Box::pin(ensemble::run(
                commit_config,
                recovered,
                log_dir,
                to_commit_receivers,
                to_shard_senders,
                commit_stats,
                commit_demand,
            )),
        }
    };
    // With a spare core the commit executor gets its own thread. When the process may use a
    // single core, a second thread would only add a scheduler switch to every commit cycle, so
    // the commit path runs as a task on shard 0's executor instead (cooperative, same queues).
    let commit_on_shard_zero = cpus.len() <= 1 || config.commit_on_shard;
    let mut commit_task = Some(commit_task);
    let commit = if commit_on_shard_zero {
        None
    } else {
        let task = commit_task.take().expect("not taken yet");
        Some(
            LocalExecutorBuilder::new(Placement::Unbound)
                .name("zoo-commit")
                .io_memory(EXECUTOR_IO_MEMORY_BYTES)
                .spawn(task)
                .map_err(|e| format!("cannot start the commit executor: {e}"))?,
        )
    };

    ensure_port_is_free(address)?;
    let (bound_tx, bound_rx) = mpsc::channel::<Result<(), String>>();
    let mut shards = Vec::new();
    for (index, (to_commit_tx, to_shard_rx)) in shard_ends.into_iter().enumerate() {
        let placement = if config.pin_cores {
            Placement::Fixed(cpus[index % cpus.len()])
        } else {
            Placement::Unbound
        };
        let config = config.clone();
        let stats = stats.clone();
        let limiter = limiter.clone();
        let initial = initial.clone();
        let demand = demand.clone();
        let bound_tx = bound_tx.clone();
        let commit_here = if index == 0 { commit_task.take() } else { None };
        let tls_listener = match (secure_address, &tls) {
            (Some(a), Some(t)) => Some((a, futures_rustls::TlsAcceptor::from(t.clone()))),
            _ => None,
        };
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("zoo-shard-{index}"))
            .io_memory(EXECUTOR_IO_MEMORY_BYTES)
            .spawn(move || async move {
                if let Some(commit) = commit_here {
                    glommio::spawn_local(commit()).detach();
                }
                let listener = match bind_client_port(address) {
                    Ok(l) => {
                        let _ = bound_tx.send(Ok(()));
                        l
                    }
                    Err(e) => {
                        let _ = bound_tx.send(Err(format!("cannot listen on {address}: {e}")));
                        return;
                    }
                };
                let to_commit = to_commit_tx.connect().await;
                let shard = Rc::new(Shard::new(
                    index, config, stats, limiter, initial, demand, to_commit,
                ));
                glommio::spawn_local(shard.clone().run_inbox(to_shard_rx)).detach();
                if let Some((secure, acceptor)) = tls_listener {
                    match bind_client_port(secure) {
                        Ok(listener) => {
                            let shard = shard.clone();
                            glommio::spawn_local(async move {
                                loop {
                                    if let Ok(stream) = listener.accept().await {
                                        glommio::spawn_local(connection::serve_tls(
                                            shard.clone(),
                                            stream,
                                            acceptor.clone(),
                                        ))
                                        .detach();
                                    }
                                }
                            })
                            .detach();
                        }
                        Err(e) => eprintln!("zoo: cannot listen on secureClientPort {secure}: {e}"),
                    }
                }
                glommio::spawn_local(shard.clone().run_housekeeping()).detach();
                loop {
                    match listener.accept().await {
                        Ok(stream) => {
                            glommio::spawn_local(connection::serve(shard.clone(), stream)).detach();
                        }
                        Err(e) => {
                            eprintln!("zoo: shard {index}: accept failed: {e}");
                            glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
                        }
                    }
                }
            })
            .map_err(|e| format!("cannot start shard {index}: {e}"))?;
        shards.push(handle);
    }
    drop(bound_tx);
    for _ in 0..shard_count {
        match bound_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err("a shard stopped before it could listen".into()),
        }
    }
    start_autopurge(&config);
    eprintln!(
        "zoo: serving ZooKeeper clients on {address} with {shard_count} shard(s); data in {}",
        config.data_dir.display()
    );
    // Only now: the check reads the whole file, and would otherwise compete with the
    // executors' start for the core.
    if let Some(check) = snapshot_check {
        snapshot_check::run_in_background(check);
    }
    for handle in shards {
        let _ = handle.join();
    }
    if let Some(commit) = commit {
        let _ = commit.join();
    }
    Ok(())
}
