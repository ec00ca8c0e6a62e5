//! Runs one workload against one server: setup (parents, lock nodes), one pinned glommio
//! executor per core that pre-populates its share of the keys and connects its share of the
//! sessions, a common start, the warm-up and timed phases with a progress line each second,
//! and the merge of every core's [`Stats`] into a [`RunResult`].

use std::cell::RefCell;
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, OnceLock, mpsc};
use std::time::{Duration, Instant};

use glommio::net::TcpStream;
use glommio::{LocalExecutorBuilder, Placement};

use crate::conn::{self, ConnError, FrameBuffer, SeqConn};
use crate::dist::{self, KeyPicker};
use crate::host_cpu;
use crate::limits;
use crate::mix;
use crate::paths;
use crate::protocol::{self, code, flags};
use crate::recipes::{self, StormShared};
use crate::report::{RunResult, ServerCpu};
use crate::stats::{Metric, Primary, Progress, Stats, Timing};
use crate::workload::{Kind, Workload};

/// What one run needs besides the workload.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// host:port of the server.
    pub server: String,
    /// Name of this run in reports (the server, or "A"/"B" in a comparison).
    pub label: String,
    pub cores: usize,
    /// Pin each executor to its core.
    pub pin: bool,
    /// Print the progress line each second (stderr).
    pub progress: bool,
    /// The server's CPUs on this host, sampled over the measured phase (`--server-cpus`).
    pub server_cpus: Option<(String, Vec<usize>)>,
}

/// Everything one core's executor needs; its own [`Stats`] live here during the run.
pub struct CoreCtx {
    pub core: usize,
    pub workload: Arc<Workload>,
    pub keys: KeyPicker,
    pub value: Rc<Vec<u8>>,
    pub timing: Timing,
    pub stats: RefCell<Stats>,
    pub progress: Arc<Progress>,
    /// Random per run: keeps node names of runs apart.
    pub run_id: u32,
    pub seed: u64,
}

impl CoreCtx {
    pub fn note_failure(&self, e: &ConnError) {
        self.note_message(format!("core {}: {e}", self.core));
    }

    pub fn note_message(&self, message: String) {
        self.stats.borrow_mut().note(message);
    }
}

/// Raises RLIMIT_MEMLOCK so io_uring can register its rings (glommio needs it).
pub fn raise_memlock_limit() {
    // SAFETY: getrlimit/setrlimit on a stack-allocated struct.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) != 0 {
            return;
        }
        let unlimited = libc::rlimit {
            rlim_cur: libc::RLIM_INFINITY,
            rlim_max: libc::RLIM_INFINITY,
        };
        if libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) != 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit);
        }
    }
}

/// The CPUs this process may run on (honours `taskset`).
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data that sched_getaffinity fills.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
            let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
                .filter(|cpu| libc::CPU_ISSET(*cpu, &set))
                .collect();
            if !cpus.is_empty() {
                return cpus;
            }
        }
    }
    (0..std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1))
        .collect()
}

pub fn resolve(server: &str) -> Result<SocketAddr, String> {
    server
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve server address '{server}': {e}"))?
        .next()
        .ok_or_else(|| format!("server address '{server}' resolves to nothing"))
}

/// CPU time (user + system) this process has used so far.
pub fn process_cpu_time() -> Duration {
    // SAFETY: getrusage fills a zeroed plain-data struct.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return Duration::ZERO;
        }
        let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
        tv(usage.ru_utime) + tv(usage.ru_stime)
    }
}

fn random_u64() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut rng = dist::Rng::new(nanos ^ ((std::process::id() as u64) << 32));
    rng.next_u64()
}

/// State shared by the executors of one run.
struct RunShared {
    address: SocketAddr,
    workload: Arc<Workload>,
    keys: KeyPicker,
    progress: Arc<Progress>,
    /// Set once every core is ready: `Some(start)` to go, `None` to abort.
    gate: OnceLock<Option<Instant>>,
    finished: AtomicUsize,
    storm: Option<Arc<StormShared>>,
    cores: usize,
    run_id: u32,
    seed: u64,
}

/// A connected session, as its driver wants it.
enum Session {
    Raw(TcpStream, FrameBuffer),
    Seq(SeqConn),
}

fn describe(e: ConnError) -> String {
    e.to_string()
}

/// Creates a node, accepting that it exists already.
async fn ensure(conn: &mut SeqConn, path: &str, data: &[u8]) -> Result<(), String> {
    let reply = conn
        .call(|b, x| protocol::create(b, x, path, data, flags::PERSISTENT))
        .await
        .map_err(describe)?;
    if reply.err != 0 && reply.err != code::NODE_EXISTS {
        return Err(format!(
            "create {path}: {}",
            protocol::error_label(reply.err)
        ));
    }
    Ok(())
}

/// Parents, lock nodes: what every core needs before it starts.
async fn setup(address: SocketAddr, workload: Arc<Workload>) -> Result<(), String> {
    let mut conn = SeqConn::open(address).await.map_err(describe)?;
    for parent in paths::PARENTS {
        ensure(&mut conn, parent, &[]).await?;
    }
    if let Kind::Lock(lock) = &workload.kind {
        let mut failed = None;
        conn.call_many(
            lock.lock_count as usize,
            limits::POPULATE_WINDOW,
            |b, x, i| protocol::create(b, x, &paths::lock_node(i as u64), &[], flags::PERSISTENT),
            |_, err| {
                if err != 0 && err != code::NODE_EXISTS && failed.is_none() {
                    failed = Some(err);
                }
            },
        )
        .await
        .map_err(describe)?;
        if let Some(err) = failed {
            return Err(format!(
                "creating lock nodes: {}",
                protocol::error_label(err)
            ));
        }
    }
    conn.close().await;
    Ok(())
}

/// Creates this core's share of the keys (index ≡ core mod cores).
async fn populate(shared: &RunShared, core: usize, value: &[u8]) -> Result<(), String> {
    let mine: Vec<u64> = (core as u64..shared.workload.key_count)
        .step_by(shared.cores)
        .collect();
    if mine.is_empty() {
        return Ok(());
    }
    let mut conn = SeqConn::open(shared.address).await.map_err(describe)?;
    let mut failed = None;
    conn.call_many(
        mine.len(),
        limits::POPULATE_WINDOW,
        |b, x, i| protocol::create(b, x, &dist::key_path(mine[i]), value, flags::PERSISTENT),
        |_, err| {
            if err != 0 && err != code::NODE_EXISTS && failed.is_none() {
                failed = Some(err);
            }
        },
    )
    .await
    .map_err(describe)?;
    conn.close().await;
    match failed {
        Some(err) => Err(format!(
            "pre-population: create failed with {}",
            protocol::error_label(err)
        )),
        None => Ok(()),
    }
}

/// Connects `count` sessions, `CONNECT_CONCURRENCY` at a time.
async fn connect_sessions(
    address: SocketAddr,
    count: usize,
    raw: bool,
) -> Result<Vec<Session>, String> {
    let mut sessions = Vec::with_capacity(count);
    while sessions.len() < count {
        let batch = (count - sessions.len()).min(limits::CONNECT_CONCURRENCY);
        let tasks: Vec<_> = (0..batch)
            .map(|_| {
                glommio::spawn_local(async move {
                    if raw {
                        conn::connect(address, limits::SESSION_TIMEOUT_MS)
                            .await
                            .map(|(stream, _, frames)| Session::Raw(stream, frames))
                    } else {
                        SeqConn::open(address).await.map(Session::Seq)
                    }
                })
            })
            .collect();
        for task in tasks {
            let session = task.await.map_err(|e| {
                let hint = if e == ConnError::Closed {
                    " (does the server limit connections per client address? ZooKeeper's maxClientCnxns defaults to 60)"
                } else {
                    ""
                };
                format!("connecting session {} of {count}: {e}{hint}", sessions.len() + 1)
            })?;
            sessions.push(session);
        }
    }
    Ok(sessions)
}

fn primary_of(workload: &Workload) -> Primary {
    match workload.kind {
        Kind::Mix(_) => Primary::Ops,
        Kind::Lock(_) => Primary::Metric(Metric::LockAcquire),
        Kind::WatchStorm(_) => Primary::Metric(Metric::WatchNotify),
    }
}

/// One core: prepare, report ready, wait for the start, run its sessions, return its stats.
async fn core_main(
    shared: Arc<RunShared>,
    core: usize,
    ready: mpsc::Sender<Result<(), String>>,
) -> Option<Stats> {
    let workload = shared.workload.clone();
    let value = Rc::new(vec![b'x'; workload.value_size as usize]);
    let session_ids: Vec<usize> = (core..workload.sessions as usize)
        .step_by(shared.cores)
        .collect();
    let storm_writer = shared.storm.is_some() && core == 0;
    let prepared = async {
        if matches!(workload.kind, Kind::Mix(_)) {
            populate(&shared, core, &value).await?;
        }
        let raw = matches!(workload.kind, Kind::Mix(_));
        let mut sessions = connect_sessions(shared.address, session_ids.len(), raw).await?;
        let writer = if storm_writer {
            connect_sessions(shared.address, 1, false).await?.pop()
        } else {
            None
        };
        sessions.extend(writer);
        Ok::<_, String>(sessions)
    }
    .await;
    let sessions = match prepared {
        Ok(s) => {
            let _ = ready.send(Ok(()));
            s
        }
        Err(e) => {
            let _ = ready.send(Err(format!("core {core}: {e}")));
            return None;
        }
    };
    let start = loop {
        match shared.gate.get() {
            Some(Some(start)) => break *start,
            Some(None) => return None,
            None => glommio::timer::sleep(Duration::from_millis(1)).await,
        }
    };
    let timing = Timing::new(
        start,
        Duration::from_secs_f64(workload.warmup_secs),
        Duration::from_secs_f64(workload.duration_secs),
    );
    while Instant::now() < start {
        glommio::timer::sleep(start - Instant::now()).await;
    }
    let ctx = Rc::new(CoreCtx {
        core,
        workload: workload.clone(),
        keys: shared.keys.clone(),
        value,
        timing,
        stats: RefCell::new(Stats::new(primary_of(&workload))),
        progress: shared.progress.clone(),
        run_id: shared.run_id,
        seed: shared.seed ^ (core as u64).wrapping_mul(0xA24B_AED4_963E_E407),
    });
    let mut tasks = Vec::with_capacity(sessions.len() + 1);
    // Watch storm: this core's watchers re-arm when its relay lets them.
    let storm_gate = Rc::new(glommio::sync::Semaphore::new(0));
    if let Some(storm) = &shared.storm {
        tasks.push(glommio::spawn_local(recipes::storm_relay(
            storm.clone(),
            storm_gate.clone(),
            session_ids.len() as u64,
        )));
    }
    let mix = match &workload.kind {
        Kind::Mix(m) => Some(Rc::new(m.clone())),
        _ => None,
    };
    for (i, session) in sessions.into_iter().enumerate() {
        let ctx = ctx.clone();
        let task =
            match (session, &workload.kind) {
                (Session::Raw(stream, frames), Kind::Mix(_)) => {
                    let mix = mix.clone().expect("mix workload");
                    glommio::spawn_local(mix::run_session(ctx, mix, session_ids[i], stream, frames))
                }
                (Session::Seq(conn), Kind::Lock(lock)) => glommio::spawn_local(
                    recipes::lock_session(ctx, lock.clone(), session_ids[i], conn),
                ),
                (Session::Seq(conn), Kind::WatchStorm(storm)) => {
                    let shared_storm = shared.storm.clone().expect("storm state");
                    if i < session_ids.len() {
                        glommio::spawn_local(recipes::storm_watcher(
                            ctx,
                            shared_storm,
                            storm_gate.clone(),
                            conn,
                        ))
                    } else {
                        glommio::spawn_local(recipes::storm_writer(
                            ctx,
                            shared_storm,
                            storm.rounds,
                            conn,
                        ))
                    }
                }
                _ => unreachable!("sessions are connected for the workload's kind"),
            };
        tasks.push(task);
    }
    for task in tasks {
        task.await;
    }
    let stats = Rc::try_unwrap(ctx)
        .ok()
        .map(|c| c.stats.into_inner())
        .expect("every session task has ended");
    Some(stats)
}

fn print_progress(
    label: &str,
    elapsed: f64,
    timing_secs: (f64, f64),
    delta: (u64, u64),
    interval: f64,
) {
    let (warmup, duration) = timing_secs;
    // The phase the interval just reported was mostly in.
    let middle = elapsed - interval / 2.0;
    let phase = if middle < warmup {
        "warm-up"
    } else if middle < warmup + duration {
        "measure"
    } else {
        "drain"
    };
    eprintln!(
        "[{label}] {elapsed:6.1}s {phase:<8} {:>10.0} ops/s {:>8} errors",
        delta.0 as f64 / interval,
        delta.1
    );
}

/// Runs `workload` against `config.server` and returns the merged result.
pub fn run(workload: &Workload, config: &RunConfig) -> Result<RunResult, String> {
    raise_memlock_limit();
    let address = resolve(&config.server)?;
    let cpus = allowed_cpus();
    let cores = config.cores.clamp(1, limits::CORES_MAX);
    let workload = Arc::new(workload.clone());
    let storm = match &workload.kind {
        Kind::WatchStorm(_) => Some(Arc::new(StormShared::new(workload.sessions))),
        _ => None,
    };
    let seed = random_u64();
    let shared = Arc::new(RunShared {
        address,
        workload: workload.clone(),
        keys: KeyPicker::new(workload.distribution, workload.key_count),
        progress: Arc::new(Progress::new(cores)),
        gate: OnceLock::new(),
        finished: AtomicUsize::new(0),
        storm,
        cores,
        run_id: (seed >> 32) as u32,
        seed,
    });

    let setup_workload = workload.clone();
    LocalExecutorBuilder::new(Placement::Unbound)
        .name("loadgen-setup")
        .io_memory(limits::EXECUTOR_IO_MEMORY_BYTES)
        .spawn(move || setup(address, setup_workload))
        .map_err(|e| format!("cannot start an executor: {e}"))?
        .join()
        .map_err(|e| format!("setup executor failed: {e}"))?
        .map_err(|e| format!("setup against {}: {e}", config.server))?;

    if config.progress {
        eprintln!(
            "[{}] {}: {} sessions on {cores} core(s), {}; pre-populating and connecting",
            config.label,
            workload.name,
            workload.sessions,
            if workload.is_open_loop() {
                format!("open loop at {} ops/s", workload.target_rate)
            } else {
                format!("closed loop, {} in flight per session", workload.in_flight)
            }
        );
    }
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut handles = Vec::with_capacity(cores);
    for core in 0..cores {
        let placement = if config.pin {
            Placement::Fixed(cpus[core % cpus.len()])
        } else {
            Placement::Unbound
        };
        let shared = shared.clone();
        let ready = ready_tx.clone();
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("loadgen-{core}"))
            .io_memory(limits::EXECUTOR_IO_MEMORY_BYTES)
            .spawn(move || async move {
                let stats = core_main(shared.clone(), core, ready).await;
                shared.finished.fetch_add(1, SeqCst);
                stats
            })
            .map_err(|e| format!("cannot start executor {core}: {e}"))?;
        handles.push(handle);
    }
    drop(ready_tx);
    let mut failure = None;
    for _ in 0..cores {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                failure.get_or_insert(e);
            }
            Err(_) => {
                failure.get_or_insert("an executor stopped before it was ready".to_string());
            }
        }
    }
    let start = Instant::now() + Duration::from_millis(20);
    let cpu_at_start = process_cpu_time();
    let _ = shared
        .gate
        .set(if failure.is_none() { Some(start) } else { None });
    let timing = Timing::new(
        start,
        Duration::from_secs_f64(workload.warmup_secs),
        Duration::from_secs_f64(workload.duration_secs),
    );
    let mut server_cpu = ServerCpuSampler::new(config.server_cpus.as_ref(), &timing);

    if failure.is_none() {
        let phases = (workload.warmup_secs, workload.duration_secs);
        let mut last = (0u64, 0u64);
        let mut last_at = start;
        let mut tick = 1u64;
        while shared.finished.load(SeqCst) < cores {
            std::thread::sleep(server_cpu.sleep_before_next(Duration::from_millis(50)));
            server_cpu.poll();
            let now = Instant::now();
            if now >= start + Duration::from_secs(tick) {
                let totals = shared.progress.totals();
                if config.progress {
                    print_progress(
                        &config.label,
                        now.duration_since(start).as_secs_f64(),
                        phases,
                        (totals.0 - last.0, totals.1 - last.1),
                        now.duration_since(last_at).as_secs_f64(),
                    );
                }
                last = totals;
                last_at = now;
                tick = now.duration_since(start).as_secs() + 1;
            }
        }
    }
    let cpu_used = process_cpu_time().saturating_sub(cpu_at_start);
    let wall = Instant::now().saturating_duration_since(start);
    let server_cpu = server_cpu.finish();
    let mut merged = Stats::new(primary_of(&workload));
    for (core, handle) in handles.into_iter().enumerate() {
        match handle.join() {
            Ok(Some(stats)) => merged.merge(stats),
            Ok(None) => {}
            Err(e) => {
                failure.get_or_insert(format!("executor {core} failed: {e}"));
            }
        }
    }
    if let Some(e) = failure {
        return Err(format!("{}: {e}", config.server));
    }
    let server_cpu = server_cpu.map_err(|e| format!("--server-cpus: {e}"))?;
    let mut result = RunResult::build(&workload, config, cores, &timing, merged);
    result.loadgen_cpu_secs = cpu_used.as_secs_f64();
    result.loadgen_cpu_share =
        cpu_used.as_secs_f64() / (wall.as_secs_f64() * cores as f64).max(1e-9);
    result.server_cpu =
        server_cpu.map(|(cpus, usage)| ServerCpu::new(cpus, usage, result.primary.count));
    Ok(result)
}

/// Samples the server's CPUs (`host_cpu`) when the measured phase starts and when it ends,
/// or when the run ends if that comes first (a watch storm whose rounds are done).
struct ServerCpuSampler<'a> {
    cpus: Option<&'a (String, Vec<usize>)>,
    measure_start: Instant,
    measure_end: Instant,
    first: Option<(Instant, host_cpu::CpuTicks)>,
    last: Option<(Instant, host_cpu::CpuTicks)>,
    /// The first failed sample: reported once the run is over.
    error: Option<String>,
}

impl<'a> ServerCpuSampler<'a> {
    fn new(cpus: Option<&'a (String, Vec<usize>)>, timing: &Timing) -> ServerCpuSampler<'a> {
        ServerCpuSampler {
            cpus,
            measure_start: timing.measure_start,
            measure_end: timing.measure_end,
            first: None,
            last: None,
            error: None,
        }
    }

    /// `step`, or less where a sample is due sooner.
    fn sleep_before_next(&self, step: Duration) -> Duration {
        if self.error.is_some() {
            return step;
        }
        let due = match (self.cpus, self.first, self.last) {
            (None, _, _) | (_, Some(_), Some(_)) => return step,
            (_, None, _) => self.measure_start,
            (_, Some(_), None) => self.measure_end,
        };
        due.saturating_duration_since(Instant::now()).min(step)
    }

    /// Takes the samples that are due; after a failed one, none (`finish` reports it).
    fn poll(&mut self) {
        let Some((_, cpus)) = self.cpus else {
            return;
        };
        if self.error.is_some() {
            return;
        }
        let now = Instant::now();
        let mut take =
            |slot: &mut Option<(Instant, host_cpu::CpuTicks)>| match host_cpu::sample(cpus) {
                Ok(ticks) => *slot = Some((now, ticks)),
                Err(e) => {
                    self.error.get_or_insert(e);
                }
            };
        if self.first.is_none() && now >= self.measure_start {
            take(&mut self.first);
        }
        if self.first.is_some() && self.last.is_none() && now >= self.measure_end {
            take(&mut self.last);
        }
    }

    /// The CPUs and what they did over the measured phase; `None` without `--server-cpus` or
    /// when the run ended before the measured phase began.
    fn finish(mut self) -> Result<Option<(String, host_cpu::Usage)>, String> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let Some((list, cpus)) = self.cpus else {
            return Ok(None);
        };
        let Some((from, at_start)) = self.first else {
            return Ok(None);
        };
        if self.last.is_none() {
            self.last = Some((Instant::now(), host_cpu::sample(cpus)?));
        }
        let (to, at_end) = self.last.expect("just set");
        Ok(Some((
            list.clone(),
            host_cpu::Usage {
                secs: to.saturating_duration_since(from).as_secs_f64(),
                ticks: at_end.since(at_start),
                ticks_per_sec: host_cpu::ticks_per_sec(),
            },
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing_started(ago: Duration) -> Timing {
        Timing::new(
            Instant::now() - ago,
            Duration::from_millis(10),
            Duration::from_millis(20),
        )
    }

    #[test]
    fn a_failed_sample_stops_sampling_instead_of_polling_in_a_tight_loop() {
        let cpus = ("1023".to_string(), vec![1023]);
        let mut sampler = ServerCpuSampler::new(Some(&cpus), &timing_started(Duration::ZERO));
        std::thread::sleep(Duration::from_millis(15));
        sampler.poll();
        let step = Duration::from_millis(50);
        assert_eq!(
            sampler.sleep_before_next(step),
            step,
            "a sample that is overdue because it failed must not make the poll loop spin"
        );
        let err = sampler.finish().unwrap_err();
        assert!(err.contains("CPU 1023"), "{err}");
    }

    #[test]
    fn the_samples_bound_the_measured_phase() {
        let cpus = ("0".to_string(), vec![0]);
        let timing = timing_started(Duration::ZERO);
        let mut sampler = ServerCpuSampler::new(Some(&cpus), &timing);
        assert!(sampler.sleep_before_next(Duration::from_secs(1)) <= Duration::from_millis(10));
        sampler.poll();
        assert!(sampler.first.is_none(), "not before the measured phase");
        while sampler.last.is_none() {
            std::thread::sleep(sampler.sleep_before_next(Duration::from_millis(50)));
            sampler.poll();
        }
        let (from, _) = sampler.first.unwrap();
        let (to, _) = sampler.last.unwrap();
        assert!(from >= timing.measure_start && to >= timing.measure_end);
        let (_, usage) = sampler.finish().unwrap().unwrap();
        assert!(usage.secs >= 0.0 && usage.ticks.total >= usage.ticks.busy);
        assert!(
            ServerCpuSampler::new(None, &timing)
                .finish()
                .unwrap()
                .is_none(),
            "no CPUs given, nothing sampled"
        );
    }
}
