//! Recipe workloads, one request at a time per session:
//!
//! * **lock**: the kazoo/Curator lock recipe. Create an ephemeral-sequential node under a lock
//!   node, getChildren; the lowest sequence holds the lock; otherwise watch the next-lower node
//!   (exists with a watch) and look again once it is deleted. The holder deletes its node.
//!   `lock_acquire` runs from the attempt's intended start until the lock is held.
//! * **watch storm**: W sessions each set a data watch (getData watch=true) on one node; a
//!   writer session sets its data; `watch_notify` runs from the setData reply to the last of
//!   the W notifications (0 when all of them were read before the reply, as happens with a
//!   server that sends notifications before the reply), `watch_fanout` from sending the
//!   setData to the last notification. Each round the writer opens arming (a relay per core
//!   lets that core's watchers re-arm), waits for all W watches, then sets the data.

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use glommio::sync::Semaphore;

use crate::conn::{ConnError, Reply, SeqConn};
use crate::dist::Rng;
use crate::limits;
use crate::paths;
use crate::protocol::{self, Cursor, code, flags};
use crate::runner::CoreCtx;
use crate::stats::Metric;
use crate::workload::{LockConfig, Op};

/// How often the watch-storm writer and relays look at the shared counters.
const STORM_POLL_INTERVAL: Duration = Duration::from_micros(50);

/// NodeDataChanged and NodeDeleted (WatcherEvent.type).
const EVENT_NODE_DELETED: i32 = 2;
const EVENT_NODE_DATA_CHANGED: i32 = 3;

/// Sleeps until `slot` if it is in the future.
async fn sleep_until(slot: Instant) {
    let now = Instant::now();
    if slot > now {
        glommio::timer::sleep(slot - now).await;
    }
}

/// The intended start of each attempt of one session: now (closed loop) or a fixed schedule.
struct Schedule {
    interval: Option<Duration>,
    next: Instant,
}

impl Schedule {
    fn new(ctx: &CoreCtx, session: usize) -> Schedule {
        let rate = ctx.workload.target_rate;
        if rate > 0.0 {
            Schedule {
                interval: Some(Duration::from_secs_f64(ctx.workload.sessions as f64 / rate)),
                next: ctx.timing.start + Duration::from_secs_f64(session as f64 / rate),
            }
        } else {
            Schedule {
                interval: None,
                next: ctx.timing.start,
            }
        }
    }

    /// The next attempt's intended start, after waiting for it; `None` once the run is over.
    async fn next(&mut self, end: Instant) -> Option<Instant> {
        match self.interval {
            None => {
                let now = Instant::now();
                (now < end).then_some(now)
            }
            Some(interval) => {
                if self.next >= end {
                    return None;
                }
                let slot = self.next;
                self.next += interval;
                sleep_until(slot).await;
                Some(slot)
            }
        }
    }
}

/// Records a reply's latency (send to reply). `phase_at` decides warm-up / timed / after: the
/// request's own send time, or the start of the attempt it belongs to, so that every step of an
/// attempt counts in the same phase.
fn record_at(ctx: &CoreCtx, op: Op, reply: &Reply, phase_at: Instant) {
    ctx.stats.borrow_mut().record_latency(
        &ctx.timing,
        Metric::Op(op),
        phase_at,
        reply.done.saturating_duration_since(reply.sent),
        reply.done,
        reply.err,
    );
    ctx.progress.add(ctx.core, 1, (reply.err != 0) as u64);
}

fn record(ctx: &CoreCtx, op: Op, reply: &Reply) {
    record_at(ctx, op, reply, reply.sent);
}

fn fail(ctx: &CoreCtx, e: &ConnError) {
    ctx.stats.borrow_mut().record_failure(&e.label(), 1);
    ctx.progress.add(ctx.core, 0, 1);
    ctx.note_failure(e);
}

/// The sequence number at the end of a sequential node's name.
fn sequence(name: &str) -> Option<i64> {
    let digits = name.len().checked_sub(10)?;
    name.get(digits..)?.parse().ok()
}

/// One lock session: attempts until the timed phase ends.
pub async fn lock_session(ctx: Rc<CoreCtx>, config: LockConfig, session: usize, mut conn: SeqConn) {
    let mut rng = Rng::new(ctx.seed ^ (session as u64).wrapping_mul(0x9E37_79B9));
    let mut schedule = Schedule::new(&ctx, session);
    while let Some(intended) = schedule.next(ctx.timing.measure_end).await {
        if let Err(e) = lock_once(&ctx, &config, &mut rng, &mut conn, intended).await {
            fail(&ctx, &e);
            return;
        }
    }
    conn.close().await;
}

async fn lock_once(
    ctx: &CoreCtx,
    config: &LockConfig,
    rng: &mut Rng,
    conn: &mut SeqConn,
    intended: Instant,
) -> Result<(), ConnError> {
    let lock = paths::lock_node(rng.below(config.lock_count));
    let prefix = format!("{lock}/n-");
    let reply = conn
        .call(|b, x| protocol::create(b, x, &prefix, &[], flags::EPHEMERAL_SEQUENTIAL))
        .await?;
    record_at(ctx, Op::CreateEphemeralSequential, &reply, intended);
    if reply.err != 0 {
        return Ok(()); // counted; the next attempt tries again
    }
    let mine = Cursor::new(&reply.body).string()?;
    let my_name = mine.rsplit('/').next().unwrap_or_default().to_string();
    let my_sequence = sequence(&my_name).ok_or_else(|| {
        ConnError::Protocol(format!("sequential node without a sequence: {mine}"))
    })?;
    // Give up waiting once the run is well over (the holder ahead of us is stuck).
    let give_up = ctx.timing.measure_end + limits::REPLY_TIMEOUT;
    let acquired = loop {
        let reply = conn
            .call(|b, x| protocol::get_children(b, x, &lock, false))
            .await?;
        record_at(ctx, Op::GetChildren, &reply, intended);
        if reply.err != 0 {
            break false;
        }
        let children = protocol::children(&mut Cursor::new(&reply.body))?;
        let predecessor = children
            .iter()
            .filter_map(|c| sequence(c).map(|s| (s, c)))
            .filter(|(s, _)| *s < my_sequence)
            .max_by_key(|(s, _)| *s)
            .map(|(_, c)| format!("{lock}/{c}"));
        let Some(predecessor) = predecessor else {
            break true;
        };
        let reply = conn
            .call(|b, x| protocol::exists(b, x, &predecessor, true))
            .await?;
        if reply.err == code::NO_NODE {
            // Released meanwhile: an expected answer in this recipe, not an error. Look again.
            record_at(ctx, Op::Exists, &Reply { err: 0, ..reply }, intended);
            continue;
        }
        record_at(ctx, Op::Exists, &reply, intended);
        if reply.err != 0 {
            break false;
        }
        let mut waited = false;
        while !waited {
            match conn.next_event(limits::STOP_CHECK_INTERVAL).await {
                Ok((event, _)) => {
                    waited = event.path == predecessor
                        && (event.event_type == EVENT_NODE_DELETED
                            || event.event_type == EVENT_NODE_DATA_CHANGED);
                }
                Err(ConnError::Timeout) if Instant::now() < give_up => {}
                Err(e) => return Err(e),
            }
        }
    };
    if acquired {
        let now = Instant::now();
        ctx.stats
            .borrow_mut()
            .record(&ctx.timing, Metric::LockAcquire, intended, now, 0);
        if config.hold_ms > 0 {
            glommio::timer::sleep(Duration::from_millis(config.hold_ms)).await;
        }
    }
    let reply = conn.call(|b, x| protocol::delete(b, x, &mine, -1)).await?;
    record_at(ctx, Op::Delete, &reply, intended);
    Ok(())
}

/// What the watch-storm sessions share across cores.
pub struct StormShared {
    pub watchers: u64,
    /// Watches armed, counted over all rounds.
    pub armed: AtomicU64,
    /// Notifications received, counted over all rounds.
    pub received: AtomicU64,
    /// Latest notification, nanoseconds after `base`.
    pub last_ns: AtomicU64,
    pub base: Instant,
    /// Set by the writer when the storm is over (or failed).
    pub done: AtomicBool,
    /// Rounds the writer has opened for arming.
    pub round: AtomicU64,
}

impl StormShared {
    pub fn new(watchers: u64) -> StormShared {
        StormShared {
            watchers,
            armed: AtomicU64::new(0),
            received: AtomicU64::new(0),
            last_ns: AtomicU64::new(0),
            base: Instant::now(),
            done: AtomicBool::new(false),
            round: AtomicU64::new(0),
        }
    }
}

/// One watcher: each round, once allowed by `gate`, arm the watch (getData watch=true) and wait
/// for the notification. Re-arming waits for the next round, so reading a round's notifications
/// is not slowed down by re-arm requests of the watchers already notified.
pub async fn storm_watcher(
    ctx: Rc<CoreCtx>,
    shared: std::sync::Arc<StormShared>,
    gate: Rc<Semaphore>,
    mut conn: SeqConn,
) {
    'rounds: while gate.acquire(1).await.is_ok() && !shared.done.load(SeqCst) {
        let reply = match conn
            .call(|b, x| protocol::get_data(b, x, paths::STORM, true))
            .await
        {
            Ok(r) => r,
            Err(e) => {
                fail(&ctx, &e);
                break;
            }
        };
        record(&ctx, Op::Get, &reply);
        if reply.err != 0 {
            break; // no watch set: the writer's round times out and reports it
        }
        shared.armed.fetch_add(1, SeqCst);
        loop {
            match conn.next_event(limits::STOP_CHECK_INTERVAL).await {
                Ok((event, at)) => {
                    if event.path == paths::STORM && event.event_type == EVENT_NODE_DATA_CHANGED {
                        let ns = at.saturating_duration_since(shared.base).as_nanos() as u64;
                        shared.last_ns.fetch_max(ns, SeqCst);
                        shared.received.fetch_add(1, SeqCst);
                        continue 'rounds;
                    }
                }
                Err(ConnError::Timeout) => {
                    if shared.done.load(SeqCst) {
                        break 'rounds;
                    }
                }
                Err(e) => {
                    fail(&ctx, &e);
                    return;
                }
            }
        }
    }
    conn.close().await;
}

/// One per core: turns each new round the writer announces into one `gate` permit per local
/// watcher; closes the gate when the storm is over.
pub async fn storm_relay(
    shared: std::sync::Arc<StormShared>,
    gate: Rc<Semaphore>,
    local_watchers: u64,
) {
    let mut seen = 0;
    while !shared.done.load(SeqCst) {
        let round = shared.round.load(SeqCst);
        if round > seen {
            gate.signal(local_watchers * (round - seen));
            seen = round;
        }
        glommio::timer::sleep(STORM_POLL_INTERVAL).await;
    }
    gate.close();
}

/// Polls `condition` (cheap atomics) until true, or `false` after `timeout`.
async fn wait_for(timeout: Duration, condition: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !condition() {
        if Instant::now() >= deadline {
            return false;
        }
        glommio::timer::sleep(STORM_POLL_INTERVAL).await;
    }
    true
}

/// The writer: one setData per round once every watcher is armed.
pub async fn storm_writer(
    ctx: Rc<CoreCtx>,
    shared: std::sync::Arc<StormShared>,
    rounds: u64,
    mut conn: SeqConn,
) {
    let w = shared.watchers;
    let mut measured = 0;
    let mut round = 0u64;
    while measured < rounds && Instant::now() < ctx.timing.measure_end {
        let target = w * (round + 1);
        shared.round.store(round + 1, SeqCst);
        if !wait_for(limits::STORM_ROUND_TIMEOUT, || {
            shared.armed.load(SeqCst) >= target
        })
        .await
        {
            fail(&ctx, &ConnError::Timeout);
            ctx.note_message(format!(
                "watch storm round {round}: only {} of {w} watches armed",
                shared.armed.load(SeqCst).saturating_sub(w * round)
            ));
            break;
        }
        let value = ctx.value.clone();
        let reply = match conn
            .call(|b, x| protocol::set_data(b, x, paths::STORM, &value, -1))
            .await
        {
            Ok(r) => r,
            Err(e) => {
                fail(&ctx, &e);
                break;
            }
        };
        record(&ctx, Op::Set, &reply);
        if reply.err != 0 {
            break;
        }
        if !wait_for(limits::STORM_ROUND_TIMEOUT, || {
            shared.received.load(SeqCst) >= target
        })
        .await
        {
            fail(&ctx, &ConnError::Timeout);
            ctx.note_message(format!(
                "watch storm round {round}: only {} of {w} notifications arrived",
                shared.received.load(SeqCst).saturating_sub(w * round)
            ));
            break;
        }
        let last = shared.base + Duration::from_nanos(shared.last_ns.load(SeqCst));
        let done = last.max(reply.done);
        let mut stats = ctx.stats.borrow_mut();
        let from_reply = last.saturating_duration_since(reply.done);
        if stats.record_latency(
            &ctx.timing,
            Metric::WatchNotify,
            reply.sent,
            from_reply,
            done,
            0,
        ) {
            measured += 1;
        }
        let from_send = last.saturating_duration_since(reply.sent);
        stats.record_latency(
            &ctx.timing,
            Metric::WatchFanout,
            reply.sent,
            from_send,
            done,
            0,
        );
        drop(stats);
        round += 1;
    }
    shared.done.store(true, SeqCst);
    conn.close().await;
}
