//! The `scaletestd` command line: argument parsing and the exit-code contract
//! (0 success, 1 a run with failed workspaces or a failed check, 2 bad usage or configuration).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod check;
mod daemon;
mod once;
mod sim;
mod sim_coder;
mod trigger;

/// Exit codes of every subcommand.
pub const EXIT_OK: u8 = 0;
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "scaletestd",
    version,
    about = "Scheduled scale tests against a Coder deployment, with Prometheus metrics and OTLP traces"
)]
pub struct Cli {
    /// Log filter (tracing's env-filter syntax); RUST_LOG overrides it. Default: `info` for
    /// `run` and `demo`, `warn` otherwise.
    #[arg(long, global = true)]
    pub log: Option<String>,
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: crate::telemetry::LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// The daemon: schedules every scenario, serves /metrics and the status page, until SIGTERM.
    Run(daemon::RunArgs),
    /// Simulator and daemon in one process: a sample scenario every 30 s, metrics on 127.0.0.1:9464.
    Demo(daemon::DemoArgs),
    /// Delete every workspace of ours left behind (owner me, a scenario's prefix).
    Cleanup(daemon::CleanupArgs),
    /// One run now: progress, the summary line, the per-phase table; exit 1 if any workspace failed.
    Once(once::Args),
    /// Check the configuration, that Coder answers, the token is accepted and templates exist.
    Check {
        /// The configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Start a run on a running daemon through its run API; --wait follows it to the end.
    Trigger(trigger::Args),
    /// The Coder simulator alone; the session token it accepts comes from CODER_SESSION_TOKEN.
    Sim(sim::Args),
    /// The simulator's stand-in for the `coder` CLI (`sim-coder ssh --stdio <workspace>`).
    #[command(hide = true)]
    SimCoder(sim_coder::Args),
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    let code = rt.block_on(dispatch(cli));
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    ExitCode::from(code)
}

/// Runs a subcommand with logging and tracing set up for it.
async fn dispatch(cli: Cli) -> u8 {
    // The SSH stand-in's stdout is an SSH stream: no telemetry, no output but errors.
    if let Command::SimCoder(a) = cli.command {
        return sim_coder::run(a).await;
    }
    // The daemon logs what it does; the demo, watched by a person, prints one line per run
    // itself and logs what went wrong (a failed phase, a skipped run); the rest warn.
    let filter = cli.log.clone().unwrap_or_else(|| {
        match cli.command {
            Command::Run(_) => "info,tokio_cron_scheduler=warn",
            _ => "warn",
        }
        .into()
    });
    // Commands with a configuration export spans where it says; the rest only log.
    let cfg = match &cli.command {
        Command::Run(a) => Some(&a.config),
        Command::Once(a) => Some(&a.config),
        Command::Check { config } => Some(config),
        Command::Cleanup(a) => Some(&a.config),
        Command::Sim(_) | Command::Demo(_) | Command::SimCoder(_) | Command::Trigger(_) => None,
    };
    let cfg = match cfg.map(|p| load_config(p)).transpose() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let export = crate::telemetry::TraceExport {
        endpoint: match &cfg {
            Some(c) => c.telemetry.otlp_endpoint.clone(),
            None => crate::config::Env::from_process().otlp_endpoint,
        },
        ..Default::default()
    };
    let secret = cfg.as_ref().map(|c| c.coder.token.clone());
    let telemetry = match crate::telemetry::init(&filter, cli.log_format, &export, secret) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    let code = match cli.command {
        Command::Run(a) => daemon::run(a, cfg.expect("loaded above")).await,
        Command::Demo(a) => daemon::demo(a).await.0,
        Command::Cleanup(a) => daemon::cleanup(a, cfg.expect("loaded above")).await,
        Command::Once(a) => once::run(a, cfg.expect("loaded above")).await,
        Command::Check { config } => check::run(&config, cfg.expect("loaded above")).await,
        Command::Sim(a) => sim::run(a).await,
        Command::Trigger(a) => trigger::run(a).await,
        Command::SimCoder(_) => unreachable!("handled above"),
    };
    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .ok();
    code
}

/// Writes a line to stderr, ignoring a closed pipe: a long-running command must not die
/// because whoever started it stopped reading (`eprintln!` would panic).
pub(crate) fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// Loads the configuration or prints why not (exit 2).
pub(crate) fn load_config(path: &std::path::Path) -> Result<crate::config::Config, u8> {
    let cfg =
        crate::config::Config::load(path, &crate::config::Env::from_process()).map_err(|e| {
            eprintln!("error: {e}");
            EXIT_USAGE
        })?;
    for w in &cfg.warnings {
        eprintln!("warning: {w}");
    }
    Ok(cfg)
}

/// A client for the configured Coder.
pub(crate) fn client(cfg: &crate::config::Config) -> crate::coder::Client {
    crate::coder::Client::new(
        cfg.coder.url.clone(),
        cfg.coder.token.clone(),
        cfg.coder.client_options(cfg.telemetry.propagate),
    )
}

/// Resolves on the first SIGINT or SIGTERM.
pub(crate) async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
