//! The replication state that must survive a restart besides the log: the current term and
//! the vote cast in it (Raft's currentTerm and votedFor; ZooKeeper keeps the same facts in
//! `currentEpoch` and `acceptedEpoch`). Layout in docs/FORMAT.md, "Vote file".
//!
//! 32 bytes: magic `ZOOVOTE1` (8), term (u64 BE), voted-for (i64 BE, -1 = none),
//! CRC32C of the first 24 bytes (u32 BE), 4 zero bytes. Written to a temporary file, fsynced,
//! renamed over the old one and the directory fsynced, so a crash leaves the old or the new
//! state, never a mix.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::consensus::HardState;

const MAGIC: &[u8; 8] = b"ZOOVOTE1";
const FILE_BYTES: usize = 32;

pub fn vote_path(data_dir: &Path) -> PathBuf {
    data_dir.join("zoo-vote")
}

/// Reads the vote file; a missing file is a fresh server (term 0, no vote).
pub fn load(path: &Path) -> Result<HardState, String> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(HardState::default()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let damaged = |why: &str| {
        format!(
            "{} is damaged ({why}); refusing to start, since a lost vote could elect two leaders in one term",
            path.display()
        )
    };
    if bytes.len() != FILE_BYTES || &bytes[..8] != MAGIC {
        return Err(damaged("bad size or magic"));
    }
    let crc = u32::from_be_bytes(bytes[24..28].try_into().expect("4 bytes"));
    if crc != crc32c::crc32c(&bytes[..24]) {
        return Err(damaged("checksum mismatch"));
    }
    let term = u64::from_be_bytes(bytes[8..16].try_into().expect("8 bytes"));
    let voted = i64::from_be_bytes(bytes[16..24].try_into().expect("8 bytes"));
    Ok(HardState {
        term,
        voted_for: (voted >= 0).then_some(voted),
    })
}

pub fn store(path: &Path, state: HardState) -> io::Result<()> {
    let mut bytes = [0u8; FILE_BYTES];
    bytes[..8].copy_from_slice(MAGIC);
    bytes[8..16].copy_from_slice(&state.term.to_be_bytes());
    bytes[16..24].copy_from_slice(&state.voted_for.unwrap_or(-1).to_be_bytes());
    let crc = crc32c::crc32c(&bytes[..24]);
    bytes[24..28].copy_from_slice(&crc.to_be_bytes());
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let temp = path.with_extension("tmp");
    {
        let mut f = fs::File::create(&temp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    fs::rename(&temp, path)?;
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vote_round_trips_and_damage_refuses_start() {
        let dir = std::env::temp_dir().join(format!("zoo-vote-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let path = vote_path(&dir);
        assert_eq!(load(&path).unwrap(), HardState::default());
        let state = HardState {
            term: 7,
            voted_for: Some(2),
        };
        store(&path, state).unwrap();
        assert_eq!(load(&path).unwrap(), state);
        let mut bytes = fs::read(&path).unwrap();
        bytes[12] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert!(load(&path).unwrap_err().contains("checksum"));
        let _ = fs::remove_dir_all(&dir);
    }
}
