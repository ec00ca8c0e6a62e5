//! Snapshots: one consistent state (tree and sessions) in an immutable, checksummed file
//! (layout and crash cases in docs/FORMAT.md). Written by a background thread from an O(1)
//! clone of the persistent tree; loaded by mapping the file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::core::tree::{DataTree, Node, TreeBuilder};
use crate::jute::records::{decode_acls, encode_acls};
use crate::jute::{Reader, Writer};

pub const SNAPSHOT_MAGIC: &[u8; 8] = b"ZOOSNAP1";
pub const SNAPSHOT_FORMAT_VERSION: u32 = 1;
pub const SNAPSHOT_HEADER_BYTES: usize = 64;
/// Largest string or buffer accepted inside a snapshot.
const SNAPSHOT_FIELD_BYTES_MAX: usize = 64 * 1024 * 1024;
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

/// Snapshots in `dir`, newest first. Leftover `.tmp` files from a crash are removed.
pub fn list_snapshots(dir: &Path) -> io::Result<Vec<(i64, PathBuf)>> {
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
            let _ = fs::remove_file(entry.path());
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
}

impl<W: Write> Write for ChecksumWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn encode_node(p: &str, node: &Node, out: &mut Vec<u8>) {
    out.put_ustring(p);
    match &node.data {
        Some(d) => out.put_buffer(d),
        None => out.put_null_buffer(),
    }
    encode_acls(&node.acl, out);
    out.put_i64(node.czxid);
    out.put_i64(node.mzxid);
    out.put_i64(node.ctime);
    out.put_i64(node.mtime);
    out.put_i32(node.version);
    out.put_i32(node.cversion);
    out.put_i32(node.aversion);
    out.put_i64(node.ephemeral_owner);
    out.put_i64(node.pzxid);
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

/// Writes `tree` and `sessions` as `dir/snapshot.<zxid>` (temp file, fsync, rename, directory
/// fsync). Returns the final path.
pub fn write_snapshot(
    dir: &Path,
    tree: &DataTree,
    sessions: &[SessionRecord],
) -> io::Result<PathBuf> {
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
    let mut body = ChecksumWriter {
        inner: BufWriter::with_capacity(1 << 20, &mut file),
        crc: 0,
        bytes: 0,
    };
    let mut scratch = Vec::with_capacity(4096);
    for s in sessions {
        scratch.clear();
        scratch.put_i64(s.id);
        scratch.put_i32(s.timeout_ms);
        scratch.extend_from_slice(&s.password);
        body.write_all(&scratch)?;
    }
    let mut node_count = 0u64;
    let mut result = Ok(());
    tree.walk("/", &mut |p, node| {
        if result.is_err() {
            return;
        }
        scratch.clear();
        encode_node(p, node, &mut scratch);
        node_count += 1;
        result = body.write_all(&scratch);
    });
    result?;
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
    fs::rename(&temp_path, &final_path)?;
    File::open(dir)?.sync_all()?;
    Ok(final_path)
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
    if &bytes[..8] != SNAPSHOT_MAGIC {
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
    if version != SNAPSHOT_FORMAT_VERSION {
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

/// The decoded content of a snapshot.
pub struct LoadedSnapshot {
    pub header: SnapshotHeader,
    pub tree: DataTree,
    pub sessions: Vec<SessionRecord>,
}

/// Maps, verifies and decodes a snapshot. `progress(done_bytes, total_bytes)` is called now
/// and then for large files.
pub fn load_snapshot(
    path: &Path,
    mut progress: impl FnMut(u64, u64),
) -> Result<LoadedSnapshot, SnapshotError> {
    let file = File::open(path).map_err(|e| SnapshotError::Io(path.to_owned(), e))?;
    // SAFETY: snapshots are immutable once renamed into place; nothing writes to them.
    let map =
        unsafe { memmap2::Mmap::map(&file) }.map_err(|e| SnapshotError::Io(path.to_owned(), e))?;
    let bytes: &[u8] = &map;
    let header = read_header(path, bytes)?;
    let body = &bytes[SNAPSHOT_HEADER_BYTES..];
    if crc32c::crc32c(body) != header.body_crc {
        return Err(SnapshotError::Corrupt {
            file: path.to_owned(),
            offset: SNAPSHOT_HEADER_BYTES as u64,
            reason: "body checksum mismatch".into(),
        });
    }
    let mut reader = Reader::new(body, SNAPSHOT_FIELD_BYTES_MAX);
    let corrupt = |reader: &Reader<'_>, reason: String| SnapshotError::Corrupt {
        file: path.to_owned(),
        offset: (SNAPSHOT_HEADER_BYTES + reader.position()) as u64,
        reason,
    };
    let session_bytes = header.session_count.saturating_mul(28);
    if session_bytes > body.len() as u64 {
        return Err(corrupt(
            &reader,
            "session count larger than the file".into(),
        ));
    }
    let mut sessions = Vec::with_capacity(header.session_count as usize);
    for _ in 0..header.session_count {
        let id = reader
            .read_i64()
            .map_err(|e| corrupt(&reader, e.to_string()))?;
        let timeout_ms = reader
            .read_i32()
            .map_err(|e| corrupt(&reader, e.to_string()))?;
        let mut password = [0u8; 16];
        for b in password.iter_mut() {
            *b = reader
                .read_u8()
                .map_err(|e| corrupt(&reader, e.to_string()))?;
        }
        sessions.push(SessionRecord {
            id,
            timeout_ms,
            password,
        });
    }
    let mut builder = TreeBuilder::new();
    let mut next_report = PROGRESS_INTERVAL_BYTES;
    for index in 0..header.node_count {
        let at = reader.position();
        let (p, node) = decode_node(&mut reader).map_err(|e| corrupt(&reader, e.to_string()))?;
        if index == 0 && p != "/" {
            return Err(corrupt(&reader, "the first node is not the root".into()));
        }
        if let Err(reason) = builder.push(&p, node) {
            return Err(SnapshotError::Corrupt {
                file: path.to_owned(),
                offset: (SNAPSHOT_HEADER_BYTES + at) as u64,
                reason: reason.into(),
            });
        }
        if reader.position() >= next_report {
            progress(reader.position() as u64, body.len() as u64);
            next_report += PROGRESS_INTERVAL_BYTES;
        }
    }
    if !reader.is_empty() {
        return Err(corrupt(&reader, "bytes after the last node".into()));
    }
    if body.len() >= PROGRESS_INTERVAL_BYTES {
        progress(body.len() as u64, body.len() as u64);
    }
    let tree = builder
        .finish(header.zxid)
        .map_err(|reason| SnapshotError::Corrupt {
            file: path.to_owned(),
            offset: bytes.len() as u64,
            reason: reason.into(),
        })?;
    Ok(LoadedSnapshot {
        header,
        tree,
        sessions,
    })
}

fn decode_node(r: &mut Reader<'_>) -> crate::jute::DecodeResult<(String, Node)> {
    let p = r.read_ustring()?;
    let data = r.read_buffer()?.map(Arc::from);
    let acl = Arc::new(decode_acls(r)?);
    let node = Node {
        data,
        acl,
        czxid: r.read_i64()?,
        mzxid: r.read_i64()?,
        ctime: r.read_i64()?,
        mtime: r.read_i64()?,
        version: r.read_i32()?,
        cversion: r.read_i32()?,
        aversion: r.read_i32()?,
        ephemeral_owner: r.read_i64()?,
        pzxid: r.read_i64()?,
        children: Default::default(),
    };
    Ok((p, node))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::acl::open_acl_unsafe;
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
                path: p.clone(),
                data,
                acl: open_acl_unsafe(),
                ephemeral_owner: owner,
                parent_cversion,
            };
            tree.apply(
                &TxnHeader {
                    session_id: 1,
                    xid: 1,
                    zxid,
                    time_ms: zxid * 10,
                },
                &txn,
                &mut Vec::new(),
            );
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

    #[test]
    fn temp_files_are_ignored_and_removed() {
        let dir = temp_dir("tmp");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("snapshot.0000000000000005.tmp"), b"partial").unwrap();
        fs::write(dir.join("snapshot.0000000000000003"), b"x").unwrap();
        let listed = list_snapshots(&dir).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].0, 3);
        assert!(!dir.join("snapshot.0000000000000005.tmp").exists());
    }
}
