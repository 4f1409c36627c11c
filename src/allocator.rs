//! The process's memory allocator: mimalloc, and the one call that gives a shard's freed
//! memory back to the system.
//!
//! A broker allocates and frees many buffers of a few KiB to a few MiB for every request:
//! record batches, request frames, replication messages and their encodings. glibc's
//! malloc serves sizes above its thread cache (about 1 KiB) from bins shared by every
//! thread (`_int_malloc`, `malloc_consolidate`, `unlink_chunk`): 13% of three brokers'
//! samples under RF=3 load, 7% under RF=1. mimalloc serves them from pages owned by the
//! allocating thread, which fits shards that each keep to their own core; it cut that
//! share to about 4% (perf/README.md, "Replication").
//!
//! Transparent huge pages stay off for its segments (the `no_thp` build option): with
//! them, the first touch of each fresh 2 MiB span zeroed it in the page-fault handler,
//! 11-15% of the brokers' samples, more than the allocator saved.
//!
//! Freed memory goes back to the system [`PURGE_DELAY_MS`] after its last use rather than
//! mimalloc's default of 10 ms ([`configure`]). With 10 ms, the buffers a replicating
//! broker frees every round (peer frames of hundreds of KiB, proposals) were handed back
//! between rounds and faulted in again in the next one: 172 k page faults in an RF=3 run
//! of 12 s over three brokers, against 39 k with 1 s (perf/README.md, "Replication").

/// Every allocation of the process, the broker's and the tools' alike.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long freed memory stays with the process before mimalloc gives it back, unless the
/// `MIMALLOC_PURGE_DELAY` environment variable says otherwise.
pub const PURGE_DELAY_MS: i64 = 1000;

/// mimalloc's `mi_option_purge_delay` (its position in `mi_option_e` of mimalloc.h v2;
/// libmimalloc-sys does not name it). A unit test checks it reads mimalloc's default.
const PURGE_DELAY_OPTION: libmimalloc_sys::mi_option_t = 15;

/// Sets the allocator's options for a broker: called once at startup.
pub fn configure() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: setting an option is a plain store mimalloc reads on its next purge.
        unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY_OPTION, PURGE_DELAY_MS as std::ffi::c_long) };
    }
}

/// Gives the memory the calling thread has freed back to the system, now rather than
/// after mimalloc's purge delay. Each heap belongs to one thread, so a shard calls this
/// on its own thread for its own memory; it takes well under a millisecond for a heap of
/// a few hundred MiB.
pub fn return_freed_memory() {
    // SAFETY: mi_collect only releases the calling thread's free pages; it touches no
    // live allocation.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_the_one_configure_sets() {
        // SAFETY: reading an option has no side effect beyond initialising it.
        let read = || unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY_OPTION) } as i64;
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // Another test may have configured it already; otherwise it is mimalloc's 10 ms.
        assert!(matches!(read(), 10 | PURGE_DELAY_MS), "option {PURGE_DELAY_OPTION} reads {}", read());
        configure();
        assert_eq!(read(), PURGE_DELAY_MS);
    }
}
