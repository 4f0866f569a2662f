//! Walks against the simulator: a phase, or a way of reaching Coder, per file.

mod apps;
mod autostart;
mod coder_versions;
mod form_and_inbox;
mod lifecycle;
mod restarts;
mod tls;
mod traffic;
mod users;
