//! Giving memory back after a storm (glibc only; elsewhere these do nothing).
//!
//! A deploy storm over 100,000 files builds per-path state on several threads and frees it once
//! the batch is compared. glibc keeps an arena per thread and returns freed memory to the system
//! only from the top of the heap, so without help the resident size creeps up storm after storm.
//! Two arenas are enough for a daemon that allocates on a handful of threads, and a trim after the
//! batch's work is done hands the free pages back.

/// Caps glibc's malloc arenas and turns its "fastbins" off; call once at start-up, before
/// threads are spawned.
///
/// Fastbins keep freed small chunks unmerged until a large allocation sweeps them all together
/// (`malloc_consolidate`). After a storm, a comparison on a blocking thread frees 100,000 paths
/// of the loop's arena, and the loop's next large allocation then paid for merging them all:
/// 15–30 ms in one turn. Without fastbins each chunk is merged when it is freed, by the thread
/// that frees it (the per-thread cache still serves small allocations first).
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called before other threads start.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MXFAST, 0);
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
