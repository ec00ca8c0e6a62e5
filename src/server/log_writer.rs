//! The commit executor's log writer: appends each batch's records to the current segment and
//! makes them durable with one `fdatasync`, both through io_uring (glommio's `BufferedFile`).
//! Segments are preallocated so that a sync rarely has to flush file-size metadata.
//!
//! Failpoints for crash tests (read once at start, from the environment):
//! * `ZOO_FAILPOINT_FSYNC_FAIL_AFTER=N`: the sync after N successful ones fails with EIO.
//! * `ZOO_FAILPOINT_ENOSPC_AFTER_BYTES=N`: appends fail with ENOSPC once N record bytes
//!   have been written.

use std::io;
use std::path::{Path, PathBuf};

use glommio::io::BufferedFile;

use crate::storage::log::{
    LOG_SEGMENT_BYTES_MAX, SEGMENT_HEADER_BYTES, segment_header, segment_name,
};

fn to_io(e: glommio::GlommioError<()>) -> io::Error {
    io::Error::other(e.to_string())
}

#[derive(Debug, Default, Clone, Copy)]
struct Failpoints {
    fsync_fail_after: Option<u64>,
    enospc_after_bytes: Option<u64>,
}

impl Failpoints {
    fn from_env() -> Failpoints {
        let read = |key: &str| std::env::var(key).ok().and_then(|v| v.parse::<u64>().ok());
        Failpoints {
            fsync_fail_after: read("ZOO_FAILPOINT_FSYNC_FAIL_AFTER"),
            enospc_after_bytes: read("ZOO_FAILPOINT_ENOSPC_AFTER_BYTES"),
        }
    }
}

pub struct LogWriter {
    dir: PathBuf,
    file: BufferedFile,
    /// Where the next record goes.
    position: u64,
    /// Bytes reserved for the segment (preallocated).
    capacity: u64,
    pub syncs: u64,
    pub sync_micros_total: u64,
    pub sync_micros_max: u64,
    record_bytes_total: u64,
    failpoints: Failpoints,
}

async fn write_all_at(
    file: &BufferedFile,
    mut bytes: Vec<u8>,
    mut position: u64,
) -> io::Result<()> {
    while !bytes.is_empty() {
        let length = bytes.len();
        let written = file
            .write_at(bytes.clone(), position)
            .await
            .map_err(to_io)?;
        if written == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "log write made no progress",
            ));
        }
        position += written as u64;
        bytes = if written == length {
            Vec::new()
        } else {
            bytes.split_off(written)
        };
    }
    Ok(())
}

fn sync_directory(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl LogWriter {
    /// Starts a new, preallocated segment whose first record will be `next_zxid`.
    pub async fn create(dir: &Path, next_zxid: i64) -> io::Result<LogWriter> {
        let mut writer = LogWriter::open_segment(dir, next_zxid).await?;
        writer.failpoints = Failpoints::from_env();
        Ok(writer)
    }

    async fn open_segment(dir: &Path, next_zxid: i64) -> io::Result<LogWriter> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(segment_name(next_zxid));
        let file = BufferedFile::create(&path).await.map_err(to_io)?;
        // The header is durable before the file grows: a crash in between leaves either an
        // empty file or a valid, empty segment, both of which recovery accepts.
        write_all_at(&file, segment_header(next_zxid).to_vec(), 0).await?;
        file.fdatasync().await.map_err(to_io)?;
        sync_directory(dir)?;
        // Zeros past the last record read as "end of log" (docs/FORMAT.md).
        file.pre_allocate(LOG_SEGMENT_BYTES_MAX, false)
            .await
            .map_err(to_io)?;
        Ok(LogWriter {
            dir: dir.to_owned(),
            file,
            position: SEGMENT_HEADER_BYTES as u64,
            capacity: LOG_SEGMENT_BYTES_MAX,
            syncs: 0,
            sync_micros_total: 0,
            sync_micros_max: 0,
            record_bytes_total: 0,
            failpoints: Failpoints::default(),
        })
    }

    /// Appends encoded records and makes them durable. An error is fatal for writes.
    pub async fn append_and_sync(&mut self, records: Vec<u8>, next_zxid: i64) -> io::Result<()> {
        if self.position > SEGMENT_HEADER_BYTES as u64
            && self.position + records.len() as u64 > self.capacity
        {
            self.roll(next_zxid_of_batch(&records, next_zxid)).await?;
        }
        if let Some(limit) = self.failpoints.enospc_after_bytes
            && self.record_bytes_total + records.len() as u64 > limit
        {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        let length = records.len() as u64;
        write_all_at(&self.file, records, self.position).await?;
        if let Some(limit) = self.failpoints.fsync_fail_after
            && self.syncs >= limit
        {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        let started = std::time::Instant::now();
        self.file.fdatasync().await.map_err(to_io)?;
        let micros = started.elapsed().as_micros() as u64;
        self.syncs += 1;
        self.sync_micros_total += micros;
        self.sync_micros_max = self.sync_micros_max.max(micros);
        self.position += length;
        self.record_bytes_total += length;
        Ok(())
    }

    /// Closes the current segment and starts a new one whose first record is `first_zxid`.
    pub async fn roll(&mut self, first_zxid: i64) -> io::Result<()> {
        let next = LogWriter::open_segment(&self.dir, first_zxid).await?;
        let previous = std::mem::replace(&mut self.file, next.file);
        let previous_end = std::mem::replace(&mut self.position, next.position);
        self.capacity = next.capacity;
        // The old segment's records are durable; give back its unused preallocation (zeros
        // after the records would read as its end anyway, so a failure here is harmless).
        let _ = previous.truncate(previous_end).await;
        let _ = previous.close().await;
        Ok(())
    }
}

/// The first zxid of a batch of encoded records (bytes 8..16 of the first record).
fn next_zxid_of_batch(records: &[u8], fallback: i64) -> i64 {
    if records.len() >= 16 {
        i64::from_be_bytes(records[8..16].try_into().expect("8 bytes"))
    } else {
        fallback
    }
}
