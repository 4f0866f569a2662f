// A daemon that runs for months allocates and frees millions of small buffers (a set per
// workspace per run). glibc's malloc keeps their high-water mark as fragmented heap;
// jemalloc hands freed pages back to the OS after a short decay, so RSS follows what is
// live, and it counts live bytes exactly, which /metrics exports beside RSS.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn live_heap_bytes() -> Option<u64> {
    // jemalloc caches its statistics until the epoch advances.
    tikv_jemalloc_ctl::epoch::advance().ok()?;
    tikv_jemalloc_ctl::stats::allocated::read()
        .ok()
        .map(|b| b as u64)
}

fn main() -> std::process::ExitCode {
    scaletestd::metrics::set_heap_reader(live_heap_bytes);
    scaletestd::cli::main()
}
