//! scaletestd: scheduled scale tests against a Coder deployment.
//!
//! - [`config`]: the TOML configuration, checked with file/line/column errors.
//! - [`coder`]: the Coder API client (HTTP, watch stream, web terminal).
//! - [`phases`]: what each phase of a workspace's walk does and how it fails.
//! - [`runner`]: one run of a scenario, `count` workspaces at `concurrency`.
//! - [`report`]: the summary line, per-phase table and JSON output.
//! - [`sim`]: the Coder simulator the demo and the tests run against.
//! - [`cli`]: the `scaletestd` command line.

pub mod cli;
pub mod coder;
pub mod config;
pub mod daemon;
pub mod metrics;
pub mod naming;
pub mod phases;
pub mod reason;
pub mod report;
pub mod runner;
pub mod schedule;
pub mod secret;
pub mod server;
pub mod shard;
pub mod sim;
pub mod ssh;
pub mod status;
pub mod sweep;
pub mod telemetry;
pub mod traffic;
