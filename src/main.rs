//! The `spanline` command: thin wiring from arguments to the converter (see `cli`).
//!
//! Exit codes: 0 success (also `tail` stopped with Ctrl-C); 1 an input could not be read (a
//! file, a log group, an S3 object) or the configuration is invalid; 2 bad usage; 3 with
//! `--strict`, when malformed span lines were found; 4 the backend could not be reached or kept
//! failing until the retry deadline (try again later); 5 the backend rejected the data (sending
//! it again will not help).

mod cli;

fn main() -> std::process::ExitCode {
    return_freed_memory();
    cli::main()
}

/// glibc keeps freed memory for reuse, and after freeing one large block it serves blocks of
/// that size from its heaps instead of mapping them: record batches, which come and go across
/// threads, then pile up in per-thread heaps. A fixed trim threshold returns freed memory above
/// 128 KiB and keeps large blocks mapped on their own (README, "Limits": peak memory).
fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tuning parameter of the allocator; called before any thread
    // is started.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 10);
    }
}
