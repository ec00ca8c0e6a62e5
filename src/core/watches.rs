//! One shard's watch table (ZooKeeper's `WatchManager` pair for data and child watches, with
//! persistent and persistent-recursive modes). Watches belong to connections, identified by
//! the shard-local connection id; a shard only ever holds watches of its own connections.

use ahash::{AHashMap as HashMap, AHashSet as HashSet};

use crate::core::path;
use crate::jute::records::{EventType, WatcherType};

/// Which table a watch lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WatchKind {
    /// getData/exists: one-shot, fires on create, delete and data change.
    Data,
    /// getChildren: one-shot, fires on delete and child change.
    Child,
    /// addWatch PERSISTENT: every event on the path, until removed.
    Persistent,
    /// addWatch PERSISTENT_RECURSIVE: create/delete/data events on the path and below.
    PersistentRecursive,
}

const KINDS: [WatchKind; 4] = [
    WatchKind::Data,
    WatchKind::Child,
    WatchKind::Persistent,
    WatchKind::PersistentRecursive,
];

/// Path -> connections, with the reverse index so a closed connection is dropped in time
/// proportional to its own watches.
#[derive(Debug, Default)]
struct Registry {
    by_path: HashMap<String, HashSet<u64>>,
    by_connection: HashMap<u64, HashSet<String>>,
}

impl Registry {
    fn add(&mut self, p: &str, connection: u64) {
        self.by_path
            .entry(p.to_owned())
            .or_default()
            .insert(connection);
        self.by_connection
            .entry(connection)
            .or_default()
            .insert(p.to_owned());
    }

    fn remove(&mut self, p: &str, connection: u64) -> bool {
        let Some(set) = self.by_path.get_mut(p) else {
            return false;
        };
        let removed = set.remove(&connection);
        if set.is_empty() {
            self.by_path.remove(p);
        }
        if let Some(paths) = self.by_connection.get_mut(&connection) {
            paths.remove(p);
            if paths.is_empty() {
                self.by_connection.remove(&connection);
            }
        }
        removed
    }

    fn contains(&self, p: &str, connection: u64) -> bool {
        self.by_path.get(p).is_some_and(|s| s.contains(&connection))
    }

    /// Takes every watcher on `p` (one-shot firing).
    fn take(&mut self, p: &str) -> Vec<u64> {
        // An empty map still hashes the key to remove it: every create and delete fires
        // triggers, and most servers watch few paths or none.
        if self.by_path.is_empty() {
            return Vec::new();
        }
        let Some(set) = self.by_path.remove(p) else {
            return Vec::new();
        };
        for connection in &set {
            if let Some(paths) = self.by_connection.get_mut(connection) {
                paths.remove(p);
                if paths.is_empty() {
                    self.by_connection.remove(connection);
                }
            }
        }
        set.into_iter().collect()
    }

    fn peek(&self, p: &str) -> impl Iterator<Item = u64> + '_ {
        (!self.by_path.is_empty())
            .then(|| self.by_path.get(p))
            .flatten()
            .into_iter()
            .flat_map(|s| s.iter().copied())
    }

    fn remove_connection(&mut self, connection: u64) {
        let Some(paths) = self.by_connection.remove(&connection) else {
            return;
        };
        for p in paths {
            if let Some(set) = self.by_path.get_mut(&p) {
                set.remove(&connection);
                if set.is_empty() {
                    self.by_path.remove(&p);
                }
            }
        }
    }

    fn count(&self) -> usize {
        self.by_path.values().map(|s| s.len()).sum()
    }
}

#[derive(Debug, Default)]
pub struct WatchTable {
    data: Registry,
    child: Registry,
    persistent: Registry,
    recursive: Registry,
}

impl WatchTable {
    fn registry(&mut self, kind: WatchKind) -> &mut Registry {
        match kind {
            WatchKind::Data => &mut self.data,
            WatchKind::Child => &mut self.child,
            WatchKind::Persistent => &mut self.persistent,
            WatchKind::PersistentRecursive => &mut self.recursive,
        }
    }

    fn registry_ref(&self, kind: WatchKind) -> &Registry {
        match kind {
            WatchKind::Data => &self.data,
            WatchKind::Child => &self.child,
            WatchKind::Persistent => &self.persistent,
            WatchKind::PersistentRecursive => &self.recursive,
        }
    }

    pub fn add(&mut self, kind: WatchKind, p: &str, connection: u64) {
        self.registry(kind).add(p, connection);
    }

    /// Connections to notify for `event` on `p`, each at most once, in no particular order.
    /// One-shot watches that fire are removed (ZooKeeper's trigger rules; recursive watches
    /// never see NodeChildrenChanged).
    pub fn trigger(&mut self, p: &str, event: EventType) -> Vec<u64> {
        let mut out: Vec<u64> = Vec::new();
        let mut seen: HashSet<u64> = HashSet::new();
        let mut push = |c: u64, out: &mut Vec<u64>| {
            if seen.insert(c) {
                out.push(c);
            }
        };
        match event {
            EventType::NodeCreated | EventType::NodeDataChanged | EventType::NodeDeleted => {
                for c in self.data.take(p) {
                    push(c, &mut out);
                }
                if event == EventType::NodeDeleted {
                    for c in self.child.take(p) {
                        push(c, &mut out);
                    }
                }
                for c in self.persistent.peek(p).collect::<Vec<_>>() {
                    push(c, &mut out);
                }
                if !self.recursive.by_path.is_empty() {
                    let mut candidates: Vec<u64> = self.recursive.peek(p).collect();
                    for ancestor in path::ancestors(p) {
                        candidates.extend(self.recursive.peek(ancestor));
                    }
                    for c in candidates {
                        push(c, &mut out);
                    }
                }
            }
            EventType::NodeChildrenChanged => {
                for c in self.child.take(p) {
                    push(c, &mut out);
                }
                for c in self.persistent.peek(p).collect::<Vec<_>>() {
                    push(c, &mut out);
                }
            }
        }
        out
    }

    /// The watch kinds a checkWatches/removeWatches `type` covers.
    fn kinds_for(watcher_type: WatcherType) -> &'static [WatchKind] {
        match watcher_type {
            WatcherType::Children => &[WatchKind::Child],
            WatcherType::Data => &[WatchKind::Data],
            WatcherType::Any => &KINDS,
            WatcherType::Persistent => &[WatchKind::Persistent],
            WatcherType::PersistentRecursive => &[WatchKind::PersistentRecursive],
        }
    }

    pub fn contains(&self, p: &str, connection: u64, watcher_type: WatcherType) -> bool {
        Self::kinds_for(watcher_type)
            .iter()
            .any(|k| self.registry_ref(*k).contains(p, connection))
    }

    /// Removes the connection's watches of `watcher_type` on `p`; false if there were none.
    pub fn remove(&mut self, p: &str, connection: u64, watcher_type: WatcherType) -> bool {
        let mut removed = false;
        for kind in Self::kinds_for(watcher_type) {
            removed |= self.registry(*kind).remove(p, connection);
        }
        removed
    }

    pub fn remove_connection(&mut self, connection: u64) {
        for kind in KINDS {
            self.registry(kind).remove_connection(connection);
        }
    }

    /// Total number of (path, connection) watch entries.
    pub fn watch_count(&self) -> usize {
        KINDS.iter().map(|k| self.registry_ref(*k).count()).sum()
    }

    /// Paths with at least one watch.
    pub fn watched_paths(&self) -> HashSet<&str> {
        let mut out = HashSet::new();
        for kind in KINDS {
            out.extend(self.registry_ref(kind).by_path.keys().map(String::as_str));
        }
        out
    }

    /// Connection -> watched paths (for `wchc`).
    pub fn by_connection(&self) -> HashMap<u64, Vec<String>> {
        let mut out: HashMap<u64, Vec<String>> = HashMap::new();
        for kind in KINDS {
            for (c, paths) in &self.registry_ref(kind).by_connection {
                out.entry(*c).or_default().extend(paths.iter().cloned());
            }
        }
        for paths in out.values_mut() {
            paths.sort();
            paths.dedup();
        }
        out
    }

    /// Path -> watching connections (for `wchp`).
    pub fn by_path(&self) -> HashMap<String, Vec<u64>> {
        let mut out: HashMap<String, Vec<u64>> = HashMap::new();
        for kind in KINDS {
            for (p, connections) in &self.registry_ref(kind).by_path {
                out.entry(p.clone())
                    .or_default()
                    .extend(connections.iter().copied());
            }
        }
        for connections in out.values_mut() {
            connections.sort();
            connections.dedup();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// R6: a registered watch fires on the next change, once.
    #[test]
    fn data_watch_is_one_shot() {
        let mut t = WatchTable::default();
        t.add(WatchKind::Data, "/a", 1);
        assert_eq!(t.trigger("/a", EventType::NodeDataChanged), vec![1]);
        assert!(t.trigger("/a", EventType::NodeDataChanged).is_empty());
    }

    #[test]
    fn delete_fires_data_and_child_watches_once_per_connection() {
        let mut t = WatchTable::default();
        t.add(WatchKind::Data, "/a", 1);
        t.add(WatchKind::Child, "/a", 1);
        t.add(WatchKind::Child, "/a", 2);
        let mut fired = t.trigger("/a", EventType::NodeDeleted);
        fired.sort();
        assert_eq!(fired, vec![1, 2]);
        assert_eq!(t.watch_count(), 0);
    }

    #[test]
    fn persistent_watch_survives_firing() {
        let mut t = WatchTable::default();
        t.add(WatchKind::Persistent, "/a", 1);
        assert_eq!(t.trigger("/a", EventType::NodeDataChanged), vec![1]);
        assert_eq!(t.trigger("/a", EventType::NodeChildrenChanged), vec![1]);
        assert_eq!(t.trigger("/a", EventType::NodeDeleted), vec![1]);
        assert_eq!(t.watch_count(), 1);
    }

    #[test]
    fn recursive_watch_fires_for_descendants_but_not_child_changes() {
        let mut t = WatchTable::default();
        t.add(WatchKind::PersistentRecursive, "/a", 1);
        assert_eq!(t.trigger("/a/b/c", EventType::NodeCreated), vec![1]);
        assert_eq!(t.trigger("/a", EventType::NodeDataChanged), vec![1]);
        assert!(t.trigger("/a", EventType::NodeChildrenChanged).is_empty());
        assert!(t.trigger("/ab", EventType::NodeCreated).is_empty());
    }

    #[test]
    fn remove_reports_whether_a_watch_existed() {
        let mut t = WatchTable::default();
        t.add(WatchKind::Child, "/a", 1);
        assert!(!t.remove("/a", 1, WatcherType::Data));
        assert!(t.contains("/a", 1, WatcherType::Any));
        assert!(t.remove("/a", 1, WatcherType::Any));
        assert!(!t.contains("/a", 1, WatcherType::Children));
    }

    #[test]
    fn closed_connection_loses_all_its_watches() {
        let mut t = WatchTable::default();
        t.add(WatchKind::Data, "/a", 1);
        t.add(WatchKind::Child, "/b", 1);
        t.add(WatchKind::PersistentRecursive, "/", 1);
        t.add(WatchKind::Data, "/a", 2);
        t.remove_connection(1);
        assert_eq!(t.watch_count(), 1);
        assert_eq!(t.trigger("/a", EventType::NodeDataChanged), vec![2]);
    }
}
