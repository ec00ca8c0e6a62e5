//! A pipelined session running the op mix: K requests in flight, one new request per reply
//! (closed loop), or requests at fixed intended times (open loop).
//!
//! Two tasks share the socket: the writer picks ops and sends them in batches, the reader
//! matches replies to requests in xid order and records latencies. A semaphore of K permits
//! is the window between them. In open loop the latency runs from the request's *intended*
//! send time, so a stalled server (or a full window) shows up in the figures instead of
//! silently lowering the offered rate (no coordinated omission).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::io::AsyncWriteExt;
use glommio::net::TcpStream;
use glommio::sync::Semaphore;

use crate::conn::{ConnError, FrameBuffer, SocketHalf};
use crate::dist::Rng;
use crate::limits;
use crate::paths;
use crate::protocol::{self, Cursor, ReplyHeader, flags, xid};
use crate::runner::CoreCtx;
use crate::stats::Metric;
use crate::workload::{Mix, Op};

struct InFlight {
    xid: i32,
    /// `None` for the closeSession that ends the session.
    op: Option<Op>,
    intended: Instant,
}

struct SessionState {
    in_flight: VecDeque<InFlight>,
    /// Nodes this session created (oldest first), for deletes.
    created: VecDeque<String>,
    failed: bool,
    closing: bool,
}

impl SessionState {
    fn remember(&mut self, path: String) {
        if self.created.len() < limits::CREATED_PATHS_MAX {
            self.created.push_back(path);
        }
    }
}

/// Runs one session until the timed phase ends and its replies are in.
pub async fn run_session(
    ctx: Rc<CoreCtx>,
    mix: Rc<Mix>,
    session: usize,
    stream: TcpStream,
    frames: FrameBuffer,
) {
    let (reader_half, writer_half) = SocketHalf::split(stream);
    let state = Rc::new(RefCell::new(SessionState {
        in_flight: VecDeque::with_capacity(ctx.workload.in_flight as usize + 1),
        created: VecDeque::new(),
        failed: false,
        closing: false,
    }));
    let window = Rc::new(Semaphore::new(ctx.workload.in_flight));
    let reader = glommio::spawn_local(read_replies(
        ctx.clone(),
        state.clone(),
        window.clone(),
        reader_half,
        frames,
    ));
    write_requests(&ctx, &mix, session, &state, &window, writer_half).await;
    reader.await;
}

struct Writer<'a> {
    ctx: &'a CoreCtx,
    mix: &'a Mix,
    session: usize,
    rng: Rng,
    next_xid: i32,
    created_count: u64,
    path: String,
    paths: Vec<String>,
}

impl Writer<'_> {
    fn key(&mut self) -> &str {
        let index = self.ctx.keys.pick(&mut self.rng);
        self.path.clear();
        let _ = write!(self.path, "{}/k{index:07}", paths::ROOT);
        &self.path
    }

    /// Appends one request to `out` and records it in flight.
    fn push(&mut self, out: &mut Vec<u8>, state: &mut SessionState, intended: Instant) {
        let x = self.next_xid;
        self.next_xid = if x == i32::MAX { 1 } else { x + 1 };
        let mut op = self.mix.pick(self.rng.unit());
        if op == Op::Delete && state.created.is_empty() {
            op = self.mix.delete_fallback.unwrap_or(Op::Create);
        }
        let ctx = self.ctx;
        let value = &ctx.value[..];
        match op {
            Op::Get => protocol::get_data(out, x, self.key(), false),
            Op::Exists => protocol::exists(out, x, self.key(), false),
            Op::GetChildren => protocol::get_children(out, x, self.key(), false),
            Op::Set => protocol::set_data(out, x, self.key(), value, -1),
            Op::Create | Op::CreateEphemeral => {
                self.created_count += 1;
                let path = format!(
                    "{}/{:08x}-{}-{}-{}",
                    paths::CREATED,
                    ctx.run_id,
                    ctx.core,
                    self.session,
                    self.created_count
                );
                let f = if op == Op::Create {
                    flags::PERSISTENT
                } else {
                    flags::EPHEMERAL
                };
                protocol::create(out, x, &path, value, f);
                state.remember(path);
            }
            Op::CreateSequential | Op::CreateEphemeralSequential => {
                let prefix = format!("{}/{:08x}-", paths::SEQUENTIAL, ctx.run_id);
                let f = if op == Op::CreateSequential {
                    flags::SEQUENTIAL
                } else {
                    flags::EPHEMERAL_SEQUENTIAL
                };
                protocol::create(out, x, &prefix, value, f);
            }
            Op::Multi => {
                self.paths.clear();
                for _ in 0..ctx.workload.multi_size {
                    let key = self.key().to_owned();
                    self.paths.push(key);
                }
                protocol::multi_set_data(out, x, self.paths.iter().map(|s| s.as_str()), value);
            }
            Op::Delete => {
                let path = state.created.pop_front().unwrap_or_default();
                protocol::delete(out, x, &path, -1);
            }
        }
        state.in_flight.push_back(InFlight {
            xid: x,
            op: Some(op),
            intended,
        });
    }
}

async fn write_requests(
    ctx: &CoreCtx,
    mix: &Mix,
    session: usize,
    state: &RefCell<SessionState>,
    window: &Semaphore,
    mut socket: SocketHalf,
) {
    let timing = ctx.timing;
    let sessions = ctx.workload.sessions as f64;
    let open_loop = ctx.workload.is_open_loop();
    let interval = if open_loop {
        Duration::from_secs_f64(sessions / ctx.workload.target_rate)
    } else {
        Duration::ZERO
    };
    // Sessions start staggered over one interval so the offered load is smooth.
    let mut next_slot = timing.start
        + if open_loop {
            Duration::from_secs_f64(session as f64 / ctx.workload.target_rate)
        } else {
            Duration::ZERO
        };
    let mut writer = Writer {
        ctx,
        mix,
        session,
        rng: Rng::new(ctx.seed ^ (session as u64).wrapping_mul(0x9E37_79B9)),
        next_xid: 1,
        created_count: 0,
        path: String::with_capacity(32),
        paths: Vec::new(),
    };
    let mut out = Vec::with_capacity(limits::READ_CHUNK_BYTES);
    loop {
        if state.borrow().failed {
            break;
        }
        let now = Instant::now();
        if now >= timing.measure_end || (open_loop && next_slot >= timing.measure_end) {
            break;
        }
        if open_loop && next_slot > now {
            glommio::timer::sleep(next_slot - now).await;
            continue;
        }
        if window.acquire(1).await.is_err() {
            break; // the reader failed and closed the window
        }
        let now = Instant::now();
        out.clear();
        {
            let mut st = state.borrow_mut();
            let first = if open_loop { next_slot } else { now };
            next_slot += interval;
            writer.push(&mut out, &mut st, first);
            while out.len() < limits::WRITE_BATCH_BYTES_MAX {
                if open_loop && (next_slot > now || next_slot >= timing.measure_end) {
                    break;
                }
                if !window.try_acquire(1).unwrap_or(false) {
                    break;
                }
                let intended = if open_loop { next_slot } else { now };
                next_slot += interval;
                writer.push(&mut out, &mut st, intended);
            }
        }
        if socket.write_all(&out).await.is_err() {
            break; // the reader sees the same failure and records it
        }
    }
    // Wait for the outstanding replies (the reader closes the window if they never come).
    if window.acquire(ctx.workload.in_flight).await.is_err() || state.borrow().failed {
        return;
    }
    out.clear();
    {
        let mut st = state.borrow_mut();
        st.closing = true;
        let x = writer.next_xid;
        protocol::close_session(&mut out, x);
        st.in_flight.push_back(InFlight {
            xid: x,
            op: None,
            intended: Instant::now(),
        });
    }
    let _ = socket.write_all(&out).await;
    let _ = socket
        .0
        .borrow()
        .set_read_timeout(Some(limits::CLOSE_TIMEOUT));
}

/// Handles every complete frame in `frames`; returns (completed, errors), or `Ok(None)` once the
/// closeSession reply is in.
fn handle_frames(
    ctx: &CoreCtx,
    state: &RefCell<SessionState>,
    frames: &mut FrameBuffer,
    now: Instant,
) -> Result<Option<(u64, u64)>, ConnError> {
    let mut completed = 0;
    let mut errors = 0;
    let mut st = state.borrow_mut();
    let mut stats = ctx.stats.borrow_mut();
    while let Some(range) = frames.next_frame()? {
        let frame = frames.frame(range);
        let mut c = Cursor::new(frame);
        let header = ReplyHeader::decode(&mut c)?;
        if header.xid == xid::NOTIFICATION || header.xid == xid::PING {
            continue;
        }
        let Some(request) = st.in_flight.pop_front() else {
            return Err(ConnError::Protocol(format!(
                "reply xid {} with no request outstanding",
                header.xid
            )));
        };
        if request.xid != header.xid {
            return Err(ConnError::Protocol(format!(
                "reply xid {} out of order (expected {})",
                header.xid, request.xid
            )));
        }
        let Some(op) = request.op else {
            return Ok(None);
        };
        let mut err = header.err;
        if err == 0 {
            match op {
                Op::CreateSequential | Op::CreateEphemeralSequential => {
                    let path = c.string()?;
                    st.remember(path);
                }
                Op::Multi => err = protocol::multi_first_error(&mut c)?,
                _ => {}
            }
        }
        stats.record(&ctx.timing, Metric::Op(op), request.intended, now, err);
        completed += 1;
        if err != 0 {
            errors += 1;
        }
    }
    Ok(Some((completed, errors)))
}

async fn read_replies(
    ctx: Rc<CoreCtx>,
    state: Rc<RefCell<SessionState>>,
    window: Rc<Semaphore>,
    mut socket: SocketHalf,
    mut frames: FrameBuffer,
) {
    let mut now = Instant::now();
    let failure = loop {
        match handle_frames(&ctx, &state, &mut frames, now) {
            Ok(Some((completed, errors))) => {
                if completed > 0 {
                    ctx.progress.add(ctx.core, completed, errors);
                    window.signal(completed);
                }
            }
            Ok(None) => return, // closeSession answered
            Err(e) => break e,
        }
        match frames.fill(&mut socket).await {
            Ok(0) => {
                let st = state.borrow();
                if st.closing && st.in_flight.len() <= 1 {
                    return; // closed after closeSession, reply or not
                }
                break ConnError::Closed;
            }
            Ok(_) => now = Instant::now(),
            Err(e) => {
                let e = ConnError::from(e);
                let st = state.borrow();
                if st.closing && st.in_flight.len() <= 1 {
                    return;
                }
                if e == ConnError::Timeout && st.in_flight.is_empty() {
                    continue; // open loop at a low rate: nothing was outstanding
                }
                break e;
            }
        }
    };
    let lost = {
        let mut st = state.borrow_mut();
        st.failed = true;
        st.in_flight.len() as u64
    };
    ctx.stats
        .borrow_mut()
        .record_failure(&failure.label(), lost);
    ctx.progress.add(ctx.core, 0, 1);
    ctx.note_failure(&failure);
    window.close();
}
