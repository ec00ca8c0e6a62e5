//! A shard: one glommio executor pinned to one core. It accepts connections on the shared
//! client port (SO_REUSEPORT), owns those sockets, decodes requests, serves reads from its
//! current tree snapshot, forwards writes to the commit executor and delivers watch events.
//! All of its state is `!Send` and touched only by its own thread.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use glommio::channels::shared_channel::{ConnectedSender, SharedReceiver};

use crate::config::Config;
use crate::core::acl::{self, perms};
use crate::core::watches::WatchTable;
use crate::jute::records::{ReplyHeader, encode_watcher_event, xid};
use crate::server::connection::Connection;
use crate::server::limits::TOUCH_REPORT_INTERVAL_MS;
use crate::server::messages::{Published, ShardReply, ToCommit, ToShard};
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
    published: RefCell<Arc<Published>>,
    connections: RefCell<HashMap<u64, Rc<Connection>>>,
    pub watches: RefCell<WatchTable>,
    to_commit: ConnectedSender<ToCommit>,
    touched: RefCell<HashSet<i64>>,
    next_connection_id: Cell<u64>,
}

impl Shard {
    pub fn new(
        index: usize,
        config: Arc<Config>,
        stats: Arc<ServerStats>,
        limiter: Arc<ConnectionLimiter>,
        initial: Arc<Published>,
        to_commit: ConnectedSender<ToCommit>,
    ) -> Shard {
        Shard {
            index,
            config,
            stats,
            limiter,
            published: RefCell::new(initial),
            connections: RefCell::new(HashMap::new()),
            watches: RefCell::new(WatchTable::default()),
            to_commit,
            touched: RefCell::new(HashSet::new()),
            next_connection_id: Cell::new(1),
        }
    }

    pub fn my_stats(&self) -> &ShardStats {
        &self.stats.shards[self.index]
    }

    /// The tree snapshot reads are served from.
    pub fn snapshot(&self) -> Arc<Published> {
        self.published.borrow().clone()
    }

    pub fn last_zxid(&self) -> i64 {
        self.published.borrow().tree.last_zxid()
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

    pub async fn send_to_commit(&self, message: ToCommit) {
        // The commit executor outlives the shards; a failure means shutdown.
        let _ = self.to_commit.send(message).await;
    }

    /// Drains the inbox from the commit executor. Never waits on the commit executor (R7).
    pub async fn run_inbox(self: Rc<Self>, inbox: SharedReceiver<ToShard>) {
        let inbox = inbox.connect().await;
        while let Some(message) = inbox.recv().await {
            if let Some(published) = message.published {
                self.apply_published(published);
            }
            for reply in message.replies {
                self.deliver(reply);
            }
        }
    }

    /// Installs a new tree snapshot after delivering its watch events, so no read can observe
    /// a change before its event has been queued (rule R3).
    fn apply_published(&self, published: Arc<Published>) {
        if !published.triggers.is_empty() {
            let connections = self.connections.borrow();
            let mut watches = self.watches.borrow_mut();
            for (zxid, trigger) in &published.triggers {
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
        *self.published.borrow_mut() = published;
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
            ShardReply::Close { .. } => connection.close_now(),
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
