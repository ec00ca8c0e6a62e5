//! A tree frozen in a snapshot's bytes (docs/FORMAT.md, "Snapshots", format 3): nodes are
//! found through the file's path index and decoded only when they are read or changed, so a
//! restart does not rebuild the tree node by node.
//!
//! [`FrozenTree::check`] checks the whole structure once (no allocation per node); after that
//! a lookup or decode cannot fail on any input that passed, so it asserts instead of
//! returning errors. [`FrozenTree::map`] checks only what start-up reads first; start-up
//! runs the full check in the background on a file whose checksum matched. The bytes are any
//! immutable buffer: a read-only file mapping in the server, a `Vec<u8>` in tests and the
//! simulation. This module does no I/O.

use std::hash::Hasher;
use std::sync::Arc;

use siphasher::sip::SipHasher13;

use crate::core::children::{ChildSource, Children};
use crate::core::path;
use crate::core::prefetch::prefetch;
use crate::core::tree::{Node, NodeKind, node_kind};
use crate::jute::Writer;

/// Bytes of the trailer that ends the body.
pub const TRAILER_BYTES: usize = 64;
/// Bytes of one stored session.
pub const SESSION_RECORD_BYTES: usize = 28;
/// Records start at multiples of this.
pub const RECORD_ALIGN: usize = 8;
/// Fixed-size fields of a record between the ACL and the child count.
const STAT_BYTES: usize = 8 * 4 + 4 * 3 + 8 * 2;
/// Longest run of occupied index slots accepted. The writer's load factor is below 2/3 and
/// its hash keys are random, so runs stay in the low hundreds even for 10^8 nodes (a run of
/// k has probability about e^(-0.07k)); a longer one means a crafted file that would make
/// every lookup slow.
const INDEX_RUN_MAX: usize = 4096;
/// Records whose index entries are looked up together when a file is checked.
const INDEX_CHECK_BATCH: usize = 64;
/// How many children ahead the snapshot writer starts loading an in-memory child's node (and
/// half as many, its data).
const WALK_PREFETCH_DISTANCE: usize = 16;
/// How many children ahead the structure check starts loading a child's path.
const CHILD_PREFETCH_DISTANCE: usize = 8;

/// Largest path, data or ACL string accepted inside a snapshot.
pub const FIELD_BYTES_MAX: usize = 64 * 1024 * 1024;

/// An immutable byte buffer the frozen tree reads from.
pub trait FrozenBytes: Send + Sync {
    fn bytes(&self) -> &[u8];
    /// Lets the memory behind the bytes go until they are read again (a file mapping drops
    /// its pages from the process; they stay in the page cache).
    fn release(&self) {}
}

impl FrozenBytes for Vec<u8> {
    fn bytes(&self) -> &[u8] {
        self
    }
}

impl FrozenBytes for memmap2::Mmap {
    fn bytes(&self) -> &[u8] {
        self
    }
    fn release(&self) {
        // SAFETY: a read-only mapping of an immutable file: dropped pages are read back from
        // the file, unchanged, on the next access. Failure only means the pages stay.
        let _ = unsafe { self.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
    }
}

/// Where a check failed: byte offset in the file and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corrupt {
    pub offset: u64,
    pub reason: String,
}

fn corrupt<T>(offset: usize, reason: impl Into<String>) -> Result<T, Corrupt> {
    Err(Corrupt {
        offset: offset as u64,
        reason: reason.into(),
    })
}

/// The index hash of a path under a file's keys.
pub fn path_hash(keys: (u64, u64), p: &[u8]) -> u64 {
    let mut h = SipHasher13::new_with_keys(keys.0, keys.1);
    h.write(p);
    h.finish()
}

/// Low bits of an index entry: the record offset (so a snapshot is below 1 TiB).
pub const OFFSET_BITS: u32 = 40;
const OFFSET_MASK: u64 = (1 << OFFSET_BITS) - 1;

/// An index entry: the top 24 bits of the path's hash over the record offset, so a probe
/// reads a record (another page) only when the tags match.
fn index_entry(hash: u64, at: u64) -> u64 {
    debug_assert!(at <= OFFSET_MASK);
    (hash & !OFFSET_MASK) | at
}

/// Index slots for `nodes` records: the smallest power of two above 1.5 × nodes.
pub fn index_slots(nodes: u64) -> u64 {
    (nodes + nodes / 2 + 1).next_power_of_two()
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// The fields of a record, as offsets into the file (bounds already checked).
#[derive(Debug, Clone, Copy)]
struct RecordLayout {
    path: (usize, usize),
    /// None: null data.
    data: Option<(usize, usize)>,
    acl_at: usize,
    stat_at: usize,
    child_count: usize,
    children_at: usize,
    /// Where the next record may start.
    end: usize,
}

/// Bounds-checked parse of the record at `at` within `limit`; checks the ACL strings are UTF-8.
fn parse_record(b: &[u8], at: usize, limit: usize) -> Result<RecordLayout, Corrupt> {
    let Some(len) = u32_at(b, at) else {
        return corrupt(at, "record header past the end");
    };
    let start = at + 4;
    let stop = start
        .checked_add(len as usize)
        .filter(|&s| s <= limit)
        .map_or_else(|| corrupt(at, "record longer than the node section"), Ok)?;
    let mut pos = start;
    let take = |pos: &mut usize, n: usize, what: &str| -> Result<(usize, usize), Corrupt> {
        if stop - *pos < n {
            return corrupt(*pos, format!("{what} past the end of its record"));
        }
        let span = (*pos, *pos + n);
        *pos += n;
        Ok(span)
    };
    let len_field = |pos: &mut usize, what: &str| -> Result<i32, Corrupt> {
        let (s, _) = take(pos, 4, what)?;
        Ok(i32::from_be_bytes(b[s..s + 4].try_into().expect("4 bytes")))
    };
    let path_len = len_field(&mut pos, "path length")?;
    if path_len < 0 {
        return corrupt(pos - 4, "negative path length");
    }
    if path_len as usize > FIELD_BYTES_MAX {
        return corrupt(pos - 4, "path longer than the field limit");
    }
    let path = take(&mut pos, path_len as usize, "path")?;
    let data_len = len_field(&mut pos, "data length")?;
    let data = match data_len {
        -1 => None,
        n if n < 0 || n as usize > FIELD_BYTES_MAX => {
            return corrupt(pos - 4, "data length out of range");
        }
        n => Some(take(&mut pos, n as usize, "data")?),
    };
    let acl_at = pos;
    let acl_count = len_field(&mut pos, "ACL count")?;
    if acl_count < 0 {
        return corrupt(pos - 4, "negative ACL count");
    }
    for _ in 0..acl_count {
        take(&mut pos, 4, "ACL perms")?;
        for what in ["ACL scheme", "ACL id"] {
            let n = len_field(&mut pos, what)?;
            if n < 0 || n as usize > FIELD_BYTES_MAX {
                return corrupt(pos - 4, format!("{what} length out of range"));
            }
            let (s, e) = take(&mut pos, n as usize, what)?;
            if std::str::from_utf8(&b[s..e]).is_err() {
                return corrupt(s, format!("{what} is not UTF-8"));
            }
        }
    }
    let (stat_at, _) = take(&mut pos, STAT_BYTES, "stat")?;
    let child_count = len_field(&mut pos, "child count")? as u32 as usize;
    let Some(list_bytes) = child_count.checked_mul(8) else {
        return corrupt(pos, "child count overflows");
    };
    let (children_at, _) = take(&mut pos, list_bytes, "child offsets")?;
    if pos != stop {
        return corrupt(pos, "bytes after the last field of a record");
    }
    Ok(RecordLayout {
        path,
        data,
        acl_at,
        stat_at,
        child_count,
        children_at,
        end: stop,
    })
}

/// The path bytes of the record said to start at `at`, if they lie inside the file.
fn stored_path(b: &[u8], at: usize) -> Option<&[u8]> {
    let len = u32_at(b, at.checked_add(4)?)? as usize;
    b.get(at + 8..(at + 8).checked_add(len)?)
}

impl RecordLayout {
    /// The stored `ephemeral_owner` (session, container or TTL mark), 44 bytes into the stat.
    fn owner(&self, b: &[u8]) -> i64 {
        u64_at(b, self.stat_at + 44).expect("stat checked") as i64
    }
}

fn align_up(at: usize) -> usize {
    at.div_ceil(RECORD_ALIGN) * RECORD_ALIGN
}

/// A checked snapshot body, served in place.
pub struct FrozenTree {
    source: Box<dyn FrozenBytes>,
    keys: (u64, u64),
    nodes_at: usize,
    nodes_end: usize,
    root_at: usize,
    index_at: usize,
    slot_mask: usize,
    node_count: u64,
    /// Data bytes of every node plus path bytes of every node but the root
    /// (`approximateDataSize`, as the live tree counts it): the trailer's figure, which
    /// [`FrozenTree::check`] confirms.
    data_bytes: u64,
    specials: Vec<usize>,
    /// Built by [`FrozenTree::check`]; see [`PathFilter`]. Until then every lookup probes
    /// the index.
    absent: std::sync::OnceLock<PathFilter>,
}

/// A Bloom filter over the path hashes of a file's nodes, in memory. Most lookups of a path
/// the file does not hold (every create asks whether its path exists) end here, without
/// reading the index: the index is a large table probed at random, so each such lookup would
/// otherwise fault one of its pages back in (after `release_resident_pages`) and keep it
/// resident. At `FILTER_BITS_PER_NODE` bits per node and four bits set in one 64-bit word per
/// path, a few percent of absent paths get through to the index.
struct PathFilter {
    words: Vec<u64>,
}

/// At least this many filter bits per node (the word count is rounded up to a power of two).
const FILTER_BITS_PER_NODE: usize = 8;

impl PathFilter {
    fn for_nodes(nodes: u64) -> PathFilter {
        let words = (nodes as usize).max(1).saturating_mul(FILTER_BITS_PER_NODE) / 64;
        PathFilter {
            words: vec![0; words.max(1).next_power_of_two()],
        }
    }

    /// The word and the four bits of `hash` (a keyed path hash, uniform in every bit).
    fn place(&self, hash: u64) -> (usize, u64) {
        let h = hash.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let bits = (0..4).fold(0u64, |m, i| m | 1 << ((h >> (6 * i)) & 63));
        ((h >> 32) as usize & (self.words.len() - 1), bits)
    }

    fn insert(&mut self, hash: u64) {
        let (word, bits) = self.place(hash);
        self.words[word] |= bits;
    }

    fn may_contain(&self, hash: u64) -> bool {
        let (word, bits) = self.place(hash);
        self.words[word] & bits == bits
    }
}

impl std::fmt::Debug for FrozenTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrozenTree")
            .field("node_count", &self.node_count)
            .field("bytes", &self.source.bytes().len())
            .finish()
    }
}

/// What the file header says that the body checks need.
#[derive(Debug, Clone, Copy)]
pub struct BodyShape {
    pub header_bytes: usize,
    pub node_count: u64,
    pub session_count: u64,
}

impl FrozenTree {
    /// Maps and fully checks the body of a snapshot whose header and checksums already passed
    /// (docs/FORMAT.md, "Loading", steps 2 to 4): [`FrozenTree::map`] then
    /// [`FrozenTree::check`].
    pub fn open(source: Box<dyn FrozenBytes>, shape: BodyShape) -> Result<FrozenTree, Corrupt> {
        let tree = FrozenTree::map(source, shape)?;
        tree.check()?;
        Ok(tree)
    }

    /// The checks that read only the trailer, the root and the special nodes (docs/FORMAT.md,
    /// "Loading", step 2 and the start-up part of step 3): what start-up needs before it can
    /// restore sessions and replay the log. The rest of the structure is checked by
    /// [`FrozenTree::check`], which start-up runs in the background on a file whose body
    /// checksum matched (FORMAT.md says why that is safe).
    pub fn map(source: Box<dyn FrozenBytes>, shape: BodyShape) -> Result<FrozenTree, Corrupt> {
        let b = source.bytes();
        let file_len = b.len();
        let trailer_at = match file_len.checked_sub(TRAILER_BYTES) {
            Some(t) if t >= shape.header_bytes => t,
            _ => return corrupt(file_len, "shorter than a header and trailer"),
        };
        let field = |i: usize| u64_at(b, trailer_at + 8 * i).expect("trailer in bounds");
        let [
            nodes_end,
            root_at,
            specials_at,
            index_at,
            slots,
            k0,
            k1,
            data_bytes,
        ] = std::array::from_fn(field);
        let nodes_at = shape
            .session_count
            .checked_mul(SESSION_RECORD_BYTES as u64)
            .and_then(|s| s.checked_add(shape.header_bytes as u64))
            .filter(|&n| n <= trailer_at as u64)
            .map_or_else(|| corrupt(32, "session count larger than the file"), Ok)?
            as usize;
        let sessions_end = nodes_at;
        let nodes_at = align_up(nodes_at);
        if nodes_at > trailer_at || b[sessions_end..nodes_at].iter().any(|&x| x != 0) {
            return corrupt(sessions_end, "bad padding after the sessions");
        }
        let tiles = nodes_end >= nodes_at as u64
            && specials_at == nodes_end
            && specials_at.checked_add(8).is_some_and(|s| index_at >= s)
            && slots.is_power_of_two()
            && slots == index_slots(shape.node_count)
            && nodes_end <= OFFSET_MASK
            && slots
                .checked_mul(8)
                .and_then(|s| s.checked_add(index_at))
                .is_some_and(|end| end == trailer_at as u64);
        if !tiles {
            return corrupt(trailer_at, "sections do not tile the body");
        }
        let (nodes_end, specials_at, index_at) =
            (nodes_end as usize, specials_at as usize, index_at as usize);
        let special_count = u64_at(b, specials_at).expect("inside the body") as usize;
        if special_count.checked_mul(8) != Some(index_at - specials_at - 8) {
            return corrupt(specials_at, "special node count does not fit its section");
        }
        let in_nodes = |at: u64| {
            at >= nodes_at as u64
                && at < nodes_end as u64
                && (at as usize).is_multiple_of(RECORD_ALIGN)
        };
        // The root: the last record, "/", persistent.
        let root = in_nodes(root_at)
            .then(|| parse_record(b, root_at as usize, nodes_end).ok())
            .flatten();
        let root_ok = root.is_some_and(|r| {
            &b[r.path.0..r.path.1] == b"/"
                && r.owner(b) == 0
                && align_up(r.end) == nodes_end
                && b[r.end..nodes_end].iter().all(|&x| x == 0)
        });
        if !root_ok {
            return corrupt(
                trailer_at + 8,
                "the root is not a persistent \"/\" ending the nodes",
            );
        }
        let mut specials = Vec::with_capacity(special_count);
        for i in 0..special_count {
            let entry_at = specials_at + 8 + 8 * i;
            let at = u64_at(b, entry_at).expect("inside the body");
            let increasing = specials.last().is_none_or(|&last| at as usize > last);
            let record = (in_nodes(at) && increasing)
                .then(|| parse_record(b, at as usize, nodes_end).ok())
                .flatten();
            let is_special = record.is_some_and(|r| {
                let kind = node_kind(r.owner(b));
                kind != NodeKind::Persistent
                    && !(matches!(kind, NodeKind::Ephemeral(_)) && r.child_count > 0)
                    && std::str::from_utf8(&b[r.path.0..r.path.1])
                        .is_ok_and(|p| p != "/" && path::validate(p).is_ok())
            });
            if !is_special {
                return corrupt(entry_at, "special list entry is not a non-persistent node");
            }
            specials.push(at as usize);
        }
        Ok(FrozenTree {
            keys: (k0, k1),
            nodes_at,
            nodes_end,
            root_at: root_at as usize,
            index_at,
            slot_mask: slots as usize - 1,
            node_count: shape.node_count,
            data_bytes,
            specials,
            absent: std::sync::OnceLock::new(),
            source,
        })
    }

    /// The whole structure (docs/FORMAT.md, "Loading", steps 3 and 4): every record, every
    /// child link, the index, the special list and the trailer's data byte count. Fills the
    /// path filter on success. Reads every page of the file once; they are released after.
    pub fn check(&self) -> Result<(), Corrupt> {
        let b = self.bytes();
        let mut absent = PathFilter::for_nodes(self.node_count);
        let (data_bytes, non_persistent, is_start) =
            self.check_nodes(b, self.nodes_end, &mut absent)?;
        let trailer_at = b.len() - TRAILER_BYTES;
        if data_bytes != self.data_bytes {
            return corrupt(
                trailer_at + 56,
                "data byte count does not match the records",
            );
        }
        if let Some(&at) = self.specials.iter().find(|&&at| !is_start(at)) {
            return corrupt(at, "special list entry is not the start of a record");
        }
        if self.specials.len() != non_persistent {
            return corrupt(
                self.nodes_end,
                "special list does not name every special node",
            );
        }
        let slots = self.slot_mask + 1;
        let occupied = |i: usize| u64_at(b, self.index_at + 8 * i).expect("index in bounds") != 0;
        let used = (0..slots).filter(|&i| occupied(i)).count();
        if used as u64 != self.node_count {
            return corrupt(self.index_at, "index holds other entries than the nodes");
        }
        // A probe walks a run of occupied slots to its end: bound the longest run (counted
        // around the wrap, from an empty slot, which exists because slots > nodes).
        let empty = (0..slots)
            .find(|&i| !occupied(i))
            .expect("fewer nodes than slots");
        let mut run = 0;
        for k in 1..=slots {
            run = if occupied((empty + k) & self.slot_mask) {
                run + 1
            } else {
                0
            };
            if run > INDEX_RUN_MAX {
                return corrupt(self.index_at, "an index cluster too long to probe");
            }
        }
        let _ = self.absent.set(absent);
        self.release_resident_pages();
        Ok(())
    }

    /// Step 3 and the index half of step 4: returns the data bytes, the number of
    /// non-persistent nodes and a test for "a record starts at this offset".
    #[allow(clippy::type_complexity)]
    fn check_nodes(
        &self,
        b: &[u8],
        nodes_end: usize,
        absent: &mut PathFilter,
    ) -> Result<(u64, usize, impl Fn(usize) -> bool + use<>), Corrupt> {
        let words = (nodes_end - self.nodes_at) / RECORD_ALIGN + 1;
        let mut starts = vec![0u64; words.div_ceil(64)];
        let mut parented = vec![0u64; words.div_ceil(64)];
        let bit = |at: usize| {
            let i = (at - self.nodes_at) / RECORD_ALIGN;
            (i / 64, i % 64)
        };
        let (mut at, mut count, mut data_bytes, mut special) = (self.nodes_at, 0u64, 0u64, 0);
        let mut pending = Vec::with_capacity(INDEX_CHECK_BATCH);
        let mut last = None;
        while at < nodes_end {
            let r = parse_record(b, at, nodes_end)?;
            // A path is checked as its parent's child (one more valid segment under a valid
            // path), and the root must be "/": so every path is valid once all are parented.
            let p = &b[r.path.0..r.path.1];
            let prefix = if p == b"/" { &b""[..] } else { p };
            let owner = r.owner(b);
            let kind = node_kind(owner);
            if kind != NodeKind::Persistent {
                special += 1;
            }
            if matches!(kind, NodeKind::Ephemeral(_)) && r.child_count > 0 {
                return corrupt(at, "an ephemeral node with children");
            }
            let mut previous: Option<&[u8]> = None;
            for i in 0..r.child_count {
                let entry = r.children_at + 8 * i;
                // The children were read long before their parent (post-order): start loading
                // a later child's path now, so that its cache miss overlaps this one's checks.
                if i + CHILD_PREFETCH_DISTANCE < r.child_count {
                    let ahead = r.children_at + 8 * (i + CHILD_PREFETCH_DISTANCE);
                    if let Some(target) = u64_at(b, ahead).and_then(|t| b.get(t as usize + 8)) {
                        prefetch(target as *const u8);
                    }
                }
                let child = u64_at(b, entry).expect("child offsets in bounds") as usize;
                let valid =
                    child >= self.nodes_at && child < at && child.is_multiple_of(RECORD_ALIGN);
                if !valid || starts[bit(child).0] & (1 << bit(child).1) == 0 {
                    return corrupt(entry, "child offset is not an earlier record");
                }
                if parented[bit(child).0] & (1 << bit(child).1) != 0 {
                    return corrupt(entry, "a node with two parents");
                }
                parented[bit(child).0] |= 1 << bit(child).1;
                let child_path = self.path_bytes_at(b, child);
                let under = child_path.len() > prefix.len() + 1
                    && child_path.starts_with(prefix)
                    && child_path[prefix.len()] == b'/'
                    && path::valid_segment(&child_path[prefix.len() + 1..]);
                if !under {
                    return corrupt(entry, "child path is not a valid name under its parent");
                }
                // Siblings share the parent's path and the '/': comparing the names orders
                // the paths.
                let name = &child_path[prefix.len() + 1..];
                if previous.is_some_and(|prev| prev >= name) {
                    return corrupt(entry, "children out of order");
                }
                previous = Some(name);
            }
            // As the live tree counts: every node's data, every path but the root's.
            if p != b"/" {
                data_bytes += (r.path.1 - r.path.0) as u64;
            }
            data_bytes += r.data.map_or(0, |(s, e)| (e - s) as u64);
            let hash = path_hash(self.keys, p);
            absent.insert(hash);
            pending.push((at, hash));
            if pending.len() == INDEX_CHECK_BATCH {
                self.check_indexed(b, &mut pending)?;
            }
            starts[bit(at).0] |= 1 << bit(at).1;
            count += 1;
            last = Some((at, p == b"/"));
            if p == b"/" && owner != 0 {
                return corrupt(at, "the root is not a persistent node");
            }
            let next = align_up(r.end);
            if next > nodes_end || b[r.end..next].iter().any(|&x| x != 0) {
                return corrupt(r.end, "bad padding after a record");
            }
            at = next;
        }
        self.check_indexed(b, &mut pending)?;
        if count != self.node_count {
            return corrupt(at, "node count does not match the header");
        }
        match last {
            Some((root, true)) if root == self.root_at => {}
            _ => return corrupt(at, "the last record is not the root"),
        }
        let orphans = starts
            .iter()
            .zip(&parented)
            .map(|(s, p)| (s & !p).count_ones())
            .sum::<u32>();
        if orphans != 1 {
            return corrupt(self.root_at, "a node other than the root has no parent");
        }
        let nodes_at = self.nodes_at;
        let is_start = move |at: usize| {
            (nodes_at..nodes_end).contains(&at) && at.is_multiple_of(RECORD_ALIGN) && {
                let i = (at - nodes_at) / RECORD_ALIGN;
                starts[i / 64] & (1 << (i % 64)) != 0
            }
        };
        Ok((data_bytes, special, is_start))
    }

    fn bytes(&self) -> &[u8] {
        self.source.bytes()
    }

    fn path_bytes_at<'b>(&self, b: &'b [u8], at: usize) -> &'b [u8] {
        let len = u32_at(b, at + 4).expect("record checked") as usize;
        &b[at + 8..at + 8 + len]
    }

    fn owner_at(&self, b: &[u8], at: usize) -> i64 {
        parse_record(b, at, b.len())
            .expect("record checked")
            .owner(b)
    }

    /// Checks that each (record, path hash) in `pending` is found in the index, and empties
    /// it. Done in batches because each probe starts with a cache miss in a large table: the
    /// probes of one batch are independent, so the CPU overlaps their misses.
    fn check_indexed(&self, b: &[u8], pending: &mut Vec<(usize, u64)>) -> Result<(), Corrupt> {
        for &(at, hash) in pending.iter() {
            if self.probe_for(b, at, hash).is_none() {
                return corrupt(at, "node missing from the path index");
            }
        }
        pending.clear();
        Ok(())
    }

    /// The slot holding `at` (whose path hashes to `hash`); None if an empty slot comes
    /// first.
    fn probe_for(&self, b: &[u8], at: usize, hash: u64) -> Option<usize> {
        let expected = index_entry(hash, at as u64);
        let mut slot = hash as usize & self.slot_mask;
        for _ in 0..=self.slot_mask {
            match u64_at(b, self.index_at + 8 * slot).expect("index in bounds") {
                0 => return None,
                v if v == expected => return Some(slot),
                _ => slot = (slot + 1) & self.slot_mask,
            }
        }
        None
    }

    /// The record offset of `p`, if the frozen tree holds it. Safe on a file that only passed
    /// [`FrozenTree::map`]: the probe is bounded and an entry pointing at no record reads
    /// as a mismatch.
    pub fn find(&self, p: &str) -> Option<usize> {
        let b = self.bytes();
        let hash = path_hash(self.keys, p.as_bytes());
        if self.absent.get().is_some_and(|f| !f.may_contain(hash)) {
            return None;
        }
        let tag = hash & !OFFSET_MASK;
        let mut slot = hash as usize & self.slot_mask;
        for _ in 0..=self.slot_mask {
            match u64_at(b, self.index_at + 8 * slot).expect("index in bounds") {
                0 => return None,
                v if v & !OFFSET_MASK == tag
                    && stored_path(b, (v & OFFSET_MASK) as usize) == Some(p.as_bytes()) =>
                {
                    return Some((v & OFFSET_MASK) as usize);
                }
                _ => slot = (slot + 1) & self.slot_mask,
            }
        }
        None
    }

    pub fn contains(&self, p: &str) -> bool {
        self.find(p).is_some()
    }

    pub fn node_count(&self) -> u64 {
        self.node_count
    }

    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    /// Decodes the node at `p`.
    pub fn get(self: &Arc<Self>, p: &str) -> Option<Node> {
        self.find(p).map(|at| self.decode(at))
    }

    fn decode(self: &Arc<Self>, at: usize) -> Node {
        let b = self.bytes();
        let r = parse_record(b, at, b.len()).expect("record checked");
        let mut acl_reader = crate::jute::Reader::new(&b[r.acl_at..r.stat_at], FIELD_BYTES_MAX);
        let acl = crate::jute::records::decode_acls(&mut acl_reader).expect("ACL checked");
        let s = r.stat_at;
        let i64_at = |o: usize| u64_at(b, s + o).expect("stat checked") as i64;
        let i32_at = |o: usize| u32_at(b, s + o).expect("stat checked") as i32;
        Node {
            data: r.data.map(|(from, to)| Arc::from(&b[from..to])),
            acl: crate::core::acl::shared(&acl),
            czxid: i64_at(0),
            mzxid: i64_at(8),
            ctime: i64_at(16),
            mtime: i64_at(24),
            version: i32_at(32),
            cversion: i32_at(36),
            aversion: i32_at(40),
            ephemeral_owner: i64_at(44),
            pzxid: i64_at(52),
            children: match r.child_count {
                0 => Children::Empty,
                n => Children::Frozen(FrozenChildren {
                    tree: self.clone(),
                    list_at: r.children_at,
                    count: n,
                }),
            },
        }
    }

    /// Path and stored owner of every ephemeral, container and TTL node.
    pub fn special_nodes(&self) -> impl Iterator<Item = (&str, i64)> + '_ {
        let b = self.bytes();
        self.specials.iter().map(move |&at| {
            let p = std::str::from_utf8(self.path_bytes_at(b, at)).expect("path checked");
            (p, self.owner_at(b, at))
        })
    }

    /// The path of the record at `at` (a checked child offset).
    fn path_at(&self, at: usize) -> &str {
        std::str::from_utf8(self.path_bytes_at(self.bytes(), at)).expect("path checked")
    }

    /// Drops the file's pages from the process after the checks read them all.
    pub fn release_resident_pages(&self) {
        self.source.release();
    }
}

/// The children of a frozen node: a sorted list of record offsets in the file.
#[derive(Clone)]
pub struct FrozenChildren {
    tree: Arc<FrozenTree>,
    list_at: usize,
    count: usize,
}

impl std::fmt::Debug for FrozenChildren {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FrozenChildren({})", self.count)
    }
}

impl FrozenChildren {
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The full path of child `i` (in path order).
    pub fn path(&self, i: usize) -> &str {
        self.tree.path_at(self.offset(i))
    }

    /// The full path of child `i` as bytes (no UTF-8 check: for comparisons).
    pub fn path_bytes(&self, i: usize) -> &[u8] {
        self.tree.path_bytes_at(self.tree.bytes(), self.offset(i))
    }

    /// The record offset of child `i` in the file.
    pub fn offset(&self, i: usize) -> usize {
        u64_at(self.tree.bytes(), self.list_at + 8 * i).expect("child list checked") as usize
    }

    /// Whether these children are records of `tree` (and not of an older file).
    pub fn is_in(&self, tree: &Arc<FrozenTree>) -> bool {
        Arc::ptr_eq(&self.tree, tree)
    }

    /// Whether `p` (a full path) is one of these children: binary search by path.
    pub fn contains(&self, p: &str) -> bool {
        let (mut lo, mut hi) = (0, self.count);
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.path(mid).cmp(p) {
                std::cmp::Ordering::Equal => return true,
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
            }
        }
        false
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        (0..self.count).map(move |i| self.path(i))
    }
}

/// Writes node records and builds the index and special list (the writer's half of the
/// format). The caller streams `out` to the file after each record and keeps `written` as the
/// file offset of the next byte.
pub struct FrozenWriter {
    keys: (u64, u64),
    /// (hash, record offset) of every record so far.
    entries: Vec<(u64, u64)>,
    specials: Vec<u64>,
    /// The trailer's data byte count, as the records add up.
    data_bytes: u64,
    pub written: u64,
}

impl FrozenWriter {
    /// `start` is the file offset where the node section begins (already aligned).
    pub fn new(keys: (u64, u64), start: u64) -> FrozenWriter {
        assert!((start as usize).is_multiple_of(RECORD_ALIGN));
        FrozenWriter {
            keys,
            entries: Vec::new(),
            specials: Vec::new(),
            data_bytes: 0,
            written: start,
        }
    }

    /// Encodes the record of `node` at `p` into `out` (with padding); `children` are the
    /// record offsets of its children, in path order. Returns the record's offset.
    pub fn record(&mut self, p: &str, node: &Node, children: &[u64], out: &mut Vec<u8>) -> u64 {
        let start = out.len();
        out.extend_from_slice(&[0u8; 4]);
        out.extend_from_slice(&(p.len() as u32).to_be_bytes());
        out.extend_from_slice(p.as_bytes());
        match &node.data {
            Some(d) => out.put_buffer(d),
            None => out.put_null_buffer(),
        }
        crate::jute::records::encode_acls(&node.acl, out);
        out.put_i64(node.czxid);
        out.put_i64(node.mzxid);
        out.put_i64(node.ctime);
        out.put_i64(node.mtime);
        out.put_i32(node.version);
        out.put_i32(node.cversion);
        out.put_i32(node.aversion);
        out.put_i64(node.ephemeral_owner);
        out.put_i64(node.pzxid);
        self.end_record(start, p.as_bytes(), node.ephemeral_owner, children, out)
    }

    /// Like `record`, from a record of another snapshot file: `prefix` is its bytes from the
    /// path through the stat (unchanged), `path` the path within them.
    pub fn record_raw(
        &mut self,
        prefix: &[u8],
        path: &[u8],
        owner: i64,
        children: &[u64],
        out: &mut Vec<u8>,
    ) -> u64 {
        let start = out.len();
        out.extend_from_slice(&[0u8; 4]);
        out.extend_from_slice(prefix);
        self.end_record(start, path, owner, children, out)
    }

    /// Ends the record begun at `out[start..]` (a length placeholder, then path through
    /// stat): appends the child list, fills in the length, pads to the alignment, and notes
    /// the record for the index and the special list. Returns its file offset.
    fn end_record(
        &mut self,
        start: usize,
        path: &[u8],
        owner: i64,
        children: &[u64],
        out: &mut Vec<u8>,
    ) -> u64 {
        let at = self.written;
        // After the length placeholder: the path's length and bytes, then the data's length.
        let data_len_at = start + 8 + path.len();
        let data_len = i32::from_be_bytes(
            out[data_len_at..data_len_at + 4]
                .try_into()
                .expect("4 bytes"),
        );
        if path != b"/" {
            self.data_bytes += path.len() as u64;
        }
        self.data_bytes += data_len.max(0) as u64;
        out.extend_from_slice(&(children.len() as u32).to_be_bytes());
        for c in children {
            out.extend_from_slice(&c.to_be_bytes());
        }
        let len = (out.len() - start - 4) as u32;
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
        out.resize(start + align_up(out.len() - start), 0);
        self.written += (out.len() - start) as u64;
        self.entries.push((path_hash(self.keys, path), at));
        if node_kind(owner) != NodeKind::Persistent {
            self.specials.push(at);
        }
        at
    }

    /// The special list, index and trailer that end the body, given the root's offset.
    /// Fails if the node section outgrew what an index entry can address.
    pub fn finish(self, root_at: u64, out: &mut Vec<u8>) -> Result<(), &'static str> {
        if self.written > OFFSET_MASK {
            return Err("a snapshot's node section must stay below 1 TiB");
        }
        let nodes_end = self.written;
        let specials_at = nodes_end;
        out.extend_from_slice(&(self.specials.len() as u64).to_be_bytes());
        for s in &self.specials {
            out.extend_from_slice(&s.to_be_bytes());
        }
        let index_at = specials_at + 8 + 8 * self.specials.len() as u64;
        let slots = index_slots(self.entries.len() as u64);
        let mask = slots as usize - 1;
        let mut table = vec![0u64; slots as usize];
        for (hash, at) in &self.entries {
            let mut slot = *hash as usize & mask;
            while table[slot] != 0 {
                slot = (slot + 1) & mask;
            }
            table[slot] = index_entry(*hash, *at);
        }
        out.reserve(table.len() * 8 + TRAILER_BYTES);
        for v in table {
            out.extend_from_slice(&v.to_be_bytes());
        }
        for v in [
            nodes_end,
            root_at,
            specials_at,
            index_at,
            slots,
            self.keys.0,
            self.keys.1,
            self.data_bytes,
        ] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        Ok(())
    }

    pub fn node_count(&self) -> u64 {
        self.entries.len() as u64
    }
}

/// The records of a frozen tree that its overlay shadows (changed or deleted since the file
/// was written): one bit per possible record offset, built from the overlay's paths.
struct Shadowed {
    bits: Vec<u64>,
}

impl Shadowed {
    fn of(tree: &crate::core::tree::DataTree) -> Shadowed {
        let Some(frozen) = tree.frozen_tree() else {
            return Shadowed { bits: Vec::new() };
        };
        let records = frozen.bytes().len() / RECORD_ALIGN;
        let mut bits = vec![0u64; records.div_ceil(64)];
        for p in tree.overlay_paths() {
            if let Some(at) = frozen.find(p) {
                let record = at / RECORD_ALIGN;
                bits[record / 64] |= 1 << (record % 64);
            }
        }
        Shadowed { bits }
    }

    fn contains(&self, at: usize) -> bool {
        let record = at / RECORD_ALIGN;
        self.bits
            .get(record / 64)
            .is_some_and(|w| w & (1 << (record % 64)) != 0)
    }
}

/// Writes a tree's nodes in post-order through `emit` (each record's bytes, in file order)
/// without recursion, so any depth of path works. Returns the root's record offset.
///
/// A node still frozen (unchanged since the file it lives in) is copied from that file
/// byte for byte, with only its child offsets rewritten: its child set cannot have changed,
/// because any change to a node's children copies the node into the overlay.
pub fn write_post_order<'t>(
    tree: &'t crate::core::tree::DataTree,
    writer: &mut FrozenWriter,
    emit: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<u64> {
    /// A changed node's path, never copied: borrowed from the overlay's key (found by
    /// address) or from the file's record, or shared with the parent's child list.
    enum PathRef<'t> {
        Borrowed(&'t str),
        Shared(Arc<str>),
    }
    impl PathRef<'_> {
        fn as_str(&self) -> &str {
            match self {
                PathRef::Borrowed(p) => p,
                PathRef::Shared(p) => p,
            }
        }
    }
    /// An overlay entry found by the address of its key: the key and the node (`None`: a
    /// deletion), as references to the allocations themselves, not to the overlay's slots
    /// that point at them: reading them then touches no slot (each a cache miss of its own).
    type Found<'t> = (&'t str, Option<&'t Node>);
    enum Source<'t> {
        Memory {
            path: PathRef<'t>,
            node: &'t Node,
            children: Vec<ChildSource>,
            /// For each child named by path: its overlay entry, looked up by address when
            /// the frame was made (one tight loop of independent probes, so that their
            /// cache misses overlap); `None` for a child the table does not hold.
            found: Vec<Option<Found<'t>>>,
        },
        Frozen {
            at: usize,
            layout: RecordLayout,
        },
    }
    struct Frame<'t> {
        source: Source<'t>,
        next: usize,
        offsets: Vec<u64>,
    }
    let frozen = tree.frozen_tree();
    let shadowed = Shadowed::of(tree);
    // An in-memory parent names its children by the same `Arc<str>` allocations that key
    // them in the overlay (children.rs), so one pass over the overlay indexes its entries by
    // the address of that allocation: a flat table probed with one word, where a lookup by
    // path hashes the path and descends the map's branches (a quarter of the snapshot
    // thread's time in a 3-server create run). The table costs three words per overlay
    // entry while the walk runs. Two live allocations never share an address, so a hit is
    // the entry for that very path; a miss (a child named by another allocation of the same
    // path, or one the overlay does not hold) falls back to the lookup by path.
    let mut by_address: ahash::AHashMap<*const u8, Found<'t>> =
        ahash::AHashMap::with_capacity(tree.overlay_len());
    by_address.extend(
        tree.overlay_entries()
            .map(|(key, node)| (key.as_ptr(), (&**key, node.map(|n| &**n)))),
    );
    let memory = |path: PathRef<'t>, node: &'t Node| {
        let children = node.children.sources(frozen);
        let found = children
            .iter()
            .map(|c| match c {
                ChildSource::Named(p) => by_address.get(&p.as_ptr()).copied(),
                ChildSource::Record(_) => None,
            })
            .collect();
        Source::Memory {
            path,
            node,
            children,
            found,
        }
    };
    let from_file = |at: usize| {
        let f = frozen.expect("a frozen node has a frozen tree");
        Source::Frozen {
            at,
            layout: parse_record(f.bytes(), at, f.bytes().len()).expect("record checked"),
        }
    };
    // A child listed by a parent: changed (in the overlay) or still as the file has it.
    let source_of = |path: PathRef<'t>, known_at: Option<usize>| {
        let p = path.as_str();
        match tree.overlay_slot(p) {
            Some(Some(node)) => memory(path, node),
            Some(None) => panic!("a listed child is deleted: {p}"),
            None => from_file(known_at.unwrap_or_else(|| {
                frozen
                    .and_then(|f| f.find(p))
                    .expect("a listed child exists")
            })),
        }
    };
    let named = |p: &Arc<str>, found: Option<Found<'t>>| match found {
        Some((key, Some(node))) => memory(PathRef::Borrowed(key), node),
        Some((_, None)) => panic!("a listed child is deleted: {p}"),
        None => source_of(PathRef::Shared(p.clone()), None),
    };
    // A child known by its record: only a record the overlay shadows needs the overlay (the
    // one hash lookup per changed node, not per node).
    let source_at = |at: usize| {
        if shadowed.contains(at) {
            source_of(
                PathRef::Borrowed(frozen.expect("frozen").path_at(at)),
                Some(at),
            )
        } else {
            from_file(at)
        }
    };
    let frame = |source| Frame {
        source,
        next: 0,
        offsets: Vec::new(),
    };
    let mut stack = vec![frame(source_of(PathRef::Borrowed("/"), None))];
    let mut buf = Vec::with_capacity(4096);
    loop {
        let top = stack
            .last_mut()
            .expect("stack holds the root until it is written");
        if let Source::Memory { found, .. } = &top.source {
            // The children of a large in-memory parent (every node created under it since
            // the file was written) are scattered in memory: start loading a later child's
            // node and path, and a nearer one's data, so their misses overlap this child's
            // work.
            if let Some(Some((key, Some(node)))) = found.get(top.next + WALK_PREFETCH_DISTANCE) {
                prefetch(*node as *const Node);
                prefetch(key.as_ptr());
            }
            if let Some(Some((_, Some(node)))) = found.get(top.next + WALK_PREFETCH_DISTANCE / 2)
                && let Some(data) = &node.data
            {
                prefetch(Arc::as_ptr(data));
            }
        }
        let child = match &top.source {
            Source::Memory {
                children, found, ..
            } => children.get(top.next).map(|c| match c {
                ChildSource::Named(p) => named(p, found[top.next]),
                ChildSource::Record(at) => source_at(*at),
            }),
            Source::Frozen { layout, .. } => (top.next < layout.child_count).then(|| {
                let f = frozen.expect("frozen");
                source_at(
                    u64_at(f.bytes(), layout.children_at + 8 * top.next).expect("checked") as usize,
                )
            }),
        };
        if let Some(child) = child {
            top.next += 1;
            stack.push(frame(child));
            continue;
        }
        let done = stack.pop().expect("top exists");
        buf.clear();
        let at = match &done.source {
            Source::Memory { path, node, .. } => {
                writer.record(path.as_str(), node, &done.offsets, &mut buf)
            }
            Source::Frozen { at, layout } => {
                let b = frozen.expect("frozen").bytes();
                let owner = layout.owner(b);
                writer.record_raw(
                    &b[at + 4..layout.stat_at + STAT_BYTES],
                    &b[layout.path.0..layout.path.1],
                    owner,
                    &done.offsets,
                    &mut buf,
                )
            }
        };
        emit(&buf)?;
        match stack.last_mut() {
            Some(parent) => parent.offsets.push(at),
            None => return Ok(at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::tree::{CONTAINER_OWNER, DataTree};
    use crate::core::txn::{Txn, TxnHeader};

    const HEADER: usize = 64;

    /// A body (after a zeroed 64-byte header, no sessions) holding `tree`.
    fn body_of(tree: &DataTree) -> (Vec<u8>, BodyShape) {
        let mut out = vec![0u8; HEADER];
        let mut writer = FrozenWriter::new((1, 2), HEADER as u64);
        let root = write_post_order(tree, &mut writer, &mut |r| {
            out.extend_from_slice(r);
            Ok(())
        })
        .unwrap();
        let shape = BodyShape {
            header_bytes: HEADER,
            node_count: writer.node_count(),
            session_count: 0,
        };
        writer.finish(root, &mut out).unwrap();
        (out, shape)
    }

    fn open(bytes: Vec<u8>, shape: BodyShape) -> Result<FrozenTree, Corrupt> {
        FrozenTree::open(Box::new(bytes), shape)
    }

    fn sample() -> DataTree {
        let mut tree = DataTree::new();
        for (zxid, p) in [(1, "/a"), (2, "/a/b"), (3, "/c")] {
            let mut txn = create_txn(&tree, p);
            if let Txn::Create { data, .. } = &mut txn {
                *data = Some(b"x".to_vec().into());
            }
            apply_one(&mut tree, zxid, txn);
        }
        tree
    }

    #[test]
    fn a_written_tree_opens_and_serves_every_node() {
        let tree = sample();
        let (bytes, shape) = body_of(&tree);
        let frozen = Arc::new(open(bytes, shape).unwrap());
        assert_eq!(frozen.node_count(), tree.node_count() as u64);
        assert_eq!(frozen.data_bytes(), tree.data_bytes());
        for p in ["/", "/a", "/a/b", "/c", "/zookeeper/config"] {
            let node = frozen.get(p).unwrap_or_else(|| panic!("{p}"));
            assert_eq!(node.stat(), tree.get(p).unwrap().stat(), "{p}");
        }
        assert!(frozen.get("/a/x").is_none() && !frozen.contains("/b"));
    }

    /// Every node is found through the filter (no false negatives), and most absent paths
    /// are turned away by it without a probe of the index.
    #[test]
    fn the_path_filter_passes_every_node_and_stops_most_absent_paths() {
        let mut tree = DataTree::new();
        let mut zxid = 0;
        for p in std::iter::once("/f".to_string()).chain((0..5_000).map(|i| format!("/f/n{i}"))) {
            zxid += 1;
            let txn = create_txn(&tree, &p);
            apply_one(&mut tree, zxid, txn);
        }
        let (bytes, shape) = body_of(&tree);
        let frozen = open(bytes, shape).unwrap();
        tree.walk("/", &mut |p, _| assert!(frozen.find(p).is_some(), "{p}"));
        let stopped = (0..5_000)
            .map(|i| path_hash(frozen.keys, format!("/f/absent{i}").as_bytes()))
            .filter(|h| !frozen.absent.get().unwrap().may_contain(*h))
            .count();
        assert!(
            stopped > 4_500,
            "only {stopped} of 5000 absent paths stopped"
        );
        assert!((0..5_000).all(|i| frozen.find(&format!("/f/absent{i}")).is_none()));
    }

    fn apply_one(tree: &mut DataTree, zxid: i64, txn: Txn) {
        let header = TxnHeader {
            session_id: 1,
            xid: 1,
            zxid,
            time_ms: 0,
        };
        tree.apply(&header, &txn, &mut Vec::new());
    }

    fn create_txn(tree: &DataTree, p: &str) -> Txn {
        Txn::Create {
            path: p.into(),
            data: Some(p.as_bytes().to_vec().into()),
            acl: crate::core::acl::open_acl_unsafe().into(),
            ephemeral_owner: 0,
            parent_cversion: tree.get(path::parent(p)).unwrap().cversion + 1,
        }
    }

    /// A parent with frozen children and names added and removed on top lists its children
    /// for the snapshot writer in path order, by record offset where the file still has them;
    /// and a snapshot written from it, with changed frozen children among unchanged ones,
    /// holds exactly the layered tree.
    #[test]
    fn layered_children_are_listed_in_order_by_record_and_written_whole() {
        let mut tree = DataTree::new();
        let mut zxid = 0;
        for p in
            std::iter::once("/p".to_string()).chain((0..40).map(|i| format!("/p/n{:02}", 2 * i)))
        {
            zxid += 1;
            let txn = create_txn(&tree, &p);
            apply_one(&mut tree, zxid, txn);
        }
        let (bytes, shape) = body_of(&tree);
        let frozen = Arc::new(open(bytes, shape).unwrap());
        let mut tree = DataTree::from_frozen(frozen.clone(), zxid);
        for i in [1, 3, 41, 79, 81] {
            zxid += 1;
            let txn = create_txn(&tree, &format!("/p/n{i:02}"));
            apply_one(&mut tree, zxid, txn);
        }
        for i in [0, 40, 78] {
            zxid += 1;
            apply_one(
                &mut tree,
                zxid,
                Txn::Delete {
                    path: format!("/p/n{i:02}").into(),
                },
            );
        }
        for i in [2, 50] {
            zxid += 1;
            let txn = Txn::SetData {
                path: format!("/p/n{i:02}").into(),
                data: Some(b"changed".to_vec().into()),
                version: 1,
            };
            apply_one(&mut tree, zxid, txn);
        }
        let parent = tree.get("/p").unwrap();
        assert!(matches!(parent.children, Children::Layered(_)));
        let sources = parent.children.sources(Some(&frozen));
        let listed: Vec<String> = sources
            .iter()
            .map(|c| match c {
                ChildSource::Named(p) => p.to_string(),
                ChildSource::Record(at) => frozen.path_at(*at).to_string(),
            })
            .collect();
        let expected: Vec<String> = parent.children.iter().map(str::to_owned).collect();
        assert_eq!(listed, expected);
        assert_eq!(listed.len(), 40 + 5 - 3);
        let records = sources
            .iter()
            .filter(|c| matches!(c, ChildSource::Record(_)))
            .count();
        assert_eq!(
            records,
            40 - 3,
            "every frozen child left is listed by its record"
        );

        let (bytes, shape) = body_of(&tree);
        let again = Arc::new(open(bytes, shape).unwrap());
        assert_eq!(again.node_count(), tree.node_count() as u64);
        assert_eq!(again.data_bytes(), tree.data_bytes());
        tree.walk("/", &mut |p, node| {
            let read = again.get(p).unwrap_or_else(|| panic!("{p} missing"));
            assert_eq!(read.stat(), node.stat(), "{p}");
            assert_eq!(read.data, node.data, "{p}");
        });
        for gone in ["/p/n00", "/p/n40", "/p/n78"] {
            assert!(!again.contains(gone), "{gone}");
        }
    }

    /// The root must be persistent: a container, TTL or ephemeral root would be reaped or
    /// expired, and deleting "/" breaks every invariant of the tree.
    #[test]
    fn a_root_that_is_not_persistent_is_refused() {
        let tree = sample();
        // A valid body, then the root record's owner field rewritten in place.
        let (mut bytes, shape) = body_of(&tree);
        let trailer = bytes.len() - TRAILER_BYTES;
        let root_at = u64_at(&bytes, trailer + 8).unwrap() as usize;
        let r = parse_record(&bytes, root_at, trailer).unwrap();
        bytes[r.stat_at + 44..r.stat_at + 52].copy_from_slice(&CONTAINER_OWNER.to_be_bytes());
        let err = open(bytes, shape).unwrap_err();
        assert!(err.reason.contains("root"), "{err:?}");
    }

    #[test]
    fn an_index_of_another_size_is_refused() {
        let (bytes, shape) = body_of(&sample());
        let claimed = BodyShape {
            node_count: shape.node_count * 3,
            ..shape
        };
        assert!(open(bytes, claimed).is_err());
    }
}
