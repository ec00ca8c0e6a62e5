//! The session table owned by the commit path: ids, passwords, negotiated timeouts, and expiry
//! by last-heard-from time (ZooKeeper's `SessionTrackerImpl`, without tick buckets: expiry is
//! checked every tick against each session's own deadline).

use ahash::AHashMap as HashMap;

/// Where a session's live connection is: the shard that owns the socket and the connection's
/// id on that shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnectionRef {
    pub shard: usize,
    pub connection_id: u64,
}

#[derive(Debug, Clone)]
pub struct Session {
    pub id: i64,
    pub timeout_ms: i32,
    pub password: [u8; 16],
    /// Last time any shard reported traffic on this session (commit clock, ms).
    pub last_heard_ms: i64,
    /// The connection currently attached, if any.
    pub owner: Option<ConnectionRef>,
    /// Set once a closeSession is queued, so that expiry does not close it twice.
    pub closing: bool,
}

#[derive(Debug, Default, Clone)]
pub struct SessionTable {
    sessions: HashMap<i64, Session>,
    next_id: i64,
}

impl SessionTable {
    /// `server_id` is myid; ids are `(now_ms << 24) >>> 8 | myid << 56`, then incremented,
    /// as ZooKeeper's `SessionTrackerImpl.initializeNextSessionId`.
    pub fn new(server_id: i64, now_ms: i64) -> SessionTable {
        let base = ((now_ms << 24) as u64 >> 8) as i64;
        let next_id = base | (server_id << 56);
        SessionTable {
            sessions: HashMap::new(),
            next_id,
        }
    }

    pub fn allocate_id(&mut self) -> i64 {
        loop {
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1);
            if id != i64::MIN && id != 0 && !self.sessions.contains_key(&id) {
                return id;
            }
        }
    }

    pub fn insert(&mut self, session: Session) {
        let previous = self.sessions.insert(session.id, session);
        assert!(previous.is_none(), "session ids are unique");
    }

    pub fn remove(&mut self, id: i64) -> Option<Session> {
        self.sessions.remove(&id)
    }

    pub fn get(&self, id: i64) -> Option<&Session> {
        self.sessions.get(&id)
    }

    pub fn get_mut(&mut self, id: i64) -> Option<&mut Session> {
        self.sessions.get_mut(&id)
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Session> {
        self.sessions.values()
    }

    pub fn touch(&mut self, id: i64, now_ms: i64) {
        if let Some(s) = self.sessions.get_mut(&id) {
            s.last_heard_ms = s.last_heard_ms.max(now_ms);
        }
    }

    /// Sessions not heard from within their timeout and not already closing.
    pub fn expired(&self, now_ms: i64) -> Vec<i64> {
        let mut out: Vec<i64> = self
            .sessions
            .values()
            .filter(|s| !s.closing && now_ms - s.last_heard_ms > s.timeout_ms as i64)
            .map(|s| s.id)
            .collect();
        out.sort();
        out
    }

    /// True if `id` is live and `password` is its password, compared in constant time.
    pub fn password_matches(&self, id: i64, password: &[u8]) -> bool {
        match self.sessions.get(&id) {
            Some(s) if !s.closing => constant_time_eq(&s.password, password),
            _ => false,
        }
    }
}

/// Compares two byte strings in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(id: i64, timeout_ms: i32, now: i64) -> Session {
        Session {
            id,
            timeout_ms,
            password: [7; 16],
            last_heard_ms: now,
            owner: None,
            closing: false,
        }
    }

    #[test]
    fn ids_carry_the_server_id_in_the_top_byte() {
        let mut table = SessionTable::new(3, 1_700_000_000_000);
        let a = table.allocate_id();
        let b = table.allocate_id();
        assert_eq!(a >> 56, 3);
        assert_eq!(b, a + 1);
    }

    #[test]
    fn sessions_expire_after_their_timeout_only() {
        let mut table = SessionTable::new(1, 0);
        table.insert(session(1, 1000, 0));
        table.insert(session(2, 5000, 0));
        assert!(table.expired(1000).is_empty());
        assert_eq!(table.expired(1001), vec![1]);
        table.touch(1, 900);
        assert!(table.expired(1500).is_empty());
        assert_eq!(table.expired(5001), vec![1, 2]);
    }

    #[test]
    fn password_check_is_exact() {
        let mut table = SessionTable::new(1, 0);
        table.insert(session(1, 1000, 0));
        assert!(table.password_matches(1, &[7; 16]));
        assert!(!table.password_matches(1, &[7; 15]));
        assert!(!table.password_matches(1, &[8; 16]));
        assert!(!table.password_matches(2, &[7; 16]));
    }
}
