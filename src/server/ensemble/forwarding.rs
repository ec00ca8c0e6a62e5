//! Forwarded writes across the follower-leader hop: each client connection's writes are
//! numbered so that a lost message closes the client instead of breaking FIFO
//! (docs/ARCHITECTURE.md, "A write on a follower").

use super::*;

/// A client connection's forwarded writes, on its follower.
#[derive(Default)]
pub(super) struct ForwardStream {
    pub(super) next_seq: u64,
    /// (request id, seq) of forwarded writes not yet answered, oldest first.
    pub(super) outstanding: VecDeque<(u64, u64)>,
    /// A reply or forward went missing: the connection is being closed and sends no more.
    pub(super) broken: bool,
}

/// Names a client connection to the leader: this process's random incarnation, so that a
/// restarted follower's new connections never continue an old connection's sequence, then the
/// shard and the connection's id on it.
pub(super) fn connection_key(incarnation: u64, c: ConnectionRef) -> u64 {
    (incarnation << 48) | ((c.shard as u64 & 0xffff) << 32) | (c.connection_id & 0xffff_ffff)
}

impl Ensemble {
    /// A forwarded write of `connection` (or its answer) went missing: close the connection,
    /// forget its other forwards, and forward nothing more from it.
    pub(super) fn break_stream(&mut self, connection: ConnectionRef) {
        let stream = self.forward_streams.entry(connection).or_default();
        stream.broken = true;
        let lost: Vec<u64> = stream.outstanding.drain(..).map(|(r, _)| r).collect();
        for r in lost {
            self.forwarded_writes.remove(&r);
        }
        self.close(connection);
    }

    /// A forwarded request the leader never answered (its message or the answer was lost):
    /// the client's connection is closed so that it retries, instead of waiting forever.
    pub(super) fn expire_forwarded(&mut self, now: i64) {
        let limit = now - FORWARD_TIMEOUT_MS;
        for c in take_stale(&mut self.forwarded_writes, limit) {
            self.break_stream(c);
        }
        for c in take_stale(&mut self.forwarded_connects, limit) {
            self.close(c);
        }
        // The leader forgets streams not heard from for a while (closed connections).
        self.forward_expected
            .retain(|_, (_, heard)| *heard > now - 10 * FORWARD_TIMEOUT_MS);
    }
}

/// Removes the requests forwarded at or before `limit` and returns their connections.
fn take_stale(
    forwarded: &mut HashMap<u64, (ConnectionRef, i64)>,
    limit: i64,
) -> Vec<ConnectionRef> {
    let mut stale = Vec::new();
    forwarded.retain(|_, (c, at)| {
        let keep = *at > limit;
        if !keep {
            stale.push(*c);
        }
        keep
    });
    stale
}
