//! Snapshots: one consistent state (tree and sessions) in an immutable, checksummed file
//! (layout and crash cases in docs/FORMAT.md, format 3). Written by a background thread from
//! an O(1) clone of the persistent tree and fully checked before it is renamed into place;
//! loaded by mapping the file and serving it in place (`core::frozen`): only the checks read
//! every node, nothing is decoded up front. At start-up the structure check runs in the
//! background ([`DeferredCheck`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::core::frozen::{self, BodyShape, FrozenTree, FrozenWriter, SESSION_RECORD_BYTES};
use crate::core::tree::DataTree;
use crate::jute::Writer;
use crate::storage::writeback::WritebackPacer;

/// Magic of every format; the version field says which.
pub const SNAPSHOT_MAGIC_PREFIX: &[u8; 7] = b"ZOOSNAP";
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"ZOOSNAP3";
pub const SNAPSHOT_FORMAT_VERSION: u32 = 3;
pub const SNAPSHOT_HEADER_BYTES: usize = 64;
/// Bytes between progress reports when loading.
const PROGRESS_INTERVAL_BYTES: usize = 64 * 1024 * 1024;

const _: () = assert!(SNAPSHOT_HEADER_BYTES == 8 + 4 + 4 + 8 + 8 + 8 + 8 + 4 + 4 + 8);

/// A session as stored in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub id: i64,
    pub timeout_ms: i32,
    pub password: [u8; 16],
}

/// From the commit core's `session_records()` form: (id, timeout, password).
impl From<(i64, i32, [u8; 16])> for SessionRecord {
    fn from((id, timeout_ms, password): (i64, i32, [u8; 16])) -> Self {
        SessionRecord {
            id,
            timeout_ms,
            password,
        }
    }
}

impl SessionRecord {
    /// Every session of `core`, as a snapshot stores them.
    pub fn all_of(core: &crate::core::commit::CommitCore) -> Vec<SessionRecord> {
        core.session_records()
            .into_iter()
            .map(SessionRecord::from)
            .collect()
    }
}

/// What a snapshot's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotHeader {
    pub zxid: i64,
    pub node_count: u64,
    pub session_count: u64,
    pub body_bytes: u64,
    pub body_crc: u32,
}

#[derive(Debug)]
pub enum SnapshotError {
    Io(PathBuf, io::Error),
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
}

impl std::fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapshotError::Io(p, e) => write!(f, "cannot read {}: {e}", p.display()),
            SnapshotError::Corrupt {
                file,
                offset,
                reason,
            } => {
                write!(
                    f,
                    "snapshot {} is corrupt at byte {offset}: {reason}",
                    file.display()
                )
            }
        }
    }
}

impl std::error::Error for SnapshotError {}

pub fn snapshot_directory(data_dir: &Path) -> PathBuf {
    data_dir.join("version-zoo")
}

pub fn snapshot_name(zxid: i64) -> String {
    format!("snapshot.{zxid:016x}")
}

/// Snapshots in `dir`, newest first. With `remove_leftovers` (at start-up, when no snapshot
/// can be in progress), `.tmp` files left by a crash are removed; a running server's purge
/// leaves them alone, since one may be the snapshot being written.
pub fn list_snapshots(dir: &Path, remove_leftovers: bool) -> io::Result<Vec<(i64, PathBuf)>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.strip_prefix("snapshot.") else {
            continue;
        };
        if rest.ends_with(".tmp") {
            if remove_leftovers {
                let _ = fs::remove_file(entry.path());
            }
            continue;
        }
        if let Ok(zxid) = i64::from_str_radix(rest, 16) {
            out.push((zxid, entry.path()));
        }
    }
    out.sort_by_key(|entry| std::cmp::Reverse(entry.0));
    Ok(out)
}

/// A writer that checksums what passes through it.
struct ChecksumWriter<W: Write> {
    inner: W,
    crc: u32,
    bytes: u64,
    /// Starts the writeback of the file under `inner` as it grows.
    pacer: WritebackPacer,
}

impl<W: Write> Write for ChecksumWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        self.bytes += n as u64;
        self.pacer.wrote(n);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

pub fn encode_header(h: &SnapshotHeader) -> [u8; SNAPSHOT_HEADER_BYTES] {
    let mut b = [0u8; SNAPSHOT_HEADER_BYTES];
    b[..8].copy_from_slice(SNAPSHOT_MAGIC);
    b[8..12].copy_from_slice(&SNAPSHOT_FORMAT_VERSION.to_be_bytes());
    b[16..24].copy_from_slice(&h.zxid.to_be_bytes());
    b[24..32].copy_from_slice(&h.node_count.to_be_bytes());
    b[32..40].copy_from_slice(&h.session_count.to_be_bytes());
    b[40..48].copy_from_slice(&h.body_bytes.to_be_bytes());
    b[48..52].copy_from_slice(&h.body_crc.to_be_bytes());
    let crc = crc32c::crc32c(&b[..52]);
    b[52..56].copy_from_slice(&crc.to_be_bytes());
    b
}

/// Writes `tree` and `sessions` as `dir/snapshot.<zxid>` (temp file, fsync, full check,
/// rename, directory fsync). Returns the final path.
pub fn write_snapshot(
    dir: &Path,
    tree: &DataTree,
    sessions: &[SessionRecord],
) -> io::Result<PathBuf> {
    write_checked_snapshot(dir, tree, sessions).map(|(path, _)| path)
}

/// As [`write_snapshot`], also returning the snapshot as loaded by the check, to be served.
/// A file that fails the check is removed and never renamed into place: every
/// `snapshot.<zxid>` passed the full check in the process that wrote it (docs/FORMAT.md,
/// "Loading", relies on it).
pub fn write_checked_snapshot(
    dir: &Path,
    tree: &DataTree,
    sessions: &[SessionRecord],
) -> io::Result<(PathBuf, LoadedSnapshot)> {
    fs::create_dir_all(dir)?;
    let zxid = tree.last_zxid();
    let final_path = dir.join(snapshot_name(zxid));
    let temp_path = dir.join(format!("{}.tmp", snapshot_name(zxid)));
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .read(true)
        .open(&temp_path)?;
    file.write_all(&[0u8; SNAPSHOT_HEADER_BYTES])?;
    let pacer = WritebackPacer::new(&file);
    let mut body = ChecksumWriter {
        inner: BufWriter::with_capacity(1 << 20, &mut file),
        crc: 0,
        bytes: 0,
        pacer,
    };
    let mut scratch = Vec::with_capacity(4096);
    for s in sessions {
        scratch.clear();
        scratch.put_i64(s.id);
        scratch.put_i32(s.timeout_ms);
        scratch.extend_from_slice(&s.password);
        body.write_all(&scratch)?;
    }
    let sessions_end = (SNAPSHOT_HEADER_BYTES + sessions.len() * SESSION_RECORD_BYTES) as u64;
    let nodes_at = sessions_end.next_multiple_of(frozen::RECORD_ALIGN as u64);
    body.write_all(&vec![0u8; (nodes_at - sessions_end) as usize])?;
    let mut writer = FrozenWriter::new(random_keys()?, nodes_at);
    // The walk reads the frozen part of the tree from its file once: let those pages go as it
    // goes, so the process does not end up holding the whole old file.
    let mut since_release = 0;
    let root_at = frozen::write_post_order(tree, &mut writer, &mut |record| {
        since_release += record.len();
        if since_release >= PROGRESS_INTERVAL_BYTES {
            tree.release_frozen_pages();
            since_release = 0;
        }
        body.write_all(record)
    })?;
    tree.release_frozen_pages();
    let node_count = writer.node_count();
    scratch.clear();
    writer
        .finish(root_at, &mut scratch)
        .map_err(io::Error::other)?;
    body.write_all(&scratch)?;
    body.flush()?;
    let header = SnapshotHeader {
        zxid,
        node_count,
        session_count: sessions.len() as u64,
        body_bytes: body.bytes,
        body_crc: body.crc,
    };
    drop(body);
    file.seek(SeekFrom::Start(0))?;
    file.write_all(&encode_header(&header))?;
    file.sync_all()?;
    drop(file);
    let loaded =
        check_then_rename(&temp_path, &final_path)?.map_err(|e| io::Error::other(e.to_string()))?;
    Ok((final_path, loaded))
}

/// Loads `temp` with the full check, then renames it to `final_path` and fsyncs the
/// directory. A file that fails the check is removed (the inner error); the outer one is a
/// failed rename or directory fsync.
pub fn check_then_rename(
    temp: &Path,
    final_path: &Path,
) -> io::Result<Result<LoadedSnapshot, SnapshotError>> {
    let loaded = match load_snapshot(temp, |_, _| {}) {
        Ok(l) => l,
        Err(e) => {
            let _ = fs::remove_file(temp);
            return Ok(Err(e));
        }
    };
    fs::rename(temp, final_path)?;
    let dir = final_path.parent().unwrap_or(Path::new("."));
    File::open(dir)?.sync_all()?;
    Ok(Ok(loaded))
}

/// Reads and checks a snapshot's header.
pub fn read_header(path: &Path, bytes: &[u8]) -> Result<SnapshotHeader, SnapshotError> {
    let corrupt = |offset: u64, reason: &str| SnapshotError::Corrupt {
        file: path.to_owned(),
        offset,
        reason: reason.to_owned(),
    };
    if bytes.len() < SNAPSHOT_HEADER_BYTES {
        return Err(corrupt(0, "shorter than its header"));
    }
    if &bytes[..7] != SNAPSHOT_MAGIC_PREFIX {
        return Err(corrupt(0, "bad magic"));
    }
    let u32_at = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    if crc32c::crc32c(&bytes[..52]) != u32_at(52) {
        return Err(corrupt(52, "header checksum mismatch"));
    }
    if u32_at(12) != 0 || u64_at(56) != 0 {
        return Err(corrupt(12, "reserved header bytes are not zero"));
    }
    let version = u32_at(8);
    if version != SNAPSHOT_FORMAT_VERSION || bytes[7] != b'0' + SNAPSHOT_FORMAT_VERSION as u8 {
        return Err(corrupt(8, &format!("unknown format version {version}")));
    }
    let header = SnapshotHeader {
        zxid: u64_at(16) as i64,
        node_count: u64_at(24),
        session_count: u64_at(32),
        body_bytes: u64_at(40),
        body_crc: u32_at(48),
    };
    if (bytes.len() - SNAPSHOT_HEADER_BYTES) as u64 != header.body_bytes {
        return Err(corrupt(40, "body length does not match the file size"));
    }
    Ok(header)
}

/// Fresh random keys for a file's path index.
fn random_keys() -> io::Result<(u64, u64)> {
    let mut key = [0u8; 16];
    getrandom::getrandom(&mut key).map_err(|e| io::Error::other(e.to_string()))?;
    Ok((
        u64::from_le_bytes(key[..8].try_into().expect("8 bytes")),
        u64::from_le_bytes(key[8..].try_into().expect("8 bytes")),
    ))
}

/// A checked snapshot: its sessions decoded, its tree served from the mapped file.
pub struct LoadedSnapshot {
    pub header: SnapshotHeader,
    pub tree: DataTree,
    pub sessions: Vec<SessionRecord>,
}

/// Maps and fully checks a snapshot (docs/FORMAT.md, "Loading"); the tree is served from the
/// mapping. `progress(done_bytes, total_bytes)` is called now and then for large files.
pub fn load_snapshot(
    path: &Path,
    progress: impl FnMut(u64, u64),
) -> Result<LoadedSnapshot, SnapshotError> {
    let (loaded, check) = map_snapshot(path, progress)?;
    check.run()?;
    Ok(loaded)
}

/// The structure check of a snapshot that start-up mapped with [`map_snapshot`].
#[derive(Debug)]
pub struct DeferredCheck {
    pub file: PathBuf,
    tree: Arc<FrozenTree>,
}

impl DeferredCheck {
    /// The full check (docs/FORMAT.md, "Loading", steps 3 and 4).
    pub fn run(&self) -> Result<(), SnapshotError> {
        self.tree.check().map_err(|c| SnapshotError::Corrupt {
            file: self.file.clone(),
            offset: c.offset,
            reason: c.reason,
        })
    }
}

/// Maps a snapshot and checks its header, both checksums, the trailer, the root and the
/// special nodes: what start-up needs. The rest of the structure is left to the returned
/// [`DeferredCheck`], which must run before anything else trusts the file.
pub fn map_snapshot(
    path: &Path,
    mut progress: impl FnMut(u64, u64),
) -> Result<(LoadedSnapshot, DeferredCheck), SnapshotError> {
    let file = File::open(path).map_err(|e| SnapshotError::Io(path.to_owned(), e))?;
    // SAFETY: snapshots are immutable once renamed into place: nothing writes to or
    // truncates them (purging unlinks, which leaves a mapping readable).
    let map = unsafe { memmap2::MmapOptions::new().map(&file) }
        .map_err(|e| SnapshotError::Io(path.to_owned(), e))?;
    let bytes: &[u8] = &map;
    let header = read_header(path, bytes)?;
    let body = &bytes[SNAPSHOT_HEADER_BYTES..];
    let mut crc = 0;
    for (i, chunk) in body.chunks(PROGRESS_INTERVAL_BYTES).enumerate() {
        crc = crc32c::crc32c_append(crc, chunk);
        if body.len() >= PROGRESS_INTERVAL_BYTES {
            progress(
                ((i + 1) * PROGRESS_INTERVAL_BYTES).min(body.len()) as u64,
                body.len() as u64,
            );
        }
    }
    let corrupt = |offset: u64, reason: String| SnapshotError::Corrupt {
        file: path.to_owned(),
        offset,
        reason,
    };
    if crc != header.body_crc {
        return Err(corrupt(
            SNAPSHOT_HEADER_BYTES as u64,
            "body checksum mismatch".into(),
        ));
    }
    let session_bytes = header
        .session_count
        .saturating_mul(SESSION_RECORD_BYTES as u64);
    if session_bytes > body.len() as u64 {
        return Err(corrupt(32, "session count larger than the file".into()));
    }
    let sessions = body[..session_bytes as usize]
        .chunks_exact(SESSION_RECORD_BYTES)
        .map(|r| SessionRecord {
            id: i64::from_be_bytes(r[..8].try_into().expect("8 bytes")),
            timeout_ms: i32::from_be_bytes(r[8..12].try_into().expect("4 bytes")),
            password: r[12..28].try_into().expect("16 bytes"),
        })
        .collect();
    let shape = BodyShape {
        header_bytes: SNAPSHOT_HEADER_BYTES,
        node_count: header.node_count,
        session_count: header.session_count,
    };
    let frozen = FrozenTree::map(Box::new(map), shape).map_err(|c| corrupt(c.offset, c.reason))?;
    // The checksum pass read every page; the check or the lookups read back what they need.
    frozen.release_resident_pages();
    let frozen = Arc::new(frozen);
    Ok((
        LoadedSnapshot {
            header,
            tree: DataTree::from_frozen(frozen.clone(), header.zxid),
            sessions,
        },
        DeferredCheck {
            file: path.to_owned(),
            tree: frozen,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::acl::open_acl_unsafe;
    use crate::core::tree::NodeKind;
    use crate::core::txn::{Txn, TxnHeader};

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("zoo-snap-test-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    /// A tree with a mix of node kinds, built through txns.
    fn sample_tree(seed: u64, count: usize) -> DataTree {
        let mut tree = DataTree::new();
        let mut state = seed;
        let mut paths: Vec<String> = vec!["/".into()];
        let mut zxid = 0;
        for i in 0..count {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let parent = paths[(state >> 33) as usize % paths.len()].clone();
            if tree.get(&parent).is_some_and(|n| n.ephemeral_owner != 0) {
                continue;
            }
            let p = crate::core::path::join(&parent, &format!("n{i}"));
            let owner = match state % 5 {
                0 => 77,
                1 => crate::core::tree::CONTAINER_OWNER,
                _ => 0,
            };
            let data = if state.is_multiple_of(7) {
                None
            } else {
                Some(vec![(state % 251) as u8; (state % 40) as usize])
            };
            zxid += 1;
            let parent_cversion = tree.get(&parent).unwrap().cversion + 1;
            let txn = Txn::Create {
                path: p.clone().into(),
                data: data.map(Into::into),
                acl: open_acl_unsafe().into(),
                ephemeral_owner: owner,
                parent_cversion,
            };
            apply_at(&mut tree, zxid, &txn);
            paths.push(p);
        }
        tree
    }

    fn assert_same_tree(a: &DataTree, b: &DataTree) {
        assert_eq!(a.node_count(), b.node_count());
        assert_eq!(a.last_zxid(), b.last_zxid());
        assert_eq!(a.data_bytes(), b.data_bytes());
        assert_eq!(a.ephemeral_owners(), b.ephemeral_owners());
        assert_eq!(a.containers().count(), b.containers().count());
        a.walk("/", &mut |p, node| {
            let other = b.get(p).unwrap_or_else(|| panic!("{p} missing after load"));
            assert_eq!(node.stat(), other.stat(), "{p}");
            assert_eq!(node.data, other.data, "{p}");
            assert_eq!(node.acl, other.acl, "{p}");
            let mine: Vec<_> = node.children.iter().collect();
            let theirs: Vec<_> = other.children.iter().collect();
            assert_eq!(mine, theirs, "{p}");
        });
    }

    #[test]
    fn snapshot_round_trip_equals_the_tree_for_many_seeds() {
        let dir = temp_dir("roundtrip");
        for seed in 0..20 {
            let tree = sample_tree(seed, 300);
            let sessions = vec![SessionRecord {
                id: 77,
                timeout_ms: 5000,
                password: [seed as u8; 16],
            }];
            let path = write_snapshot(&dir, &tree, &sessions).unwrap();
            let loaded = load_snapshot(&path, |_, _| {}).unwrap();
            assert_eq!(loaded.sessions, sessions);
            assert_same_tree(&tree, &loaded.tree);
            fs::remove_file(path).unwrap();
        }
    }

    #[test]
    fn a_snapshot_longer_than_the_writeback_interval_round_trips() {
        let dir = temp_dir("paced");
        let tree = sample_tree(7, 100_000);
        let path = write_snapshot(&dir, &tree, &[]).unwrap();
        let bytes = fs::metadata(&path).unwrap().len();
        assert!(
            bytes > 2 * crate::storage::writeback::SNAPSHOT_WRITEBACK_BYTES,
            "large enough that the writer starts writeback mid-file at least twice ({bytes} bytes)"
        );
        let loaded = load_snapshot(&path, |_, _| {}).unwrap();
        assert_same_tree(&tree, &loaded.tree);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_bit_flip_anywhere_is_detected() {
        let dir = temp_dir("flip");
        let tree = sample_tree(3, 50);
        let path = write_snapshot(&dir, &tree, &[]).unwrap();
        let good = fs::read(&path).unwrap();
        for at in (0..good.len()).step_by(7) {
            let mut bad = good.clone();
            bad[at] ^= 0x10;
            fs::write(&path, &bad).unwrap();
            assert!(
                matches!(
                    load_snapshot(&path, |_, _| {}),
                    Err(SnapshotError::Corrupt { .. })
                ),
                "flip at {at} went unnoticed"
            );
        }
    }

    #[test]
    fn truncated_snapshot_is_detected() {
        let dir = temp_dir("short");
        let tree = sample_tree(4, 50);
        let path = write_snapshot(&dir, &tree, &[]).unwrap();
        let good = fs::read(&path).unwrap();
        for cut in [0, 10, SNAPSHOT_HEADER_BYTES, good.len() / 2, good.len() - 1] {
            fs::write(&path, &good[..cut]).unwrap();
            assert!(load_snapshot(&path, |_, _| {}).is_err(), "cut at {cut}");
        }
    }

    /// Applies `count` random txns (creates, deletes, setData, setACL, session closes) to
    /// `tree`, valid for its current state.
    fn random_txns(tree: &mut DataTree, seed: u64, count: usize) {
        let mut state = seed;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            state >> 17
        };
        for _ in 0..count {
            let mut paths = Vec::new();
            tree.walk("/", &mut |p, _| paths.push(p.to_string()));
            let target = paths[next() as usize % paths.len()].clone();
            let node = tree.get(&target).unwrap().into_arc();
            let txn = match next() % 6 {
                0 | 1 if node.ephemeral_owner == 0 || node.kind() != NodeKind::Ephemeral(77) => {
                    if matches!(node.kind(), NodeKind::Ephemeral(_)) {
                        continue;
                    }
                    let p = crate::core::path::join(&target, &format!("x{}", next() % 50));
                    if tree.contains(&p) {
                        continue;
                    }
                    Txn::Create {
                        path: p.into(),
                        data: Some(vec![next() as u8; (next() % 30) as usize].into()),
                        acl: open_acl_unsafe().into(),
                        ephemeral_owner: if next() % 4 == 0 { 77 } else { 0 },
                        parent_cversion: node.cversion + 1,
                    }
                }
                2 if target.starts_with("/zookeeper") || target == "/" => continue,
                2 if node.children.is_empty() => Txn::Delete {
                    path: target.into(),
                },
                3 => Txn::SetData {
                    path: target.into(),
                    data: (next() % 3 != 0).then(|| vec![7u8; (next() % 20) as usize].into()),
                    version: node.version + 1,
                },
                4 => Txn::SetAcl {
                    path: target.into(),
                    acl: crate::core::acl::read_acl_unsafe().into(),
                    version: node.aversion + 1,
                },
                5 if next() % 8 == 0 => Txn::CloseSession { session_id: 77 },
                _ => continue,
            };
            apply_at(tree, tree.last_zxid() + 1, &txn);
        }
    }

    /// Applies `txn` as the txn with `zxid` (time derived from it).
    fn apply_at(tree: &mut DataTree, zxid: i64, txn: &Txn) {
        let header = TxnHeader {
            session_id: 1,
            xid: 1,
            zxid,
            time_ms: zxid * 10,
        };
        tree.apply(&header, txn, &mut Vec::new());
    }

    /// A frozen tree with changes on top behaves exactly like the same tree built in memory:
    /// the same txns applied to both give the same nodes, children, counts and indexes.
    #[test]
    fn changes_over_a_frozen_tree_equal_changes_in_memory() {
        let dir = temp_dir("overlay");
        for seed in 0..12 {
            let mut live = sample_tree(seed, 200);
            let path = write_snapshot(&dir, &live, &[]).unwrap();
            let mut restored = load_snapshot(&path, |_, _| {}).unwrap().tree;
            assert_eq!(restored.overlay_len(), 0, "nothing decoded at load");
            for step in 0..400 {
                random_txns(&mut live, seed + step * 1000, 1);
                random_txns(&mut restored, seed + step * 1000, 1);
                assert_eq!(
                    live.data_bytes(),
                    restored.data_bytes(),
                    "seed {seed} step {step} zxid {}",
                    live.last_zxid()
                );
            }
            assert_same_tree(&live, &restored);
            assert_eq!(live.ephemerals_of(77), restored.ephemerals_of(77));
            // A second generation: a snapshot of the layered tree round-trips too.
            let path2 = write_snapshot(&dir, &restored, &[]).unwrap();
            let again = load_snapshot(&path2, |_, _| {}).unwrap().tree;
            assert_same_tree(&live, &again);
            fs::remove_file(path).unwrap();
            fs::remove_file(path2).unwrap();
        }
    }

    /// Rewrites the body checksum (and so the header's) after a change, so the structural
    /// checks, not the checksum, must catch it.
    fn reseal(bytes: &mut [u8]) {
        let crc = crc32c::crc32c(&bytes[SNAPSHOT_HEADER_BYTES..]);
        bytes[48..52].copy_from_slice(&crc.to_be_bytes());
        let crc = crc32c::crc32c(&bytes[..52]);
        bytes[52..56].copy_from_slice(&crc.to_be_bytes());
    }

    /// A snapshot of a 60-node sample tree and one session: its path, its bytes and the paths
    /// of its nodes, for tests that damage it.
    fn snapshot_to_damage(name: &str, seed: u64) -> (PathBuf, Vec<u8>, Vec<String>) {
        let tree = sample_tree(seed, 60);
        let sessions = [SessionRecord {
            id: 77,
            timeout_ms: 4000,
            password: [1; 16],
        }];
        let path = write_snapshot(&temp_dir(name), &tree, &sessions).unwrap();
        let good = fs::read(&path).unwrap();
        let mut paths = Vec::new();
        tree.walk("/", &mut |p, _| paths.push(p.to_string()));
        (path, good, paths)
    }

    /// Every byte of the body changed with the checksums made to match: the load either
    /// reports corruption, or it gives a tree that every lookup and walk can read without a
    /// panic (the checks make lazy decoding infallible).
    #[test]
    fn a_resealed_change_anywhere_is_rejected_or_harmless() {
        let (path, good, paths) = snapshot_to_damage("reseal", 5);
        let (mut rejected, mut accepted) = (0, 0);
        for at in SNAPSHOT_HEADER_BYTES..good.len() {
            for flip in [0x01u8, 0x80] {
                let mut bad = good.clone();
                bad[at] ^= flip;
                reseal(&mut bad);
                fs::write(&path, &bad).unwrap();
                match load_snapshot(&path, |_, _| {}) {
                    Err(SnapshotError::Corrupt { .. }) => rejected += 1,
                    Err(e) => panic!("unexpected error {e}"),
                    Ok(loaded) => {
                        accepted += 1;
                        let t = &loaded.tree;
                        let mut seen = 0;
                        t.walk("/", &mut |_, n| {
                            seen += 1;
                            let _ = n.stat();
                        });
                        assert_eq!(seen, t.node_count(), "flip at {at}");
                        for p in &paths {
                            let _ = t.get(p).map(|n| n.children.iter().count());
                        }
                    }
                }
            }
        }
        assert!(
            rejected > 0 && accepted > 0,
            "{rejected} rejected, {accepted} accepted"
        );
    }

    /// Start-up serves a file that passed only `map_snapshot` while the full check runs in
    /// the background. For every resealed change that `map_snapshot` lets through, what
    /// start-up reads before the check (sessions, the special nodes, path lookups) works
    /// without a panic; some changes get past `map_snapshot` and only the background check
    /// catches them, which is what makes that check necessary.
    #[test]
    fn a_resealed_change_that_passes_the_start_up_checks_is_safe_to_restore_and_probe() {
        let (path, good, paths) = snapshot_to_damage("reseal-map", 9);
        let (mut at_start, mut in_background) = (0, 0);
        for at in SNAPSHOT_HEADER_BYTES..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x04;
            reseal(&mut bad);
            fs::write(&path, &bad).unwrap();
            match map_snapshot(&path, |_, _| {}) {
                Err(SnapshotError::Corrupt { .. }) => at_start += 1,
                Err(e) => panic!("unexpected error {e}"),
                Ok((loaded, check)) => {
                    let frozen = loaded
                        .tree
                        .frozen_tree()
                        .expect("served from the file")
                        .clone();
                    let specials: Vec<_> = frozen.special_nodes().collect();
                    let restored = crate::core::commit::CommitCore::restore(
                        crate::core::commit::CoreConfig::default(),
                        loaded.tree,
                        loaded
                            .sessions
                            .iter()
                            .map(|s| (s.id, s.timeout_ms, s.password)),
                        0,
                    );
                    assert_eq!(restored.tree().node_count(), frozen.node_count() as usize);
                    assert!(specials.iter().all(|(p, _)| p.starts_with('/')));
                    for p in &paths {
                        let _ = frozen.find(p);
                    }
                    if check.run().is_err() {
                        in_background += 1;
                    }
                }
            }
        }
        assert!(
            at_start > 0 && in_background > 0,
            "{at_start} refused at start, {in_background} by the background check"
        );
    }

    #[test]
    fn a_snapshot_that_fails_its_check_is_never_renamed_into_place() {
        let dir = temp_dir("check-rename");
        let tree = sample_tree(3, 20);
        let path = write_snapshot(&dir, &tree, &[]).unwrap();
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let temp = dir.join("snapshot.00000000000000ff.tmp");
        let final_path = dir.join("snapshot.00000000000000ff");
        fs::write(&temp, &bytes).unwrap();
        assert!(matches!(
            check_then_rename(&temp, &final_path).unwrap(),
            Err(SnapshotError::Corrupt { .. })
        ));
        assert!(!temp.exists() && !final_path.exists());
        fs::write(&temp, fs::read(&path).unwrap()).unwrap();
        assert!(check_then_rename(&temp, &final_path).unwrap().is_ok());
        assert!(!temp.exists() && final_path.exists());
    }

    #[test]
    fn temp_files_are_ignored_and_removed() {
        let dir = temp_dir("tmp");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("snapshot.0000000000000005.tmp"), b"partial").unwrap();
        fs::write(dir.join("snapshot.0000000000000003"), b"x").unwrap();
        let listed = list_snapshots(&dir, true).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].0, 3);
        assert!(!dir.join("snapshot.0000000000000005.tmp").exists());
    }
}
