//! A cache hint shared by the modules that walk memory they know they are about to touch.

/// Asks the CPU to start loading the cache line at `at` (a hint: no effect on results; `at`
/// is never dereferenced, so any address is fine).
pub fn prefetch<T: ?Sized>(at: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults and reads nothing the program sees; SSE is part of
    // every x86_64 target.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            at.cast::<u8>().cast::<i8>(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}
