//! A real coderd v2.36.1 (`scripts/real-coder`), one at a time: the walk and the simulator
//! held against it call by call (`walk`), and every other feature (`features`).

mod features;
mod walk;

use crate::common::real::{RealCoder, join_netns};
use crate::common::{Exclusive, exclusive};

/// A coderd of the test's own (`prefix-<pid>`), this thread moved into its namespace, and a
/// runtime started there. Dropped in reverse: the runtime, then coderd, then the turn (a
/// coderd holds both cores: two at once would slow the walk's phases toward their timeouts).
fn real_coder_here(
    prefix: &str,
    otlp: Option<&str>,
) -> (Exclusive, RealCoder, tokio::runtime::Runtime) {
    let turn = exclusive();
    let name = format!("{prefix}-{}", std::process::id());
    let coder = RealCoder::up(&name, otlp);
    join_netns(&name);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    (turn, coder, rt)
}
