//! The allocator, and giving memory back after a storm.
//!
//! A deploy storm over 100,000 files builds per-path state on several threads and frees it once
//! the batch is compared. The binary allocates with jemalloc (its `#[global_allocator]` is in
//! `main.rs`): with glibc's malloc, the 100,000 small chunks a comparison freed on its blocking
//! thread were merged (`malloc_consolidate`) by the next larger allocation on the daemon's loop,
//! a 20–40 ms turn after every big comparison. jemalloc frees into per-thread caches and arenas
//! and gives pages back by decay; [`trim`] gives them back at once when a storm's work is done.
//!
//! SQLite (bundled, C) still allocates with glibc's malloc: two arenas are enough for it, and the
//! trim covers it too.

/// Caps glibc's malloc arenas (SQLite's allocations); call once at start-up, before threads are
/// spawned.
pub(crate) fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; it is called before other threads start.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Returns free heap pages to the system: jemalloc's dirty pages of every arena, and glibc's
/// free pages.
pub(crate) fn trim() {
    #[cfg(all(target_os = "linux", not(target_env = "musl")))]
    // SAFETY: `arena.<MALLCTL_ARENAS_ALL>.purge` reads and writes nothing (all four pointers
    // null); it only returns unused dirty pages to the system.
    unsafe {
        tikv_jemalloc_sys::mallctl(
            c"arena.4096.purge".as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        );
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases memory the allocator holds free; no pointer is touched.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(target_os = "linux", not(target_env = "musl")))]
    fn the_purge_jemalloc_is_asked_for_exists() {
        // `trim` ignores what mallctl returns, so the name it uses is checked here: a misspelt
        // one has no MIB (ENOENT).
        let mut mib = [0usize; 3];
        let mut len = mib.len();
        // SAFETY: mib has room for `len` entries.
        let rc =
            unsafe { tikv_jemalloc_sys::mallctlnametomib(c"arena.4096.purge".as_ptr(), mib.as_mut_ptr(), &mut len) };
        assert_eq!(rc, 0, "jemalloc does not know arena.4096.purge");
        super::trim();
    }
}
