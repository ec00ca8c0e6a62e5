//! A shard: one glommio executor pinned to one core. It accepts connections on the shared
//! client port (SO_REUSEPORT), owns those sockets, decodes requests, serves reads from its
//! current tree snapshot, forwards writes to the commit executor and delivers watch events.
//! All of its state is `!Send` and touched only by its own thread.

use ahash::{AHashMap as HashMap, AHashSet as HashSet};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use glommio::channels::shared_channel::{ConnectedSender, SharedReceiver};

use crate::config::Config;
use crate::core::acl::{self, perms};
use crate::core::tree::DataTree;
use crate::core::watches::WatchTable;
use crate::jute::records::{ReplyHeader, encode_watcher_event, xid};
use crate::server::connection::Connection;
use crate::server::limits::TOUCH_REPORT_INTERVAL_MS;
use crate::server::messages::{ShardReply, ToCommit, ToShard, Triggers};
use crate::server::publication::TreeDemand;
use crate::server::stats::{ServerStats, ShardListing, ShardStats};

/// Connections per client IP across all shards (`maxClientCnxns`). Touched only when a
/// connection opens or closes, never per request.
#[derive(Debug, Default)]
pub struct ConnectionLimiter {
    per_ip: Mutex<HashMap<IpAddr, u32>>,
}

impl ConnectionLimiter {
    pub fn try_acquire(&self, ip: IpAddr, max: u32) -> bool {
        let mut map = self.per_ip.lock().expect("limiter lock");
        let count = map.entry(ip).or_insert(0);
        if max != 0 && *count >= max {
            return false;
        }
        *count += 1;
        true
    }

    pub fn release(&self, ip: IpAddr) {
        let mut map = self.per_ip.lock().expect("limiter lock");
        if let Some(count) = map.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                map.remove(&ip);
            }
        }
    }
}

pub struct Shard {
    pub index: usize,
    pub config: Arc<Config>,
    pub stats: Arc<ServerStats>,
    pub limiter: Arc<ConnectionLimiter>,
    /// The tree reads are served from: the newest one the commit executor published.
    tree: RefCell<Arc<DataTree>>,
    /// The newest zxid the commit executor has told this shard of (replies and triggers of
    /// txns up to it have been delivered). Reads wait while the tree is older (rule R8).
    seen_zxid: Cell<i64>,
    /// `NeedTree` was sent and no tree has arrived since.
    tree_requested: Cell<bool>,
    /// Connections holding reads until a newer tree arrives.
    waiting_for_tree: RefCell<Vec<u64>>,
    demand: Arc<TreeDemand>,
    connections: RefCell<HashMap<u64, Rc<Connection>>>,
    pub watches: RefCell<WatchTable>,
    to_commit: ConnectedSender<ToCommit>,
    /// Connections waiting to read their sockets again while the shard is at its outstanding
    /// limit, longest waiting first (rule R15).
    read_queue: RefCell<VecDeque<u64>>,
    touched: RefCell<HashSet<i64>>,
    next_connection_id: Cell<u64>,
}

impl Shard {
    pub fn new(
        index: usize,
        config: Arc<Config>,
        stats: Arc<ServerStats>,
        limiter: Arc<ConnectionLimiter>,
        initial: Arc<DataTree>,
        demand: Arc<TreeDemand>,
        to_commit: ConnectedSender<ToCommit>,
    ) -> Shard {
        Shard {
            index,
            config,
            stats,
            limiter,
            seen_zxid: Cell::new(initial.last_zxid()),
            tree: RefCell::new(initial),
            tree_requested: Cell::new(false),
            waiting_for_tree: RefCell::new(Vec::new()),
            demand,
            connections: RefCell::new(HashMap::new()),
            watches: RefCell::new(WatchTable::default()),
            to_commit,
            read_queue: RefCell::new(VecDeque::new()),
            touched: RefCell::new(HashSet::new()),
            next_connection_id: Cell::new(1),
        }
    }

    pub fn my_stats(&self) -> &ShardStats {
        &self.stats.shards[self.index]
    }

    /// The tree a read is served from. Only while the shard is not behind
    /// ([`Shard::is_behind`]); a caller that reads notes it, so that the commit executor
    /// keeps publishing.
    pub fn tree_for_read(&self) -> Arc<DataTree> {
        debug_assert!(
            !self.is_behind(),
            "reads wait while the shard is behind (R8)"
        );
        self.demand.note_read();
        self.tree.borrow().clone()
    }

    /// The newest zxid this shard knows of, for reply headers.
    pub fn last_zxid(&self) -> i64 {
        self.seen_zxid.get()
    }

    /// True while the shard has delivered replies or triggers of txns its tree lacks: a read
    /// now could miss a client's own write or a watch event (rule R8).
    pub fn is_behind(&self) -> bool {
        self.seen_zxid.get() > self.tree.borrow().last_zxid()
    }

    /// Holds `connection_id`'s reads until a newer tree arrives, and asks for one.
    pub fn wait_for_tree(&self, connection_id: u64) {
        self.waiting_for_tree.borrow_mut().push(connection_id);
        self.request_tree();
    }

    /// Raises the demand flag and, once per wait, asks the commit executor for a tree.
    fn request_tree(&self) {
        self.demand.note_read();
        if !self.tree_requested.replace(true) {
            // A full queue means the commit executor is busy: it finishes a batch soon and
            // then sees the demand flag, so the request itself may be dropped.
            let _ = self.to_commit.try_send(ToCommit::NeedTree);
        }
    }

    /// The current tree for a four-letter word: waits (polling; these are rare) until the
    /// shard is not behind.
    pub async fn current_tree(&self) -> Arc<DataTree> {
        for _ in 0..1000 {
            if !self.is_behind() {
                break;
            }
            self.request_tree();
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        self.tree.borrow().clone()
    }

    pub fn allocate_connection_id(&self) -> u64 {
        let id = self.next_connection_id.get();
        self.next_connection_id.set(id + 1);
        id
    }

    pub fn register(&self, connection: Rc<Connection>) {
        self.connections
            .borrow_mut()
            .insert(connection.id, connection);
        self.my_stats().connections.fetch_add(1, Relaxed);
    }

    pub fn unregister(&self, connection_id: u64) {
        if self
            .connections
            .borrow_mut()
            .remove(&connection_id)
            .is_some()
        {
            self.my_stats().connections.fetch_sub(1, Relaxed);
        }
        self.watches.borrow_mut().remove_connection(connection_id);
    }

    pub fn connection_count(&self) -> usize {
        self.connections.borrow().len()
    }

    pub fn touch(&self, session_id: i64) {
        if session_id != 0 {
            self.touched.borrow_mut().insert(session_id);
        }
    }

    /// True while the shard has its share of `globalOutstandingLimit` in progress: then its
    /// connections stop reading their sockets (backpressure).
    pub fn at_outstanding_limit(&self) -> bool {
        let shards = self.stats.shards.len().max(1);
        let share = (self.config.global_outstanding_limit / shards).max(1) as u64;
        self.my_stats().outstanding.load(Relaxed) >= share
    }

    /// Whether a connection about to read its socket must first queue for a turn: at the
    /// limit, or while others already wait, so that no one overtakes them (R15).
    pub fn must_queue_to_read(&self) -> bool {
        self.at_outstanding_limit() || !self.read_queue.borrow().is_empty()
    }

    pub fn queue_to_read(&self, connection_id: u64) {
        self.read_queue.borrow_mut().push_back(connection_id);
    }

    /// Takes `connection_id` off the queue if it is first and the shard is under its limit;
    /// then tells the next in line, which may fit too.
    pub fn take_read_turn(&self, connection_id: u64) -> bool {
        let mut queue = self.read_queue.borrow_mut();
        if queue.front() != Some(&connection_id) || self.at_outstanding_limit() {
            return false;
        }
        queue.pop_front();
        drop(queue);
        self.wake_next_reader();
        true
    }

    /// Removes a connection that stopped waiting (it closed, or its task ended) from the
    /// queue; nothing once it has taken its turn. If it was first, the next one may read.
    pub fn leave_read_queue(&self, connection_id: u64) {
        let mut queue = self.read_queue.borrow_mut();
        let Some(at) = queue.iter().position(|&id| id == connection_id) else {
            return;
        };
        queue.remove(at);
        drop(queue);
        if at == 0 {
            self.wake_next_reader();
        }
    }

    /// Called as requests finish: if there is room now, wakes the connection that has
    /// waited longest to read.
    pub fn wake_next_reader(&self) {
        if self.at_outstanding_limit() {
            return;
        }
        let Some(first) = self.read_queue.borrow().front().copied() else {
            return;
        };
        if let Some(connection) = self.connections.borrow().get(&first) {
            connection.resume();
        }
    }

    pub async fn send_to_commit(&self, message: ToCommit) {
        // The commit executor outlives the shards; a failure means shutdown.
        let _ = self.to_commit.send(message).await;
    }

    /// Drains the inbox from the commit executor. Never waits on the commit executor (R7).
    pub async fn run_inbox(self: Rc<Self>, inbox: SharedReceiver<ToShard>) {
        let inbox = inbox.connect().await;
        while let Some(message) = inbox.recv().await {
            // Events first, then the tree, so no read can observe a change before its event
            // has been queued (rule R3); replies last.
            if let Some(triggers) = message.triggers {
                self.fire(&triggers);
            }
            self.seen_zxid
                .set(self.seen_zxid.get().max(message.last_zxid));
            if let Some(tree) = message.tree {
                self.install(tree);
            }
            for reply in message.replies {
                self.deliver(reply);
            }
        }
    }

    /// Installs a newer tree and runs the reads that were waiting for it.
    fn install(&self, tree: Arc<DataTree>) {
        *self.tree.borrow_mut() = tree;
        if self.is_behind() {
            return;
        }
        self.tree_requested.set(false);
        let waiting = std::mem::take(&mut *self.waiting_for_tree.borrow_mut());
        for connection_id in waiting {
            let connection = self.connections.borrow().get(&connection_id).cloned();
            if let Some(connection) = connection {
                connection.run_queued();
            }
        }
    }

    /// Queues the watch events of `triggers` on the watching connections.
    fn fire(&self, triggers: &Triggers) {
        let connections = self.connections.borrow();
        let mut watches = self.watches.borrow_mut();
        for (zxid, trigger) in triggers.iter() {
            let fired = watches.trigger(&trigger.path, trigger.event);
            for connection_id in fired {
                let Some(connection) = connections.get(&connection_id) else {
                    continue;
                };
                // Since 3.9.2, events go only to sessions that may READ the node.
                if !acl::check(&trigger.acl, perms::READ, &connection.auth()) {
                    continue;
                }
                let mut frame = Vec::with_capacity(64 + trigger.path.len());
                frame_start(&mut frame);
                ReplyHeader {
                    xid: xid::NOTIFICATION,
                    zxid: *zxid,
                    err: 0,
                }
                .encode(&mut frame);
                encode_watcher_event(trigger.event, &trigger.path, &mut frame);
                frame_finish(&mut frame);
                connection.push_frame(&frame);
            }
        }
    }

    fn deliver(&self, reply: ShardReply) {
        let connection_id = match &reply {
            ShardReply::Write { connection_id, .. }
            | ShardReply::Connect { connection_id, .. }
            | ShardReply::Close { connection_id } => *connection_id,
        };
        // A connection that has gone away no longer needs its reply.
        let Some(connection) = self.connections.borrow().get(&connection_id).cloned() else {
            return;
        };
        match reply {
            ShardReply::Write { reply, .. } => connection.on_write_reply(reply),
            ShardReply::Connect { result, .. } => connection.on_connect_result(result),
            // After what is already queued for it: the commit executor closes a connection
            // right behind the last answer it decided for it (R1).
            ShardReply::Close { .. } => connection.close_after_flush(),
        }
    }

    /// Reports touched sessions to the commit executor and refreshes the 4lw listing.
    pub async fn run_housekeeping(self: Rc<Self>) {
        let period = TOUCH_REPORT_INTERVAL_MS
            .min(self.config.tick_time_ms as u64 / 2)
            .max(5);
        let mut since_listing = 0u64;
        loop {
            glommio::timer::sleep(Duration::from_millis(period)).await;
            let mut sessions: Vec<i64> = self.touched.borrow_mut().drain().collect();
            if !sessions.is_empty() {
                sessions.sort_unstable();
                sessions.dedup();
                self.send_to_commit(ToCommit::Touch { sessions }).await;
            }
            since_listing += period;
            if since_listing >= 1000 {
                since_listing = 0;
                self.refresh_listing();
            }
        }
    }

    pub fn refresh_listing(&self) {
        let connections = self.connections.borrow();
        let watches = self.watches.borrow();
        let session_of = |c: u64| connections.get(&c).map(|c| c.session_id()).unwrap_or(0);
        let mut listing = ShardListing {
            connections: connections.values().map(|c| c.info()).collect(),
            ..Default::default()
        };
        for (connection, paths) in watches.by_connection() {
            listing
                .watches_by_session
                .push((session_of(connection), paths));
        }
        for (p, watchers) in watches.by_path() {
            listing
                .watches_by_path
                .push((p, watchers.into_iter().map(session_of).collect()));
        }
        let stats = self.my_stats();
        stats
            .watch_count
            .store(watches.watch_count() as u64, Relaxed);
        stats
            .watched_paths
            .store(watches.watched_paths().len() as u64, Relaxed);
        *stats.listing.lock().expect("listing lock") = listing;
    }
}

/// Reserves the 4-byte length prefix of a frame.
pub fn frame_start(frame: &mut Vec<u8>) {
    frame.extend_from_slice(&[0, 0, 0, 0]);
}

/// Fills in the length prefix reserved by `frame_start`.
pub fn frame_finish(frame: &mut [u8]) {
    let length = (frame.len() - 4) as i32;
    frame[..4].copy_from_slice(&length.to_be_bytes());
}
