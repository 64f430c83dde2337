//! Benchmarks of sourceflow against the physical floor and against peer frameworks.
//!
//! - The binary `sourceflow-bench` runs the workloads W1 to W8 in one process run and prints a
//!   ratio table (`--quick` for a run under two minutes, `--check` to exit non-zero on a missed
//!   target). See the workspace's `BENCHMARKS.md` for a measured table and what it means.
//! - `benches/pipeline.rs` holds criterion micro-benchmarks of the hot paths.
//!
//! Every workload uses the [`domain`] here: a deposit command of about 100 bytes of JSON, a
//! saga owning an account entity, one event, one view and one aggregate reaction. The peers in
//! [`peers`] implement the same account.

pub mod cleanup;
pub mod domain;
pub mod peers;

/// With the `count-allocations` feature: the process's allocator, counting (see
/// [`allocations`]).
#[cfg(feature = "count-allocations")]
#[global_allocator]
pub static ALLOCATOR: &stats_alloc::StatsAlloc<std::alloc::System> =
    &stats_alloc::INSTRUMENTED_SYSTEM;

/// Heap allocations made by the whole process so far, when built with the `count-allocations`
/// feature (`None` otherwise).
pub fn allocations() -> Option<u64> {
    #[cfg(feature = "count-allocations")]
    {
        Some(ALLOCATOR.stats().allocations as u64)
    }
    #[cfg(not(feature = "count-allocations"))]
    {
        None
    }
}
pub mod raw;
pub mod report;
pub mod workloads;
