//! `scaletestd sim`: the Coder simulator alone, until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::{EXIT_OK, EXIT_USAGE};
use crate::sim::{Sim, SimConfig};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address of the API, e.g. 127.0.0.1:3000.
    #[arg(long, default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,
    /// Address of the simulated agents' SSH server (default: the API's host, any port).
    #[arg(long)]
    pub ssh_listen: Option<SocketAddr>,
    /// Address of coderd's own Prometheus metrics (Coder's CODER_PROMETHEUS_ADDRESS).
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
    /// The simulator's knobs (TOML): latencies, provisioners, failure rates.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

pub async fn run(args: Args) -> u8 {
    let Some(token) = std::env::var("CODER_SESSION_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
    else {
        eprintln!("error: set CODER_SESSION_TOKEN to the token the simulator should accept");
        return EXIT_USAGE;
    };
    let cfg = match &args.config {
        Some(p) => match SimConfig::load(p) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_USAGE;
            }
        },
        None => SimConfig::default(),
    };
    let mut cfg = cfg;
    if args.ssh_listen.is_some() {
        cfg.ssh_listen = args.ssh_listen;
    }
    if args.metrics_listen.is_some() {
        cfg.metrics_listen = args.metrics_listen;
    }
    if cfg.tracing.otlp_endpoint.is_none() {
        cfg.tracing.otlp_endpoint = crate::config::Env::from_process().otlp_endpoint;
    }
    let sim = match Sim::start(cfg, &token, args.listen).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", args.listen);
            return EXIT_USAGE;
        }
    };
    super::say(format_args!(
        "Coder simulator listening on {} (organization \"coder\", template \"docker\"); agents' SSH on {}; coderd metrics on http://{}/metrics",
        sim.url(),
        sim.ssh_addr(),
        sim.metrics_addr()
    ));
    super::signal().await;
    sim.stop().await;
    EXIT_OK
}
