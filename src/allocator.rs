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

/// Every allocation of the process, the broker's and the tools' alike.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Gives the memory the calling thread has freed back to the system, now rather than
/// after mimalloc's purge delay. Each heap belongs to one thread, so a shard calls this
/// on its own thread for its own memory; it takes well under a millisecond for a heap of
/// a few hundred MiB.
pub fn return_freed_memory() {
    // SAFETY: mi_collect only releases the calling thread's free pages; it touches no
    // live allocation.
    unsafe { libmimalloc_sys::mi_collect(true) };
}
