//! Handing freed memory back to the system.
//!
//! The allocator (mimalloc, `src/main.rs`) keeps freed pages for reuse and returns them only
//! while the thread that owns them keeps allocating. After the tree moves onto a new snapshot
//! (`server::rebase`), the old overlay — up to a snapshot cycle of nodes — is freed at once,
//! on the `zoo-snapshot` thread (`server::snapshot_worker`), partly into the commit
//! executor's heap; if the server then goes idle, nothing would ever return those pages. The
//! snapshot thread calls [`release_free_pages`] after each job, and the commit executor once,
//! `TREE_MEMORY_RELEASE_DELAY_MS` after such a swap, at a moment without writes.

/// Collects this thread's heap and the heaps of exited threads, and returns every free page
/// to the system. Costs a walk of the heap's pages (milliseconds), so it runs once per swap,
/// not per batch. Without mimalloc as the global allocator (the library's tests), it only
/// tidies mimalloc's own empty heap.
pub fn release_free_pages() {
    // SAFETY: mi_collect takes no pointers and may be called from any thread at any time.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// Turns transparent huge pages off for this process, unless `MIMALLOC_ALLOW_THP` is set in
/// the environment (then the operator's choice stands; see tuning/README.md).
///
/// mimalloc asks for huge pages on the regions it reserves (`madvise(MADV_HUGEPAGE)`), and
/// khugepaged then fills each 2 MiB range of them in the background even where only a few
/// 4 KiB pages hold live data, and again after [`release_free_pages`] has returned them: an
/// idle server measured 64 MiB without huge pages and grew from 89 to 144 MiB in 30 s with
/// them. Returns whether THP is now off.
pub fn keep_heap_in_small_pages() -> bool {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
        return false;
    }
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and changes a process flag.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_process_runs_without_transparent_huge_pages() {
        if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
            assert!(!keep_heap_in_small_pages(), "the operator's choice stands");
            return;
        }
        assert!(keep_heap_in_small_pages());
        // SAFETY: PR_GET_THP_DISABLE reads a process flag.
        assert_eq!(
            unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) },
            1
        );
        release_free_pages();
    }
}
