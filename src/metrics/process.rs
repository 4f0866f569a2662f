//! Process series (`process_*`, and the runtime's live tasks), read from procfs at every
//! scrape with the kernel's own clock-tick rate and page size.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{FGauge, unix_now};

/// Process series (Linux: from /proc/self), refreshed at every scrape.
pub(super) struct Process {
    rss: Gauge,
    vsize: Gauge,
    fds: Gauge,
    cpu: Counter<f64, AtomicU64>,
    start: FGauge,
    threads: Gauge,
    /// Tasks alive in the async runtime: a leak of tasks shows here before it shows in RSS.
    tasks: Gauge,
    /// Bytes of live objects as malloc counts them: unlike RSS it carries no fragmentation
    /// or freed pages malloc keeps, so a leak shows as a slope here while RSS wanders.
    heap: Gauge,
}

/// Bytes malloc holds for live objects (glibc's `mallinfo2`: in its arenas plus the large
/// allocations it maps on their own); `None` where that is not known.
pub fn live_heap_bytes() -> Option<u64> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 takes no arguments and only reads malloc's own state, under
        // its locks; glibc has had it since 2.33.
        let m = unsafe { libc::mallinfo2() };
        Some((m.uordblks + m.hblkhd) as u64)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

impl Process {
    pub(super) fn register(r: &mut Registry) -> Process {
        let p = Process {
            rss: Gauge::default(),
            vsize: Gauge::default(),
            fds: Gauge::default(),
            cpu: Counter::default(),
            start: Gauge::default(),
            threads: Gauge::default(),
            tasks: Gauge::default(),
            heap: Gauge::default(),
        };
        r.register(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            p.rss.clone(),
        );
        r.register(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            p.vsize.clone(),
        );
        r.register(
            "process_open_fds",
            "Number of open file descriptors",
            p.fds.clone(),
        );
        r.register(
            "process_cpu_seconds",
            "Total user and system CPU time in seconds",
            p.cpu.clone(),
        );
        r.register(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch",
            p.start.clone(),
        );
        r.register("process_threads", "Number of OS threads", p.threads.clone());
        r.register(
            "scaletest_runtime_tasks",
            "Tasks alive in scaletestd's async runtime",
            p.tasks.clone(),
        );
        if live_heap_bytes().is_some() {
            r.register(
                "scaletest_heap_allocated_bytes",
                "Bytes malloc holds for scaletestd's live objects (RSS less fragmentation and freed pages kept)",
                p.heap.clone(),
            );
        }
        p.start.set(unix_now());
        p
    }

    pub(super) fn refresh(&self) {
        let Some(stat) = read_proc_stat() else { return };
        self.rss.set(stat.rss_bytes as i64);
        self.vsize.set(stat.vsize_bytes as i64);
        self.threads.set(stat.threads as i64);
        let delta = stat.cpu_seconds - self.cpu.get();
        if delta > 0.0 {
            self.cpu.inc_by(delta);
        }
        if let Ok(n) = procfs::process::Process::myself().and_then(|p| p.fd_count()) {
            self.fds.set(n as i64);
        }
        if let Some(bytes) = live_heap_bytes() {
            self.heap.set(bytes as i64);
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            self.tasks.set(rt.metrics().num_alive_tasks() as i64);
        }
    }
}

/// What procfs says of a process.
#[derive(Debug, Clone, Copy)]
pub struct ProcStat {
    pub rss_bytes: u64,
    pub vsize_bytes: u64,
    pub cpu_seconds: f64,
    pub threads: u64,
}

pub fn read_proc_stat() -> Option<ProcStat> {
    stat_of(procfs::process::Process::myself().ok()?)
}

/// [`read_proc_stat`] of another process (`pid`, or `self`).
pub fn read_proc_stat_of(pid: &str) -> Option<ProcStat> {
    let p = match pid {
        "self" => procfs::process::Process::myself(),
        pid => procfs::process::Process::new(pid.parse().ok()?),
    };
    stat_of(p.ok()?)
}

fn stat_of(p: procfs::process::Process) -> Option<ProcStat> {
    let st = p.stat().ok()?;
    let ticks = procfs::ticks_per_second() as f64;
    Some(ProcStat {
        cpu_seconds: (st.utime + st.stime) as f64 / ticks,
        threads: st.num_threads.max(0) as u64,
        vsize_bytes: st.vsize,
        rss_bytes: st.rss * procfs::page_size(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_reads_this_process() {
        let st = read_proc_stat().expect("Linux /proc");
        assert!(st.rss_bytes > 1 << 20 && st.threads >= 1);
        assert!(st.cpu_seconds >= 0.0 && st.vsize_bytes >= st.rss_bytes);
    }
}
