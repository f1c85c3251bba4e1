//! Giving memory back after a storm (glibc only; elsewhere these do nothing).
//!
//! A deploy storm over 100,000 files builds per-path state on several threads and frees it once
//! the batch is compared. glibc keeps an arena per thread and returns freed memory to the system
//! only from the top of the heap, so without help the resident size creeps up storm after storm.
//! Two arenas are enough for a daemon that allocates on a handful of threads, and a trim after the
//! batch's work is done hands the free pages back.

/// Caps glibc's malloc arenas; call once at start-up, before threads are spawned.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; it is called before other threads start.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Returns free heap pages to the system.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases memory the allocator holds free; no pointer is touched.
    unsafe {
        libc::malloc_trim(0);
    }
}
