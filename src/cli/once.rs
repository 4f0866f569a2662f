//! `scaletestd once`: one run of one scenario now, with progress on the terminal, the summary
//! line and the per-phase table; exit 0 only when every workspace succeeded.
//!
//! The first SIGINT/SIGTERM stops the phases and still deletes every workspace created; a
//! second one abandons the deletes too (the next start-up sweep finds what is left).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

use super::{EXIT_FAILED, EXIT_OK, EXIT_USAGE};
use crate::phases::PhaseRecord;
use crate::runner::{self, RunObserver, Slice, WorkspaceReport};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The configuration file (TOML).
    #[arg(long)]
    pub config: PathBuf,
    /// The scenario to run (default: the first in the file).
    #[arg(long)]
    pub scenario: Option<String>,
    /// Override the scenario's workspace count.
    #[arg(long)]
    pub count: Option<u32>,
    /// Write the full report: `json:PATH` or `junit:PATH` (JUnit XML for CI); may be given
    /// more than once.
    #[arg(long)]
    pub output: Vec<String>,
}

/// Progress: a bar on a terminal, one line per finished workspace otherwise.
struct Progress {
    bar: Option<ProgressBar>,
}

impl RunObserver for Progress {
    fn phase_done(&self, _scenario: &str, workspace: &str, r: &PhaseRecord) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!(
                "{workspace}: {} {}",
                r.phase,
                if r.ok { "ok" } else { "failed" }
            ));
        }
    }

    fn workspace_done(&self, _scenario: &str, w: &WorkspaceReport) {
        let line = match w.failure() {
            None => format!("{}: ok", w.name),
            Some((phase, reason, msg)) => {
                format!("{}: failed in {phase} ({reason}): {msg}", w.name)
            }
        };
        match &self.bar {
            Some(bar) => {
                if !w.ok {
                    bar.println(line);
                }
                bar.inc(1);
            }
            None => eprintln!("{line}"),
        }
    }
}

pub async fn run(args: Args, cfg: crate::config::Config) -> u8 {
    let output = match args
        .output
        .iter()
        .map(|o| parse_output(o))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: --output: {e}");
            return EXIT_USAGE;
        }
    };
    let scenario = match &args.scenario {
        Some(name) => match cfg.scenarios.iter().find(|s| &s.name == name) {
            Some(s) => s,
            None => {
                let names: Vec<_> = cfg.scenarios.iter().map(|s| s.name.as_str()).collect();
                eprintln!(
                    "error: no scenario {name:?} in {} (it has {names:?})",
                    args.config.display()
                );
                return EXIT_USAGE;
            }
        },
        None => &cfg.scenarios[0],
    };
    if scenario.kind == crate::config::ScenarioKind::Traffic {
        eprintln!(
            "error: scenario {:?} is a traffic scenario: it runs continuously under `scaletestd run`",
            scenario.name
        );
        return EXIT_USAGE;
    }
    let scenario = match args.count {
        None => scenario.clone(),
        Some(n) => match scenario.clone().with_count(n) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: --count: {e}");
                return EXIT_USAGE;
            }
        },
    };

    let bar = std::io::stderr().is_terminal().then(|| {
        let b = ProgressBar::new(scenario.count as u64);
        b.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {wide_msg}",
            )
            .expect("a valid template"),
        );
        b.enable_steady_tick(std::time::Duration::from_millis(120));
        b
    });
    let progress = Arc::new(Progress { bar: bar.clone() });

    let stop = CancellationToken::new();
    let abort = CancellationToken::new();
    let (s2, a2) = (stop.clone(), abort.clone());
    // As the daemon does: deletes get `[server] shutdown_grace`, then are abandoned (a
    // service manager's SIGTERM comes once; waiting for a second one kept a stuck run for
    // as long as its waits lasted).
    let grace = cfg.server.shutdown_grace;
    let signals = tokio::spawn(async move {
        super::signal().await;
        eprintln!(
            "stopping: canceling phases and deleting the workspaces created, for at most {} (signal again to abandon)",
            humantime::format_duration(grace)
        );
        s2.cancel();
        tokio::select! {
            _ = super::signal() => {}
            _ = tokio::time::sleep(grace) => {
                eprintln!("shutdown grace period over: abandoning deletes still in flight");
            }
        }
        a2.cancel();
    });

    let client = super::client(&cfg);
    let slice = Slice {
        first: 1,
        count: scenario.count,
    };
    let report = runner::run(
        &client,
        &scenario,
        runner::Setup {
            organization: cfg.coder.organization.as_deref(),
            users: None,
            run_id: None,
        },
        slice,
        progress,
        stop,
        abort,
    )
    .await;
    signals.abort();
    if let Some(b) = bar {
        b.finish_and_clear();
    }

    println!("{}", crate::report::summary_line(&report));
    if report.setup_error.is_none() {
        print!("{}", crate::report::phase_table(&report));
    }
    for (format, path) in output {
        let text = match format {
            OutputFormat::Json => crate::report::to_json(&report),
            OutputFormat::Junit => crate::report::to_junit(&report),
        };
        if let Err(e) = std::fs::write(&path, text) {
            eprintln!("error: cannot write {}: {e}", path.display());
            return EXIT_FAILED;
        }
    }
    // Within the scenario's failure budget (max_failures, max_failure_ratio) is a success.
    if report.result() == crate::runner::RunResult::Success {
        EXIT_OK
    } else {
        EXIT_FAILED
    }
}

/// What `--output` writes.
#[derive(Debug, Clone, Copy)]
enum OutputFormat {
    Json,
    Junit,
}

fn parse_output(s: &str) -> Result<(OutputFormat, PathBuf), String> {
    match s.split_once(':') {
        Some(("json", path)) if !path.is_empty() => Ok((OutputFormat::Json, PathBuf::from(path))),
        Some(("junit", path)) if !path.is_empty() => Ok((OutputFormat::Junit, PathBuf::from(path))),
        _ => Err(format!(
            "{s:?} is not FORMAT:PATH; expected json:PATH or junit:PATH"
        )),
    }
}
