//! The structure check of the snapshot a server started from, run after the server is up
//! (docs/FORMAT.md, "Loading"). Start-up checks the snapshot's checksums, trailer, root and
//! special nodes, restores the state and serves; this thread then reads every record, link
//! and index entry. A file that fails is moved aside and the server stops, so the next start
//! uses an older snapshot and the log, or refuses to start.

use std::path::{Path, PathBuf};

use crate::storage::snapshot::DeferredCheck;

/// Nice value of the check thread: it yields the core to the server's executors.
const CHECK_THREAD_NICE: libc::c_int = 10;

/// Runs `check` on its own thread. On failure the process exits with status 1 after moving
/// the file to `<name>.damaged`.
pub fn run_in_background(check: DeferredCheck) {
    let spawned = std::thread::Builder::new()
        .name("zoo-snap-check".into())
        .spawn(move || {
            lower_this_thread_priority();
            let started = std::time::Instant::now();
            match check.run() {
                Ok(()) => eprintln!(
                    "zoo: snapshot {} passed its structure check in {:?}",
                    check.file.display(),
                    started.elapsed()
                ),
                Err(e) => {
                    let moved = move_aside(&check.file);
                    eprintln!("zoo: FATAL: {e}");
                    match moved {
                        Ok(to) => eprintln!(
                            "zoo: moved it to {}; the next start uses an older snapshot and \
                             the log if they cover it, or refuses to start",
                            to.display()
                        ),
                        Err(e) => eprintln!("zoo: could not move it aside: {e}"),
                    }
                    std::process::exit(1);
                }
            }
        });
    if let Err(e) = spawned {
        // Without the check the file is not trusted: stop rather than serve it.
        eprintln!("zoo: FATAL: cannot start the snapshot check thread: {e}");
        std::process::exit(1);
    }
}

/// Renames `file` to `<file>.damaged` (which snapshot listing skips) and makes the rename
/// durable.
fn move_aside(file: &Path) -> std::io::Result<PathBuf> {
    let mut to = file.as_os_str().to_owned();
    to.push(".damaged");
    let to = PathBuf::from(to);
    std::fs::rename(file, &to)?;
    if let Some(dir) = file.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(to)
}

fn lower_this_thread_priority() {
    // SAFETY: plain syscalls on this thread's own id; failure only leaves the priority as is.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, CHECK_THREAD_NICE);
    }
}
