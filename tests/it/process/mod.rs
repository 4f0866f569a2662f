//! The binary as a process: the CLI, the daemon and its signals, configuration errors, the
//! run API, soaks, and the source tree's layering.

mod cli;
mod config_errors;
mod daemon;
mod layers;
mod soak;
mod soak_traffic;
mod trigger;
