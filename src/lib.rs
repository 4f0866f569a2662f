//! scaletestd: scheduled scale tests against a Coder deployment.
//!
//! Data flows one way: configuration → daemon (schedules) → runner (a run: the walk over the
//! scenario's phases) → phases → the Coder client; observations flow out through one observer
//! to the metrics, the traces and the status history. No module imports one above it
//! (`tests/it/process/layers.rs` checks there is no cycle).
//!
//! At the bottom, shared vocabulary:
//! - [`reason`]: the closed set of failure reasons and their one spelling.
//! - [`naming`]: workspace names `<prefix>-<run>-<n>`: making, limiting, recognising them.
//! - [`secret`]: the session token, never printed.
//! - [`schedule`]: cron expressions with seconds, checked as the scheduler reads them.
//! - [`shard`]: which workspaces of a scenario one replica of a StatefulSet drives.
//!
//! Talking to Coder:
//! - [`coder`]: the API client: calls, Coder's types as read, watch transports, the web
//!   terminal, client spans.
//! - [`ssh`]: SSH to a workspace with russh, over a proxy command or TCP.
//! - [`telemetry`]: logs and OTLP spans, `traceparent` injection, the span queue.
//!
//! What a run does:
//! - [`phases`]: one file per phase and the registry that names them.
//! - [`config`]: the TOML file, one module per section, every mistake with file:line:column.
//! - [`runner`]: one run of a lifecycle scenario: `count` workspaces walked at `concurrency`.
//! - [`traffic`]: a traffic scenario: a pool held open, echoing bytes.
//! - [`users`]: a scenario's test users, each workspace walked with its owner's token.
//! - [`sweep`]: finding and deleting workspaces of ours left behind.
//! - [`report`]: the summary line, the per-phase table, the JSON output.
//!
//! Where observations go, and the process around it:
//! - [`metrics`]: the Prometheus series and their exposition.
//! - [`status`]: the history of runs and the status page.
//! - [`server`]: the HTTP endpoints (`/metrics`, `/healthz`, `/readyz`, `/`).
//! - [`daemon`]: the long-running process, as a library (shutdown and reloads passed in).
//! - [`cli`]: argument parsing, signals, exit codes, console output.
//! - [`sim`]: the Coder simulator the demo and the tests run against, reached over sockets.

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
pub mod users;
