//! The data tree: znodes by path, with ZooKeeper's Stat bookkeeping (`DataTree.java`,
//! `DataNode.java`).
//!
//! The tree is a persistent (structurally shared) map, so `clone()` is O(1). The commit path
//! owns the one mutable tree; after each batch it hands immutable clones to every shard, which
//! serve reads from them without locks (ARCHITECTURE.md, rule R4). Memory is shared between the
//! clones: only the nodes changed since the previous clone are copied.
//!
//! After a restart the tree is a [`FrozenTree`] (the snapshot file, served in place) under an
//! overlay: the map holds only nodes created or changed since the snapshot, and tombstones
//! (`None`) for frozen nodes deleted since. A frozen node is decoded when it is read, and
//! copied into the overlay the first time it changes.
//!
//! Mutation happens only through [`DataTree::apply`], which applies a [`Txn`] already
//! validated by `prep`. A Txn that does not fit the tree is a broken invariant and asserts.

use std::sync::Arc;

use crate::core::children::Children;
use crate::core::frozen::FrozenTree;
use crate::core::path;
use crate::core::path_map::PathMap;
use crate::core::txn::{Txn, TxnHeader};
use crate::jute::records::{Acl, EventType, Stat};

/// Stored `ephemeralOwner` of a container node.
pub const CONTAINER_OWNER: i64 = i64::MIN;
/// Top byte of the stored `ephemeralOwner` of a TTL node; the low 40 bits are the TTL.
const TTL_OWNER_MARK: i64 = 0xFF00_0000_0000_0000u64 as i64;
const TTL_OWNER_MASK: i64 = 0xFFFF_0000_0000_0000u64 as i64;
/// Largest TTL the stored representation can hold (40 bits of milliseconds).
pub const TTL_MAX_MS: i64 = 0xFF_FFFF_FFFF;

pub fn ttl_owner(ttl_ms: i64) -> i64 {
    assert!(ttl_ms > 0 && ttl_ms <= TTL_MAX_MS);
    TTL_OWNER_MARK | ttl_ms
}

/// The kind of node a stored ephemeralOwner stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    Persistent,
    Ephemeral(i64),
    Container,
    Ttl(i64),
}

pub fn node_kind(owner: i64) -> NodeKind {
    if owner == 0 {
        NodeKind::Persistent
    } else if owner == CONTAINER_OWNER {
        NodeKind::Container
    } else if owner & TTL_OWNER_MASK == TTL_OWNER_MARK {
        NodeKind::Ttl(owner & TTL_MAX_MS)
    } else {
        NodeKind::Ephemeral(owner)
    }
}

pub type Path = Arc<str>;

/// Freeing the overlay (the old tree after each snapshot) visits every changed node: a node
/// and its data are started early (`path_map::DropHint`).
impl crate::core::path_map::DropHint for Option<Arc<Node>> {
    fn prefetch_for_drop(&self) {
        if let Some(node) = self {
            crate::core::prefetch::prefetch(Arc::as_ptr(node));
        }
    }

    fn prefetch_deeper(&self) {
        if let Some(data) = self.as_ref().and_then(|node| node.data.as_ref()) {
            crate::core::prefetch::prefetch(Arc::as_ptr(data));
        }
    }
}

#[derive(Debug, Clone)]
pub struct Node {
    /// `None` for a node created or set with null data.
    pub data: Option<Arc<[u8]>>,
    pub acl: Arc<Vec<Acl>>,
    pub czxid: i64,
    pub mzxid: i64,
    pub ctime: i64,
    pub mtime: i64,
    pub version: i32,
    /// Stored cversion: the number of creates under this node (see `stat`).
    pub cversion: i32,
    pub aversion: i32,
    /// Stored owner: session id, CONTAINER_OWNER, a TTL mark, or 0.
    pub ephemeral_owner: i64,
    pub pzxid: i64,
    pub children: Children,
}

impl Node {
    /// The client-visible Stat (`DataNode.copyStat`): cversion counts creates and deletes,
    /// and containers and TTL nodes show ephemeralOwner 0.
    pub fn stat(&self) -> Stat {
        let num_children = self.children.len() as i32;
        Stat {
            czxid: self.czxid,
            mzxid: self.mzxid,
            ctime: self.ctime,
            mtime: self.mtime,
            version: self.version,
            cversion: self.cversion.wrapping_mul(2).wrapping_sub(num_children),
            aversion: self.aversion,
            ephemeral_owner: match node_kind(self.ephemeral_owner) {
                NodeKind::Ephemeral(session) => session,
                _ => 0,
            },
            data_length: self.data_len() as i32,
            num_children,
            pzxid: self.pzxid,
        }
    }

    pub fn data_len(&self) -> usize {
        self.data.as_ref().map_or(0, |d| d.len())
    }

    pub fn kind(&self) -> NodeKind {
        node_kind(self.ephemeral_owner)
    }
}

/// A watch trigger produced by applying a txn: the path, the event and the ACL that decides
/// who may see it (the node's own ACL, or the parent's for NodeChildrenChanged).
#[derive(Debug, Clone)]
pub struct Trigger {
    pub path: Path,
    pub event: EventType,
    pub acl: Arc<Vec<Acl>>,
}

/// The node map's hasher: aHash with per-process random keys. Paths come from clients, so the
/// hash must be keyed (no flooding one bucket with chosen paths), and every lookup and insert
/// hashes a whole path, so it must be fast (SipHash, the default, cost several times more).
type PathHasher = ahash::RandomState;

/// A node as a lookup returns it: shared from the overlay, or just decoded from the frozen
/// tree.
pub enum NodeRef<'a> {
    Shared(&'a Arc<Node>),
    Decoded(Arc<Node>),
}

impl std::ops::Deref for NodeRef<'_> {
    type Target = Node;
    fn deref(&self) -> &Node {
        match self {
            NodeRef::Shared(n) => n,
            NodeRef::Decoded(n) => n,
        }
    }
}

impl NodeRef<'_> {
    pub fn into_arc(self) -> Arc<Node> {
        match self {
            NodeRef::Shared(n) => n.clone(),
            NodeRef::Decoded(n) => n,
        }
    }
}

#[derive(Debug, Clone)]
pub struct DataTree {
    /// The overlay: nodes changed since `frozen` was written; `None` marks a frozen node
    /// deleted since. Without a frozen tree, simply every node.
    nodes: PathMap<Option<Arc<Node>>, PathHasher>,
    frozen: Option<Arc<FrozenTree>>,
    node_count: usize,
    /// Session id -> paths of its ephemeral nodes.
    ephemerals: im::HashMap<i64, im::OrdSet<Path>>,
    containers: im::OrdSet<Path>,
    ttls: im::OrdSet<Path>,
    /// Highest zxid applied.
    last_zxid: i64,
    /// Sum of path and data bytes, ZooKeeper's `approximateDataSize`.
    data_bytes: u64,
}

impl Default for DataTree {
    fn default() -> Self {
        Self::new()
    }
}

impl DataTree {
    /// A tree holding `/`, `/zookeeper`, `/zookeeper/quota` and `/zookeeper/config`.
    pub fn new() -> DataTree {
        let mut tree = DataTree {
            nodes: PathMap::with_hasher(PathHasher::new()),
            frozen: None,
            node_count: 1,
            ephemerals: im::HashMap::new(),
            containers: im::OrdSet::new(),
            ttls: im::OrdSet::new(),
            last_zxid: 0,
            data_bytes: 0,
        };
        let open = crate::jute::records::open_acl_unsafe_shared();
        let root = Self::fresh_node(None, open.clone(), 0, 0, 0);
        tree.nodes.insert(Arc::from("/"), Some(Arc::new(root)));
        tree.insert_system_node("/zookeeper", open.clone());
        tree.insert_system_node("/zookeeper/quota", open);
        let read = crate::jute::records::read_acl_unsafe_shared();
        tree.insert_system_node("/zookeeper/config", read);
        tree
    }

    fn fresh_node(
        data: Option<Arc<[u8]>>,
        acl: Arc<Vec<Acl>>,
        zxid: i64,
        time: i64,
        owner: i64,
    ) -> Node {
        Node {
            data,
            acl,
            czxid: zxid,
            mzxid: zxid,
            ctime: time,
            mtime: time,
            version: 0,
            cversion: 0,
            aversion: 0,
            ephemeral_owner: owner,
            pzxid: zxid,
            children: Children::Empty,
        }
    }

    /// System nodes are created outside any txn, as ZooKeeper does, so they do not bump the
    /// parent's cversion.
    fn insert_system_node(&mut self, p: &str, acl: Arc<Vec<Acl>>) {
        let node = Self::fresh_node(None, acl, 0, 0, 0);
        let key: Path = Arc::from(p);
        self.node_mut(path::parent(p)).children.insert(key.clone());
        self.data_bytes += p.len() as u64;
        self.node_count += 1;
        self.nodes.insert(key, Some(Arc::new(node)));
    }

    /// The tree a snapshot holds, served in place: only the ephemeral, container and TTL
    /// indexes are built now (from the file's special list).
    pub fn from_frozen(frozen: Arc<FrozenTree>, zxid: i64) -> DataTree {
        let mut tree = DataTree {
            nodes: PathMap::with_hasher(PathHasher::new()),
            frozen: None,
            node_count: frozen.node_count() as usize,
            ephemerals: im::HashMap::new(),
            containers: im::OrdSet::new(),
            ttls: im::OrdSet::new(),
            last_zxid: zxid,
            data_bytes: frozen.data_bytes(),
        };
        for (p, owner) in frozen.special_nodes() {
            tree.index_kind(&Arc::from(p), node_kind(owner));
        }
        tree.frozen = Some(frozen);
        tree
    }

    pub fn get(&self, p: &str) -> Option<NodeRef<'_>> {
        match self.nodes.get(p) {
            Some(Some(node)) => Some(NodeRef::Shared(node)),
            Some(None) => None,
            None => self
                .frozen
                .as_ref()?
                .get(p)
                .map(|n| NodeRef::Decoded(Arc::new(n))),
        }
    }

    pub fn contains(&self, p: &str) -> bool {
        match self.nodes.get(p) {
            Some(slot) => slot.is_some(),
            None => self.frozen.as_ref().is_some_and(|f| f.contains(p)),
        }
    }

    /// The node at `p` for a change: copied into the overlay first if it is frozen or shared
    /// with a published clone. Asserts that it exists.
    fn node_mut(&mut self, p: &str) -> &mut Node {
        self.node_entry_mut(p).1
    }

    /// As [`DataTree::node_mut`], with the overlay's key for `p` (shared, not copied).
    fn node_entry_mut(&mut self, p: &str) -> (&Path, &mut Node) {
        if !self.nodes.contains_key(p) {
            let decoded = self
                .frozen
                .as_ref()
                .and_then(|f| f.get(p))
                .expect("changed node exists");
            self.nodes.insert(Arc::from(p), Some(Arc::new(decoded)));
        }
        let (key, slot) = self.nodes.get_entry_mut(p).expect("just ensured");
        let node = Arc::make_mut(slot.as_mut().expect("changed node exists (not deleted)"));
        (key, node)
    }

    /// Removes the node at `p` and returns it; frozen paths leave a tombstone.
    fn take(&mut self, p: &str) -> Arc<Node> {
        let in_frozen = self.frozen.as_ref().is_some_and(|f| f.contains(p));
        let taken = if in_frozen {
            match self.nodes.insert(Arc::from(p), None) {
                Some(previous) => previous,
                None => self.frozen.as_ref().and_then(|f| f.get(p)).map(Arc::new),
            }
        } else {
            self.nodes.remove(p).flatten()
        };
        self.node_count -= 1;
        taken.expect("delete target exists")
    }

    pub fn node_count(&self) -> usize {
        self.node_count
    }

    /// Asserts that `other` agrees with this tree on the figures that are cheap to compare
    /// (zxid, node count, data size, ephemeral count): for a tree rebuilt from a snapshot plus
    /// the log after it, whose content equals this one by construction.
    pub fn assert_same_figures(&self, other: &DataTree) {
        assert_eq!(self.last_zxid, other.last_zxid, "rebuilt tree's zxid");
        assert_eq!(
            self.node_count, other.node_count,
            "rebuilt tree's node count"
        );
        assert_eq!(
            self.data_bytes, other.data_bytes,
            "rebuilt tree's data size"
        );
        assert_eq!(
            self.ephemeral_count(),
            other.ephemeral_count(),
            "rebuilt tree's ephemeral count"
        );
    }

    /// The overlay's entry for `p`: a changed node, a tombstone (`Some(None)`), or `None` if
    /// the path is not in the overlay (frozen as the file has it, or absent).
    pub fn overlay_slot(&self, p: &str) -> Option<Option<&Arc<Node>>> {
        self.nodes.get(p).map(Option::as_ref)
    }

    /// The paths the overlay holds (changed, created or deleted since the frozen tree).
    pub fn overlay_paths(&self) -> impl Iterator<Item = &Path> {
        self.nodes.keys()
    }

    /// The overlay's entries: each path with its node, or `None` for a deletion.
    pub fn overlay_entries(&self) -> impl Iterator<Item = (&Path, Option<&Arc<Node>>)> {
        self.nodes.iter().map(|(k, v)| (k, v.as_ref()))
    }

    pub fn frozen_tree(&self) -> Option<&Arc<FrozenTree>> {
        self.frozen.as_ref()
    }

    /// Drops the frozen snapshot's pages from the process (after a full walk, such as
    /// writing the next snapshot, read them all); later reads fault them back in.
    pub fn release_frozen_pages(&self) {
        if let Some(frozen) = &self.frozen {
            frozen.release_resident_pages();
        }
    }

    /// Nodes held in memory (the overlay, tombstones included) rather than in a frozen
    /// snapshot.
    pub fn overlay_len(&self) -> usize {
        self.nodes.len()
    }

    pub fn last_zxid(&self) -> i64 {
        self.last_zxid
    }

    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    /// Paths of the ephemerals owned by `session`, sorted.
    pub fn ephemerals_of(&self, session: i64) -> Vec<Path> {
        self.ephemerals
            .get(&session)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Every session that owns an ephemeral, with its count (for `dump`/`mntr`).
    pub fn ephemeral_owners(&self) -> Vec<(i64, Vec<Path>)> {
        let mut out: Vec<(i64, Vec<Path>)> = self
            .ephemerals
            .iter()
            .map(|(s, set)| (*s, set.iter().cloned().collect()))
            .collect();
        out.sort_by_key(|(s, _)| *s);
        out
    }

    pub fn ephemeral_count(&self) -> usize {
        self.ephemerals.values().map(|s| s.len()).sum()
    }

    pub fn containers(&self) -> impl Iterator<Item = &Path> {
        self.containers.iter()
    }

    pub fn ttl_nodes(&self) -> impl Iterator<Item = &Path> {
        self.ttls.iter()
    }

    /// Number of descendants of `p` (not counting `p`).
    pub fn descendant_count(&self, p: &str) -> usize {
        let Some(node) = self.get(p) else {
            return 0;
        };
        let mut count = 0;
        let mut stack: Vec<String> = node.children.iter().map(str::to_owned).collect();
        while let Some(child) = stack.pop() {
            count += 1;
            if let Some(n) = self.get(&child) {
                stack.extend(n.children.iter().map(str::to_owned));
            }
        }
        count
    }

    /// Every path in the tree in pre-order from `p` (for `dump`, `snapshot inspect` and tests),
    /// without recursion, so a tree of any depth is walked in constant stack.
    pub fn walk(&self, p: &str, visit: &mut dyn FnMut(&str, &Node)) {
        let mut stack: Vec<String> = vec![p.to_owned()];
        while let Some(at) = stack.pop() {
            let Some(node) = self.get(&at) else {
                continue;
            };
            visit(&at, &node);
            let first_child = stack.len();
            stack.extend(node.children.iter().map(str::to_owned));
            stack[first_child..].reverse();
        }
    }

    /// Applies a validated txn. Returns the watch triggers in ZooKeeper's firing order.
    pub fn apply(&mut self, header: &TxnHeader, txn: &Txn, triggers: &mut Vec<Trigger>) {
        assert!(header.zxid > self.last_zxid, "zxids applied in order");
        self.apply_inner(header, txn, triggers);
        self.last_zxid = header.zxid;
    }

    /// Applies one op of a multi; all ops share the header's zxid, which `finish_multi` then
    /// records as applied.
    pub fn apply_op(&mut self, header: &TxnHeader, txn: &Txn, triggers: &mut Vec<Trigger>) {
        assert!(header.zxid > self.last_zxid, "zxids applied in order");
        self.apply_inner(header, txn, triggers);
    }

    pub fn finish_multi(&mut self, zxid: i64) {
        assert!(zxid > self.last_zxid, "zxids applied in order");
        self.last_zxid = zxid;
    }

    fn apply_inner(&mut self, header: &TxnHeader, txn: &Txn, triggers: &mut Vec<Trigger>) {
        match txn {
            Txn::Create {
                path: p,
                data,
                acl,
                ephemeral_owner,
                parent_cversion,
            } => self.apply_create(
                header,
                p,
                data,
                acl,
                *ephemeral_owner,
                *parent_cversion,
                triggers,
            ),
            Txn::Delete { path: p } => self.apply_delete(header.zxid, p, triggers),
            Txn::SetData {
                path: p,
                data,
                version,
            } => {
                let new_len = data.as_ref().map_or(0, |d| d.len());
                let mut data_bytes = self.data_bytes;
                let node = self.node_mut(p);
                data_bytes = data_bytes - node.data_len() as u64 + new_len as u64;
                node.data = data.clone();
                node.version = *version;
                node.mzxid = header.zxid;
                node.mtime = header.time_ms;
                let acl = node.acl.clone();
                self.data_bytes = data_bytes;
                triggers.push(Trigger {
                    path: p.clone(),
                    event: EventType::NodeDataChanged,
                    acl,
                });
            }
            Txn::SetAcl {
                path: p,
                acl,
                version,
            } => {
                let node = self.node_mut(p);
                node.acl = acl.clone();
                node.aversion = *version;
            }
            Txn::Check => {}
            Txn::CreateSession { .. } => {}
            Txn::CloseSession { session_id } => {
                if let Some(paths) = self.ephemerals.get(session_id).cloned() {
                    for p in paths.iter() {
                        self.apply_delete(header.zxid, p, triggers);
                    }
                }
                self.ephemerals.remove(session_id);
            }
            Txn::Multi(txns) => {
                for t in txns {
                    self.apply_inner(header, t, triggers);
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_create(
        &mut self,
        header: &TxnHeader,
        key: &Path,
        data: &Option<Arc<[u8]>>,
        acl: &Arc<Vec<Acl>>,
        owner: i64,
        parent_cversion: i32,
        triggers: &mut Vec<Trigger>,
    ) {
        let p: &str = key;
        let key = key.clone();
        let parent_path = path::parent(p);
        let (parent_key, parent) = self.node_entry_mut(parent_path);
        let parent_key = parent_key.clone();
        parent.children.insert(key.clone());
        parent.cversion = parent_cversion;
        parent.pzxid = header.zxid;
        let parent_acl = parent.acl.clone();
        let data_len = data.as_ref().map_or(0, |d| d.len());
        let node = Self::fresh_node(
            data.clone(),
            acl.clone(),
            header.zxid,
            header.time_ms,
            owner,
        );
        let node_acl = node.acl.clone();
        // The target is new: the overlay held nothing live there. (That the snapshot file
        // does not hold it either is checked in debug builds only: it costs a probe of the
        // file's index on every create, and prep has checked it before the txn existed.)
        let replaced = self.nodes.insert(key.clone(), Some(Arc::new(node)));
        assert!(
            matches!(replaced, None | Some(None)),
            "create target is new"
        );
        debug_assert!(
            replaced.is_some() || !self.frozen.as_ref().is_some_and(|f| f.contains(p)),
            "create target is new"
        );
        self.node_count += 1;
        self.data_bytes += (p.len() + data_len) as u64;
        self.index_kind(&key, node_kind(owner));
        triggers.push(Trigger {
            path: key,
            event: EventType::NodeCreated,
            acl: node_acl,
        });
        triggers.push(Trigger {
            path: parent_key,
            event: EventType::NodeChildrenChanged,
            acl: parent_acl,
        });
    }

    /// Records a new node in the index of its kind (ephemerals by owner, containers, TTLs).
    fn index_kind(&mut self, key: &Path, kind: NodeKind) {
        match kind {
            NodeKind::Ephemeral(session) => {
                self.ephemerals
                    .entry(session)
                    .or_default()
                    .insert(key.clone());
            }
            NodeKind::Container => {
                self.containers.insert(key.clone());
            }
            NodeKind::Ttl(_) => {
                self.ttls.insert(key.clone());
            }
            NodeKind::Persistent => {}
        }
    }

    fn apply_delete(&mut self, zxid: i64, p: &str, triggers: &mut Vec<Trigger>) {
        let node = self.take(p);
        assert!(node.children.is_empty(), "deleted node has no children");
        self.data_bytes -= (p.len() + node.data_len()) as u64;
        let parent_path = path::parent(p);
        let (parent_key, parent) = self.node_entry_mut(parent_path);
        let parent_key = parent_key.clone();
        parent.children.remove(p);
        if zxid > parent.pzxid {
            parent.pzxid = zxid;
        }
        let parent_acl = parent.acl.clone();
        match node.kind() {
            NodeKind::Ephemeral(session) => {
                if let Some(set) = self.ephemerals.get_mut(&session) {
                    set.remove(p);
                    if set.is_empty() {
                        self.ephemerals.remove(&session);
                    }
                }
            }
            NodeKind::Container => {
                self.containers.remove(p);
            }
            NodeKind::Ttl(_) => {
                self.ttls.remove(p);
            }
            NodeKind::Persistent => {}
        }
        triggers.push(Trigger {
            path: Arc::from(p),
            event: EventType::NodeDeleted,
            acl: node.acl.clone(),
        });
        triggers.push(Trigger {
            path: parent_key,
            event: EventType::NodeChildrenChanged,
            acl: parent_acl,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::acl::open_acl_unsafe;

    fn header(zxid: i64) -> TxnHeader {
        TxnHeader {
            session_id: 1,
            xid: 1,
            zxid,
            time_ms: 1000 + zxid,
        }
    }

    fn create(tree: &mut DataTree, zxid: i64, p: &str, owner: i64) {
        let parent_cversion = tree.get(path::parent(p)).unwrap().cversion + 1;
        let txn = Txn::Create {
            path: p.into(),
            data: Some(b"d".to_vec().into()),
            acl: open_acl_unsafe().into(),
            ephemeral_owner: owner,
            parent_cversion,
        };
        tree.apply(&header(zxid), &txn, &mut Vec::new());
    }

    #[test]
    fn new_tree_has_the_system_nodes() {
        let tree = DataTree::new();
        for p in ["/", "/zookeeper", "/zookeeper/quota", "/zookeeper/config"] {
            assert!(tree.contains(p), "{p}");
        }
        assert_eq!(tree.get("/zookeeper").unwrap().stat().num_children, 2);
    }

    #[test]
    fn client_cversion_counts_creates_and_deletes() {
        let mut tree = DataTree::new();
        create(&mut tree, 1, "/a", 0);
        create(&mut tree, 2, "/a/x", 0);
        create(&mut tree, 3, "/a/y", 0);
        tree.apply(
            &header(4),
            &Txn::Delete {
                path: "/a/x".into(),
            },
            &mut Vec::new(),
        );
        let stat = tree.get("/a").unwrap().stat();
        assert_eq!(stat.cversion, 3);
        assert_eq!(stat.num_children, 1);
        assert_eq!(stat.pzxid, 4);
        // Stored cversion (used for sequential names) counts creates only.
        assert_eq!(tree.get("/a").unwrap().cversion, 2);
    }

    #[test]
    fn containers_and_ttl_nodes_show_owner_zero() {
        let mut tree = DataTree::new();
        create(&mut tree, 1, "/c", CONTAINER_OWNER);
        create(&mut tree, 2, "/t", ttl_owner(5000));
        create(&mut tree, 3, "/e", 77);
        assert_eq!(tree.get("/c").unwrap().stat().ephemeral_owner, 0);
        assert_eq!(tree.get("/t").unwrap().stat().ephemeral_owner, 0);
        assert_eq!(tree.get("/e").unwrap().stat().ephemeral_owner, 77);
        assert_eq!(tree.get("/t").unwrap().kind(), NodeKind::Ttl(5000));
        assert_eq!(tree.containers().count(), 1);
        assert_eq!(tree.ttl_nodes().count(), 1);
    }

    #[test]
    fn close_session_removes_its_ephemerals_with_triggers() {
        let mut tree = DataTree::new();
        create(&mut tree, 1, "/e1", 9);
        create(&mut tree, 2, "/e2", 9);
        create(&mut tree, 3, "/other", 10);
        let mut triggers = Vec::new();
        tree.apply(
            &header(4),
            &Txn::CloseSession { session_id: 9 },
            &mut triggers,
        );
        assert!(!tree.contains("/e1") && !tree.contains("/e2") && tree.contains("/other"));
        assert!(tree.ephemerals_of(9).is_empty());
        assert_eq!(
            triggers
                .iter()
                .filter(|t| t.event == EventType::NodeDeleted)
                .count(),
            2
        );
    }

    /// R4/R5: a published clone never changes, so readers see whole batches only.
    #[test]
    fn clones_are_isolated_snapshots() {
        let mut tree = DataTree::new();
        create(&mut tree, 1, "/a", 0);
        let snapshot = tree.clone();
        create(&mut tree, 2, "/b", 0);
        assert!(!snapshot.contains("/b"));
        assert!(tree.contains("/b"));
        assert_eq!(snapshot.last_zxid(), 1);
    }

    #[test]
    fn walk_visits_a_deep_chain_in_pre_order_without_recursion() {
        let mut tree = DataTree::new();
        let mut p = String::new();
        for zxid in 1..=20_000i64 {
            p.push_str("/d");
            create(&mut tree, zxid, &p, 0);
        }
        create(&mut tree, 20_001, "/e", 0);
        let mut seen = Vec::new();
        tree.walk("/", &mut |p, _| seen.push(p.len()));
        assert_eq!(seen.len(), tree.node_count());
        // "/" first, then the chain in depth order, then /e, then /zookeeper and its children.
        assert_eq!(seen[..3], [1, 2, 4]);
        assert_eq!(seen[20_000], 40_000);
        assert_eq!(seen[20_001], 2);
    }

    #[test]
    fn descendant_count_is_recursive() {
        let mut tree = DataTree::new();
        create(&mut tree, 1, "/a", 0);
        create(&mut tree, 2, "/a/b", 0);
        create(&mut tree, 3, "/a/b/c", 0);
        assert_eq!(tree.descendant_count("/a"), 2);
        assert_eq!(tree.descendant_count("/"), 6);
    }
}
