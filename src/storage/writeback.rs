//! Starting the writeback of a large file as it is written, so that its final fsync does not
//! hand the disk the whole file at once.
//!
//! A snapshot is written to the page cache and made durable by one fsync at the end
//! (docs/FORMAT.md, "Write protocol"). Left alone, the kernel holds most of a file of
//! hundreds of megabytes dirty until that fsync, which then queues all of it on the device
//! at once. The transaction log's `fdatasync` on the commit path waits behind that queue (and
//! its cache flush behind the data), so every write acknowledged during those milliseconds
//! pays for them: with the log on the same disk, `write-heavy` at a fixed 15,000 ops/s saw
//! its p99 jump to 40–80 ms in each second that ended a snapshot of a 650k-node tree.
//!
//! [`WritebackPacer`] asks the kernel (`sync_file_range(SYNC_FILE_RANGE_WRITE)`) to start
//! writing out the file's dirty pages every [`SNAPSHOT_WRITEBACK_BYTES`]: the disk then sees
//! a steady stream of small requests while the file is being written, and the final fsync
//! finds little left to do. This is a scheduling hint only. It never waits and promises
//! nothing; durability still comes from the fsync, so a failure here is ignored.

use std::os::fd::{AsRawFd, RawFd};

/// Bytes written to a snapshot file between two requests to start their writeback.
pub const SNAPSHOT_WRITEBACK_BYTES: u64 = 4 << 20;

/// Counts the bytes written to one file and starts their writeback every
/// [`SNAPSHOT_WRITEBACK_BYTES`]. Holds the file's descriptor, not the file: the caller
/// keeps the file open for as long as it feeds the pacer.
pub struct WritebackPacer {
    fd: RawFd,
    since_start: u64,
    /// How many times writeback was requested (for tests).
    pub starts: u64,
}

impl WritebackPacer {
    pub fn new(file: &std::fs::File) -> WritebackPacer {
        WritebackPacer {
            fd: file.as_raw_fd(),
            since_start: 0,
            starts: 0,
        }
    }

    /// Notes `bytes` more written; past the interval, starts the writeback of every dirty
    /// page of the file (bytes still in a caller's buffer follow with the next request or
    /// the fsync).
    pub fn wrote(&mut self, bytes: usize) {
        self.since_start += bytes as u64;
        if self.since_start < SNAPSHOT_WRITEBACK_BYTES {
            return;
        }
        self.since_start = 0;
        self.starts += 1;
        // SAFETY: sync_file_range takes a descriptor and integers; offset 0 with length 0
        // means the whole file. The descriptor is open: the caller holds the file.
        unsafe {
            libc::sync_file_range(self.fd, 0, 0, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
}

/// Writes `data` to `file` in pieces of [`SNAPSHOT_WRITEBACK_BYTES`], starting each piece's
/// writeback as it goes.
pub fn write_paced(file: &mut std::fs::File, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut pacer = WritebackPacer::new(file);
    for piece in data.chunks(SNAPSHOT_WRITEBACK_BYTES as usize) {
        file.write_all(piece)?;
        pacer.wrote(piece.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom, Write};

    fn temp_file(name: &str) -> (std::path::PathBuf, std::fs::File) {
        let dir = std::env::temp_dir().join(format!("zoo-writeback-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("file");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        (dir, file)
    }

    #[test]
    fn writeback_is_requested_once_per_interval_and_the_bytes_are_unchanged() {
        let (dir, mut file) = temp_file("interval");
        let mut pacer = WritebackPacer::new(&file);
        let piece: Vec<u8> = (0..1_000_003u32).map(|i| (i % 251) as u8).collect();
        let mut written = 0u64;
        for _ in 0..10 {
            file.write_all(&piece).unwrap();
            pacer.wrote(piece.len());
            written += piece.len() as u64;
        }
        assert_eq!(pacer.starts, written / SNAPSHOT_WRITEBACK_BYTES);
        assert_eq!(pacer.starts, 2, "10 MB at one start per 4 MiB");
        file.sync_all().unwrap();
        let mut back = Vec::new();
        file.seek(SeekFrom::Start(0)).unwrap();
        file.read_to_end(&mut back).unwrap();
        assert_eq!(back.len() as u64, written);
        assert!(back.chunks(piece.len()).all(|c| c == piece.as_slice()));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_paced_write_holds_exactly_the_data() {
        let (dir, mut file) = temp_file("paced");
        let data: Vec<u8> = (0..(9 << 20) + 17u32)
            .map(|i| (i * 7 % 253) as u8)
            .collect();
        write_paced(&mut file, &data).unwrap();
        file.sync_all().unwrap();
        let mut back = Vec::new();
        file.seek(SeekFrom::Start(0)).unwrap();
        file.read_to_end(&mut back).unwrap();
        assert!(back == data);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
