//! When the commit executor hands the shards a new tree (ARCHITECTURE.md "Publishing the
//! tree lazily", rule R8).
//!
//! Every publication costs the commit path: the shards then share the tree, so the next write
//! copies each branch of the persistent map on its way to a change (copy-on-write), and the
//! shards later free the superseded copies. With 1,024 creates in flight and no reads, that
//! copying and freeing was 40% of the commit thread's time (`perf`, 1.1M znodes). A tree is
//! needed only to serve reads, so it is published when shards read:
//!
//! * a shard that executes a read raises [`TreeDemand`]; the next batch that changed the tree
//!   publishes it and lowers the flag. Under reads every batch publishes, as before;
//! * a shard that is behind (it has received replies or triggers of txns its tree lacks) and
//!   must serve a read holds the read and asks with `ToCommit::NeedTree`, which an idle commit
//!   executor answers at once;
//! * a moved tree (`server::rebase`) is published at once, so the shards let go of the old
//!   one;
//! * otherwise a changed tree is published at least every `SHARD_TREE_REFRESH_MS`, so a shard
//!   never pins a superseded tree (and its memory) for long.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::core::tree::DataTree;
use crate::server::limits::SHARD_TREE_REFRESH_MS;
use crate::server::stats::CommitStats;

/// Raised by shards that read; lowered by the commit executor when it publishes.
#[derive(Debug, Default)]
pub struct TreeDemand {
    reads: AtomicBool,
}

impl TreeDemand {
    /// A shard served (or is holding) a read. A load first, so that a shard reading in a loop
    /// does not write the shared cache line each time.
    pub fn note_read(&self) {
        if !self.reads.load(Ordering::Relaxed) {
            self.reads.store(true, Ordering::Relaxed);
        }
    }

    fn take(&self) -> bool {
        self.reads.swap(false, Ordering::Relaxed)
    }

    fn is_raised(&self) -> bool {
        self.reads.load(Ordering::Relaxed)
    }
}

/// The commit executor's side: whether this batch's message to the shards carries the tree.
#[derive(Debug)]
pub struct Publisher {
    demand: Arc<TreeDemand>,
    /// The tree has changed since it was last published.
    unpublished: bool,
    /// A shard asked (`NeedTree`) or the tree was moved: publish at the next chance.
    forced: bool,
    last_published: Instant,
}

impl Publisher {
    pub fn new(demand: Arc<TreeDemand>) -> Publisher {
        Publisher {
            demand,
            unpublished: false,
            forced: false,
            last_published: Instant::now(),
        }
    }

    /// The tree changed (a txn was applied, or it was replaced).
    pub fn changed(&mut self) {
        self.unpublished = true;
    }

    /// Publish the tree at the next batch: a shard holds reads for it, or the tree moved.
    pub fn force(&mut self) {
        self.forced = true;
    }

    /// True if a shard reads or waits for a tree: the next batch's publication is due for
    /// that reason alone. Changes nothing (the leader asks before it seals a batch).
    pub fn is_wanted(&self) -> bool {
        self.forced || self.demand.is_raised()
    }

    /// The tree for the message about to go to the shards, if it must carry one.
    pub fn tree_to_send(&mut self, tree: &DataTree, stats: &CommitStats) -> Option<Arc<DataTree>> {
        if !self.take_due(Instant::now()) {
            return None;
        }
        stats.tree_publications.fetch_add(1, Ordering::Relaxed);
        Some(Arc::new(tree.clone()))
    }

    /// True if the message about to go to the shards must carry the tree; the caller then
    /// sends it.
    fn take_due(&mut self, now: Instant) -> bool {
        if !self.unpublished {
            self.forced = false;
            return false;
        }
        let stale_for = now.saturating_duration_since(self.last_published);
        let due = self.forced
            || self.demand.take()
            || stale_for >= Duration::from_millis(SHARD_TREE_REFRESH_MS);
        if due {
            self.unpublished = false;
            self.forced = false;
            self.last_published = now;
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publisher() -> (Arc<TreeDemand>, Publisher) {
        let demand = Arc::new(TreeDemand::default());
        (demand.clone(), Publisher::new(demand))
    }

    #[test]
    fn an_unchanged_tree_is_never_published() {
        let (demand, mut p) = publisher();
        demand.note_read();
        p.force();
        let later = Instant::now() + Duration::from_secs(60);
        assert!(!p.take_due(later));
        // The request was for the state at that time, which the shards already have.
        p.changed();
        assert!(p.take_due(Instant::now()), "demand from reads is kept");
    }

    #[test]
    fn writes_without_reads_publish_only_every_refresh_interval() {
        let (_demand, mut p) = publisher();
        let start = Instant::now();
        p.changed();
        assert!(!p.take_due(start));
        p.changed();
        let refresh = Duration::from_millis(SHARD_TREE_REFRESH_MS);
        assert!(p.take_due(start + refresh));
        p.changed();
        assert!(!p.take_due(start + refresh + Duration::from_millis(1)));
    }

    #[test]
    fn reads_make_each_changed_batch_publish_once() {
        let (demand, mut p) = publisher();
        let now = Instant::now();
        demand.note_read();
        p.changed();
        assert!(p.take_due(now));
        p.changed();
        assert!(!p.take_due(now), "the flag was lowered by the publication");
        demand.note_read();
        assert!(p.take_due(now));
        assert!(!p.take_due(now), "nothing changed since");
    }

    #[test]
    fn a_forced_publication_happens_at_the_next_change() {
        let (_demand, mut p) = publisher();
        let now = Instant::now();
        p.changed();
        p.force();
        assert!(p.take_due(now));
        p.changed();
        assert!(!p.take_due(now), "forcing is once");
    }
}
