//! The `scaletestd` command line: argument parsing and the exit-code contract
//! (0 success, 1 a run with failed workspaces or a failed check, 2 bad usage or configuration).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod check;
mod once;
mod sim;

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
    /// Log filter (tracing's env-filter syntax); RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "warn")]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// One run now: progress, the summary line, the per-phase table; exit 1 if any workspace failed.
    Once(once::Args),
    /// Check the configuration, that Coder answers, the token is accepted and templates exist.
    Check {
        /// The configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// The Coder simulator alone; the session token it accepts comes from CODER_SESSION_TOKEN.
    Sim(sim::Args),
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
    init_logging(&cli.log);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    let code = rt.block_on(async {
        match cli.command {
            Command::Once(a) => once::run(a).await,
            Command::Check { config } => check::run(&config).await,
            Command::Sim(a) => sim::run(a).await,
        }
    });
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    ExitCode::from(code)
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Loads the configuration or prints why not (exit 2).
pub(crate) fn load_config(path: &std::path::Path) -> Result<crate::config::Config, u8> {
    crate::config::Config::load(path, &crate::config::Env::from_process()).map_err(|e| {
        eprintln!("error: {e}");
        EXIT_USAGE
    })
}

/// A client for the configured Coder.
pub(crate) fn client(cfg: &crate::config::Config) -> crate::coder::Client {
    crate::coder::Client::new(
        cfg.coder.url.clone(),
        cfg.coder.token.clone(),
        crate::coder::ClientOptions {
            request_timeout: cfg.coder.request_timeout,
            max_retries: cfg.coder.max_retries,
            bypass_ratelimit: cfg.coder.bypass_ratelimit,
            ..Default::default()
        },
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
