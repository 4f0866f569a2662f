//! The integration tests, one binary (as ripgrep builds its own): each file here was a test
//! binary of its own, and ~30 links of the whole crate cost CI minutes. Grouped by what they
//! hold:
//!
//! - `phases/`: walks against the simulator, a phase or a way of reaching Coder per file;
//! - `outputs/`: what users read: traces, the summary and budgets, the status history, the
//!   deployment files;
//! - `process/`: the binary as a process: the CLI, the daemon, its config errors, the run API,
//!   soaks, and the source tree's layering;
//! - `faults/`: Coder down, storms, a load-shedding front, secrets under failure;
//! - `external/`: real peers: a real coderd (`external::coder`, run last by the test command),
//!   OpenSSH, Prometheus, Chromium.
//!
//! Timing and CPU-heavy tests take [`common::exclusive`] so no two of them share the cores.
//! `tests/ssh.rs` stays a binary of its own: it makes its process the reaper of orphans and
//! counts that process's descendants, which other tests' children would join here.

mod common;
mod external;
mod faults;
mod outputs;
mod phases;
mod process;
