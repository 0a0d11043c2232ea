//! How the server's allocator gives memory back.
//!
//! A large plan makes large, short-lived allocations (terraform's JSON stream and plan, the
//! summary built from them) on whichever runtime thread runs the call. glibc's defaults keep
//! them: each thread gets its own arena, and after the first large block is freed the mmap
//! threshold rises to its size (up to 32 MiB), so the next ones come from arenas whose free
//! pages are only returned when they sit at the very top. The result is an RSS that steps up
//! with each large plan and never comes back down. Fixed thresholds and a small arena count
//! keep large blocks in `mmap` (returned on free) and the rest compact.

/// Tunes glibc's malloc for a long-running server. Call first thing in `main`, before any
/// thread exists.
pub(crate) fn tune_allocator() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt with integer arguments, before other threads allocate.
    unsafe {
        // Blocks of 256 KiB and more are mapped on their own and unmapped when freed, whatever
        // sizes came before (setting it turns off the dynamic threshold).
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        // Free memory at the top of the heap beyond 1 MiB goes back to the system.
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1024 * 1024);
        // Two arenas for the two runtime workers and the blocking threads, not eight per core.
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// How long the server stays quiet after a tool call before free memory is handed back (so a
/// burst of calls pays for one trim, not one each).
const QUIET: std::time::Duration = std::time::Duration::from_millis(200);

/// Called after each tool call: a moment later, off the response path, the free pages of
/// every arena go back to the system, so the server's RSS returns to its working set after a
/// large plan instead of keeping the plan's peak (the thresholds above cannot return free
/// memory that sits between live blocks).
pub(crate) fn after_call() {
    static WAKE: std::sync::OnceLock<std::sync::Arc<tokio::sync::Notify>> =
        std::sync::OnceLock::new();
    let wake = WAKE.get_or_init(|| {
        let wake = std::sync::Arc::new(tokio::sync::Notify::new());
        let waiter = wake.clone();
        tokio::spawn(async move {
            loop {
                waiter.notified().await;
                tokio::time::sleep(QUIET).await;
                release_free_memory();
            }
        });
        wake
    });
    // One stored permit at most: calls during the pause collapse into the next trim.
    wake.notify_one();
}

/// Returns the free pages of every arena to the system.
fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases memory malloc holds free.
    unsafe {
        libc::malloc_trim(0);
    }
}
