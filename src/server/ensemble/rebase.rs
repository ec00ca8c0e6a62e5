//! A replicated server moves its trees onto each snapshot it writes, as a standalone server
//! does (`server::rebase`, ARCHITECTURE.md "Durability"): the snapshot thread maps the file
//! it wrote from the applied (committed) tree at zxid Z and replays the committed entries
//! after Z, which `apply_committed` streams to it; once caught up, the applied tree is
//! swapped for the result.
//!
//! The leader has more trees built on the old one: its speculative tree (the committed state
//! plus its uncommitted proposals) and the sealed trees waiting to be published once their
//! entries commit. They are rebuilt on the swapped-in tree by replaying the uncommitted
//! entries from the replica's log, each sealed tree at its batch's last entry; the
//! speculative core's swap asserts that the rebuilt tree has the same zxid, node count, data
//! size and ephemeral count as the one it replaces. Without this the next sealed tree the
//! applied state adopts would bring the whole old overlay back.

use super::*;
use crate::core::tree::DataTree;

impl Ensemble {
    /// Streams the entries applied since `applied_before` to the snapshot thread.
    pub(super) fn offer_to_rebase(&mut self, applied_before: i64) {
        let applied = self.applied.last_zxid();
        if applied <= applied_before || !self.rebase.is_under_way() {
            return;
        }
        let mut records = Vec::new();
        for entry in self.replica.entries_between(applied_before, applied) {
            records.extend_from_slice(&entry.payload);
        }
        self.rebase.offer(&records, &self.stats.commit);
    }

    /// Swaps in the rebased tree if the snapshot thread has it ready (and, on the leader,
    /// rebuilds the trees built on the old one).
    pub(super) fn poll_rebase(&mut self) {
        let Some(tree) = self
            .rebase
            .poll(self.applied.last_zxid(), &self.stats.commit)
        else {
            return;
        };
        let old = self.applied.replace_tree(tree);
        let old_leader_trees = self.rebase_speculative();
        // Shards move to the rebased tree with the next publication.
        self.publisher.changed();
        self.publisher.force();
        self.rebase
            .swapped((old, old_leader_trees), &self.stats.commit);
    }

    /// Leader: rebuilds the sealed and speculative trees on the applied tree just swapped in
    /// (see the module comment). Returns the trees they replace, to be freed elsewhere.
    fn rebase_speculative(&mut self) -> Vec<DataTree> {
        let Some(spec) = self.speculative.as_mut() else {
            return Vec::new();
        };
        let mut tree = self.applied.tree().clone();
        let target = spec.last_zxid();
        let payloads: Vec<Arc<[u8]>> = self
            .replica
            .entries_between(tree.last_zxid(), target)
            .map(|e| e.payload.clone())
            .collect();
        let mut payloads = payloads.iter();
        let mut scratch = Vec::new();
        let mut advance = |tree: &mut DataTree, upto: i64| {
            while tree.last_zxid() < upto {
                let payload = payloads
                    .next()
                    .expect("every uncommitted entry is in the replica's log");
                let (header, txn) = decode_record(payload);
                tree.apply(&header, &txn, &mut scratch);
                scratch.clear();
            }
        };
        let mut replaced = Vec::new();
        for batch in self.sealed.iter_mut() {
            // A batch at or below the applied state is dropped unread by apply_committed.
            if batch.last <= tree.last_zxid() {
                continue;
            }
            let Some(sealed) = batch.tree.as_mut() else {
                continue;
            };
            advance(&mut tree, batch.last);
            replaced.push(std::mem::replace(sealed, tree.clone()));
        }
        advance(&mut tree, target);
        let uncommitted = target - self.applied.last_zxid();
        if uncommitted > 0 {
            eprintln!(
                "zoo: leader rebuilt {} sealed tree(s) and its speculative tree over {uncommitted} uncommitted entries on the rebased tree",
                replaced.len()
            );
        }
        replaced.push(spec.replace_tree(tree));
        replaced
    }
}
