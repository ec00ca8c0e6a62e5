//! The transaction log: segment files of checksummed records (layout and crash cases in
//! docs/FORMAT.md). One append and one fdatasync per commit batch.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use crate::core::txn::{Txn, TxnHeader};
use crate::jute::Reader;

pub const SEGMENT_MAGIC: &[u8; 8] = b"ZOOTXLOG";
pub const FORMAT_VERSION: u32 = 1;
pub const SEGMENT_HEADER_BYTES: usize = 32;
pub const RECORD_HEADER_BYTES: usize = 16;
/// Largest record payload accepted when reading (a txn carries at most jute.maxbuffer of data
/// plus its path and ACL; a multi can hold several).
pub const RECORD_BYTES_MAX: usize = 64 * 1024 * 1024;
/// A segment is closed and a new one started once it passes this size.
pub const LOG_SEGMENT_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// How much of a segment's tail is examined to tell a torn record from preallocated zeros.
const TORN_TAIL_WINDOW_BYTES: usize = 64 * 1024;

const _: () = assert!(SEGMENT_HEADER_BYTES == 8 + 4 + 4 + 8 + 4 + 4);

/// Where a log is found corrupt.
#[derive(Debug)]
pub struct Corruption {
    pub file: PathBuf,
    pub offset: u64,
    pub reason: String,
}

impl std::fmt::Display for Corruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} at byte {}: {}",
            self.file.display(),
            self.offset,
            self.reason
        )
    }
}

#[derive(Debug)]
pub enum RecoveryError {
    Io(PathBuf, io::Error),
    Corrupt(Corruption),
}

impl std::fmt::Display for RecoveryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecoveryError::Io(p, e) => write!(f, "cannot read {}: {e}", p.display()),
            RecoveryError::Corrupt(c) => write!(f, "transaction log is corrupt: {c}"),
        }
    }
}

impl std::error::Error for RecoveryError {}

pub fn log_directory(data_log_dir: &Path) -> PathBuf {
    data_log_dir.join("version-zoo")
}

pub fn segment_name(first_zxid: i64) -> String {
    format!("log.{:016x}", first_zxid)
}

pub fn segment_header(first_zxid: i64) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut h = [0u8; SEGMENT_HEADER_BYTES];
    h[..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_be_bytes());
    h[16..24].copy_from_slice(&first_zxid.to_be_bytes());
    let crc = crc32c::crc32c(&h[..24]);
    h[24..28].copy_from_slice(&crc.to_be_bytes());
    h
}

/// Appends one record (header + txn) to `out`.
pub fn encode_record(header: &TxnHeader, txn: &Txn, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0u8; 8]);
    out.extend_from_slice(&header.zxid.to_be_bytes());
    header.encode(out);
    txn.encode(out);
    let payload_len = out.len() - start - RECORD_HEADER_BYTES;
    assert!(
        payload_len > 0 && payload_len <= RECORD_BYTES_MAX,
        "record fits the format"
    );
    let crc = crc32c::crc32c(&out[start + 8..]);
    out[start..start + 4].copy_from_slice(&(payload_len as u32).to_be_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_be_bytes());
}

/// Decodes a record's payload (header and txn) for `zxid`; trailing bytes are an error.
pub fn decode_payload(zxid: i64, payload: &[u8]) -> Result<(TxnHeader, Txn), String> {
    let mut reader = Reader::new(payload, RECORD_BYTES_MAX);
    let decoded =
        TxnHeader::decode(zxid, &mut reader).and_then(|h| Txn::decode(&mut reader).map(|t| (h, t)));
    match decoded {
        Ok(v) if reader.is_empty() => Ok(v),
        Ok(_) => Err("trailing bytes in record".into()),
        Err(e) => Err(format!("undecodable txn: {e}")),
    }
}

/// The zxid a record's header names, unchecked (`None` for a record shorter than its header).
pub fn record_zxid(record: &[u8]) -> Option<i64> {
    let bytes = record.get(8..16)?;
    Some(i64::from_be_bytes(bytes.try_into().expect("8 bytes")))
}

/// Checks and decodes exactly one whole record as `encode_record` wrote it (length, CRC32C,
/// zxid, payload): how a replicated server takes entries from another server.
pub fn decode_record(record: &[u8]) -> Result<(TxnHeader, Txn), String> {
    if record.len() < RECORD_HEADER_BYTES {
        return Err("record shorter than its header".into());
    }
    let length = u32::from_be_bytes(record[0..4].try_into().expect("4 bytes")) as usize;
    if length > RECORD_BYTES_MAX || RECORD_HEADER_BYTES + length != record.len() {
        return Err("record length does not match".into());
    }
    let crc = u32::from_be_bytes(record[4..8].try_into().expect("4 bytes"));
    if crc != crc32c::crc32c(&record[8..]) {
        return Err("record checksum mismatch".into());
    }
    let zxid = i64::from_be_bytes(record[8..16].try_into().expect("8 bytes"));
    decode_payload(zxid, &record[RECORD_HEADER_BYTES..])
}

/// Segment files in `dir`, ordered by first zxid.
pub fn list_segments(dir: &Path) -> Result<Vec<(i64, PathBuf)>, RecoveryError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(RecoveryError::Io(dir.to_owned(), e)),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(hex) = name.strip_prefix("log.") else {
            continue;
        };
        if let Ok(zxid) = i64::from_str_radix(hex, 16) {
            out.push((zxid, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Reads every record of every segment, in order, calling `apply` for each. A torn tail of
/// the last segment is truncated; corruption anywhere else is an error.
pub fn recover(
    dir: &Path,
    apply: impl FnMut(TxnHeader, Txn),
) -> Result<RecoveryStats, RecoveryError> {
    recover_after(dir, 0, apply)
}

/// As `recover`, but records up to and including `after_zxid` (already in a snapshot) are
/// skipped: segments that end before `after_zxid + 1` are not read at all (their successor's
/// name says so), and in the segment holding it the earlier records are checked (length,
/// checksum, zxid order) but not decoded. The first record applied must be `after_zxid + 1`.
pub fn recover_after(
    dir: &Path,
    after_zxid: i64,
    apply: impl FnMut(TxnHeader, Txn),
) -> Result<RecoveryStats, RecoveryError> {
    let segments = list_segments(dir)?;
    scan(&segments, after_zxid, Repair::TruncateTornTail, apply)
}

/// Removes every record with a zxid above `after` from the log in `dir`, in place: segments
/// that start above it are deleted (newest first), the segment holding `after` is cut right
/// after that record and fsynced, then the directory is fsynced. Used by a replicated server
/// whose uncommitted tail conflicted with the leader's (docs/FORMAT.md, "Diverged log"). A
/// crash part-way leaves a prefix of the discarded records, which are uncommitted and will be
/// discarded again; records at or below `after` are never touched.
pub fn truncate_after(dir: &Path, after: i64) -> io::Result<()> {
    let segments = list_segments(dir).map_err(|e| io::Error::other(e.to_string()))?;
    for (first, path) in segments.iter().rev() {
        if *first > after {
            fs::remove_file(path)?;
            continue;
        }
        let bytes = fs::read(path)?;
        let mut offset = SEGMENT_HEADER_BYTES.min(bytes.len());
        let cut = loop {
            if bytes.len() - offset < RECORD_HEADER_BYTES {
                break None;
            }
            let length = u32::from_be_bytes(bytes[offset..offset + 4].try_into().expect("4"));
            let length = length as usize;
            if length == 0 || bytes.len() - offset < RECORD_HEADER_BYTES + length {
                break None;
            }
            let zxid = i64::from_be_bytes(bytes[offset + 8..offset + 16].try_into().expect("8"));
            if zxid > after {
                break Some(offset);
            }
            offset += RECORD_HEADER_BYTES + length;
        };
        if let Some(cut) = cut {
            let file = OpenOptions::new().write(true).open(path)?;
            file.set_len(cut as u64)?;
            file.sync_all()?;
        }
        break;
    }
    File::open(dir)?.sync_all()
}

/// Whether a scan may change the files it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repair {
    /// Start-up: cut a torn tail off the last segment, remove a header-less last segment.
    TruncateTornTail,
    /// Tools: change nothing; a torn tail is only reported.
    ReadOnly,
}

/// Reads `segments` (ordered by first zxid) record by record; see `recover_after`.
pub fn scan(
    segments: &[(i64, PathBuf)],
    after_zxid: i64,
    repair: Repair,
    mut apply: impl FnMut(TxnHeader, Txn),
) -> Result<RecoveryStats, RecoveryError> {
    let mut stats = RecoveryStats::default();
    let mut last_zxid = 0i64;
    // A segment holds the zxids from its name up to its successor's name: every segment
    // before the newest one that starts at or below `after_zxid + 1` holds only txns the
    // state already has. (With a long history kept, reading them cost as much as the replay.)
    let first_needed = segments
        .iter()
        .rposition(|(first, _)| *first <= after_zxid.saturating_add(1))
        .unwrap_or(0);
    for (index, (_first, path)) in segments.iter().enumerate().skip(first_needed) {
        let is_last = index + 1 == segments.len();
        let file = File::open(path).map_err(|e| RecoveryError::Io(path.clone(), e))?;
        // Mapped, not read: a preallocated segment is mostly zeros that are never touched.
        // SAFETY: log segments are only appended to by this process, which is not running yet.
        let map =
            unsafe { memmap2::Mmap::map(&file) }.map_err(|e| RecoveryError::Io(path.clone(), e))?;
        let bytes: &[u8] = &map;
        let corrupt = |offset: usize, reason: String| {
            RecoveryError::Corrupt(Corruption {
                file: path.clone(),
                offset: offset as u64,
                reason,
            })
        };
        if bytes.len() < SEGMENT_HEADER_BYTES
            || &bytes[..8] != SEGMENT_MAGIC
            || crc32c::crc32c(&bytes[..24]) != u32::from_be_bytes(bytes[24..28].try_into().unwrap())
        {
            let never_written = bytes.len() <= SEGMENT_HEADER_BYTES
                || bytes[..SEGMENT_HEADER_BYTES].iter().all(|b| *b == 0);
            if is_last && never_written {
                // Crashed while creating the segment: it never held a record.
                if repair == Repair::TruncateTornTail {
                    fs::remove_file(path).map_err(|e| RecoveryError::Io(path.clone(), e))?;
                }
                stats.torn_tail_truncated = true;
                continue;
            }
            return Err(corrupt(0, "bad segment header".into()));
        }
        let version = u32::from_be_bytes(bytes[8..12].try_into().unwrap());
        if version != FORMAT_VERSION {
            return Err(corrupt(8, format!("unknown format version {version}")));
        }
        let mut offset = SEGMENT_HEADER_BYTES;
        let end_of_records = loop {
            if bytes.len() - offset < 4 {
                break offset;
            }
            let length = u32::from_be_bytes(bytes[offset..offset + 4].try_into().unwrap()) as usize;
            if length == 0 {
                break offset;
            }
            let problem = if length > RECORD_BYTES_MAX {
                Some(format!("record length {length} exceeds {RECORD_BYTES_MAX}"))
            } else if bytes.len() - offset < RECORD_HEADER_BYTES + length {
                Some("record extends past the end of the file".to_owned())
            } else {
                let stored = u32::from_be_bytes(bytes[offset + 4..offset + 8].try_into().unwrap());
                let actual =
                    crc32c::crc32c(&bytes[offset + 8..offset + RECORD_HEADER_BYTES + length]);
                (stored != actual).then(|| "record checksum mismatch".to_owned())
            };
            if let Some(reason) = problem {
                if is_last {
                    break offset;
                }
                return Err(corrupt(offset, reason));
            }
            let zxid = i64::from_be_bytes(bytes[offset + 8..offset + 16].try_into().unwrap());
            if zxid <= last_zxid {
                return Err(corrupt(
                    offset,
                    format!("zxid {zxid:#x} after {last_zxid:#x}"),
                ));
            }
            if zxid > after_zxid {
                let payload =
                    &bytes[offset + RECORD_HEADER_BYTES..offset + RECORD_HEADER_BYTES + length];
                let (header, txn) =
                    decode_payload(zxid, payload).map_err(|reason| corrupt(offset, reason))?;
                // Dense within a term; a new term (leader) starts its counter at 1.
                let continues = zxid == after_zxid + 1
                    || (zxid & 0xffff_ffff == 1 && zxid >> 32 > after_zxid >> 32);
                if stats.records == 0 && !continues {
                    return Err(corrupt(
                        offset,
                        format!(
                            "the log resumes at zxid {zxid:#x}, but the state ends at {after_zxid:#x}: txns are missing"
                        ),
                    ));
                }
                apply(header, txn);
                stats.records += 1;
            }
            last_zxid = zxid;
            offset += RECORD_HEADER_BYTES + length;
        };
        if end_of_records < bytes.len() && repair == Repair::ReadOnly {
            let window_end = bytes.len().min(end_of_records + TORN_TAIL_WINDOW_BYTES);
            stats.torn_tail_truncated |= bytes[end_of_records..window_end].iter().any(|b| *b != 0);
        } else if end_of_records < bytes.len() {
            // Look at the tail before cutting it off: the mapping must not be read past the
            // new end of the file.
            // Only the start of the tail is looked at: the rest of a preallocated segment is
            // zeros that need not be paged in.
            let window_end = bytes.len().min(end_of_records + TORN_TAIL_WINDOW_BYTES);
            let torn = bytes[end_of_records..window_end].iter().any(|b| *b != 0);
            // A torn tail in the last segment: drop it so that appends continue cleanly.
            let file = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| RecoveryError::Io(path.clone(), e))?;
            file.set_len(end_of_records as u64)
                .and_then(|_| file.sync_all())
                .map_err(|e| RecoveryError::Io(path.clone(), e))?;
            stats.torn_tail_truncated |= torn;
        }
    }
    stats.last_zxid = last_zxid.max(after_zxid);
    stats.segments = segments.len();
    Ok(stats)
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryStats {
    pub segments: usize,
    pub records: u64,
    pub last_zxid: i64,
    pub torn_tail_truncated: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_after_cuts_in_place_and_keeps_everything_at_or_below() {
        let dir = temp_dir("truncate-after");
        fs::create_dir_all(&dir).unwrap();
        let write_segment = |first: i64, zxids: &[i64]| {
            let mut bytes = segment_header(first).to_vec();
            for z in zxids {
                encode_record(&header(*z), &Txn::Check, &mut bytes);
            }
            bytes.extend_from_slice(&[0u8; 64]);
            fs::write(dir.join(segment_name(first)), bytes).unwrap();
        };
        write_segment(1, &[1, 2, 3]);
        write_segment(4, &[4, 0x2_0000_0001]);
        write_segment(0x2_0000_0002, &[0x2_0000_0002]);
        truncate_after(&dir, 2).unwrap();
        let mut seen = Vec::new();
        recover(&dir, |h, _| seen.push(h.zxid)).unwrap();
        assert_eq!(seen, vec![1, 2]);
        // Idempotent, and a no-op when nothing is above.
        truncate_after(&dir, 2).unwrap();
        truncate_after(&dir, 9).unwrap();
        let mut again = Vec::new();
        recover(&dir, |h, _| again.push(h.zxid)).unwrap();
        assert_eq!(again, vec![1, 2]);
        let _ = fs::remove_dir_all(&dir);
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("zoo-log-test-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn header(zxid: i64) -> TxnHeader {
        TxnHeader {
            session_id: 1,
            xid: 2,
            zxid,
            time_ms: 3,
        }
    }

    /// Writes one segment holding `zxids`, laid out as the log writer lays it out.
    fn write_records(dir: &Path, zxids: std::ops::RangeInclusive<i64>) -> PathBuf {
        fs::create_dir_all(dir).unwrap();
        let path = dir.join(segment_name(*zxids.start()));
        let mut bytes = segment_header(*zxids.start()).to_vec();
        for zxid in zxids {
            let txn = Txn::Delete {
                path: format!("/n{zxid}").into(),
            };
            encode_record(&header(zxid), &txn, &mut bytes);
        }
        fs::write(&path, bytes).unwrap();
        path
    }

    fn replay(dir: &Path) -> Result<Vec<i64>, RecoveryError> {
        let mut seen = Vec::new();
        recover(dir, |h, _| seen.push(h.zxid))?;
        Ok(seen)
    }

    #[test]
    fn records_replay_in_order() {
        let dir = temp_dir("order");
        write_records(&dir, 1..=5);
        assert_eq!(replay(&dir).unwrap(), vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn torn_tail_at_every_byte_is_truncated_and_earlier_records_survive() {
        let dir = temp_dir("torn");
        let path = write_records(&dir, 1..=3);
        let full = fs::read(&path).unwrap();
        let record_len = (full.len() - SEGMENT_HEADER_BYTES) / 3;
        let last_start = full.len() - record_len;
        for cut in last_start + 1..full.len() {
            fs::write(&path, &full[..cut]).unwrap();
            assert_eq!(replay(&dir).unwrap(), vec![1, 2], "cut at {cut}");
            assert_eq!(fs::metadata(&path).unwrap().len() as usize, last_start);
        }
    }

    #[test]
    fn bit_flip_in_an_older_segment_is_reported_with_file_and_offset() {
        let dir = temp_dir("flip");
        let first = write_records(&dir, 1..=2);
        write_records(&dir, 3..=3);
        let mut bytes = fs::read(&first).unwrap();
        let at = SEGMENT_HEADER_BYTES + 20;
        bytes[at] ^= 0x40;
        fs::write(&first, &bytes).unwrap();
        match replay(&dir) {
            Err(RecoveryError::Corrupt(c)) => {
                assert_eq!(c.file, first);
                assert_eq!(c.offset, SEGMENT_HEADER_BYTES as u64);
            }
            other => panic!("expected corruption, got {other:?}"),
        }
    }

    /// Recovery after a snapshot reads only the segments that can hold later txns: damage
    /// in a segment wholly before the snapshot does not stop a start (it is never read),
    /// while a start from the beginning still reports it.
    #[test]
    fn segments_wholly_before_the_snapshot_are_not_read() {
        let dir = temp_dir("skip");
        let first = write_records(&dir, 1..=3);
        write_records(&dir, 4..=6);
        write_records(&dir, 7..=8);
        fs::write(&first, b"not a segment at all").unwrap();
        let mut seen = Vec::new();
        recover_after(&dir, 5, |h, _| seen.push(h.zxid)).unwrap();
        assert_eq!(seen, vec![6, 7, 8]);
        seen.clear();
        recover_after(&dir, 3, |h, _| seen.push(h.zxid)).unwrap();
        assert_eq!(seen, vec![4, 5, 6, 7, 8], "a snapshot at a segment's end");
        assert!(matches!(replay(&dir), Err(RecoveryError::Corrupt(_))));
    }

    #[test]
    fn a_last_segment_whose_header_was_never_written_is_removed() {
        let dir = temp_dir("unwritten");
        write_records(&dir, 1..=3);
        let empty = dir.join(segment_name(4));
        fs::write(&empty, vec![0u8; 4096]).unwrap();
        assert_eq!(replay(&dir).unwrap(), vec![1, 2, 3]);
        assert!(!empty.exists());
    }
}
