//! `scaletestd run`, `scaletestd demo` and `scaletestd cleanup`.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::{EXIT_FAILED, EXIT_OK, EXIT_USAGE};
use crate::config::{Config, Env};
use crate::daemon::{self, Options};
use crate::shard::Shard;
use crate::sim::{Sim, SimConfig};

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The configuration file (TOML); SIGHUP re-reads it.
    #[arg(long)]
    pub config: PathBuf,
    /// Run shard I of N of every scenario's count: `I/N`, or a StatefulSet pod name and N
    /// (`scaletestd-2/3`).
    #[arg(long, env = "SCALETESTD_SHARD")]
    pub shard: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Where the daemon serves /metrics and the status page.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub listen: SocketAddr,
    /// Where the simulator listens (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub sim_listen: SocketAddr,
    /// Where the simulator serves coderd's own Prometheus metrics (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub sim_metrics_listen: SocketAddr,
    /// The demo scenario's schedule (cron with seconds).
    #[arg(long, default_value = "*/30 * * * * *")]
    pub schedule: String,
    /// Workspaces per run.
    #[arg(long, default_value_t = 10)]
    pub count: u32,
    /// The autostart herd's schedule: every two minutes by default, so that a herd (which
    /// waits for a whole minute) is not due again while it runs.
    #[arg(long, default_value = "0 */2 * * * *")]
    pub herd_schedule: String,
    /// The simulator's knobs (TOML); default: realistic latencies and a few failures.
    #[arg(long)]
    pub sim_config: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct CleanupArgs {
    /// The configuration file (TOML).
    #[arg(long)]
    pub config: PathBuf,
    /// List what would be deleted, delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Then delete each scenario's test users (`[scenario.users]`): a user named exactly
    /// `<prefix>-<n>` that owns no workspace.
    #[arg(long)]
    pub users: bool,
}

pub async fn run(args: RunArgs, cfg: Config) -> u8 {
    let shard = match args.shard.as_deref().map(Shard::parse).transpose() {
        Ok(s) => s.unwrap_or_default(),
        Err(e) => {
            eprintln!("error: --shard: {e}");
            return EXIT_USAGE;
        }
    };
    serve(
        cfg,
        Options {
            shard,
            on_run: None,
        },
        Some(args.config),
    )
    .await
}

/// Starts the daemon, says where it listens, and runs it until SIGTERM/SIGINT, re-reading
/// `reload_from` on SIGHUP (a bad file is refused with its error and the old one stays). A
/// second signal exits at once; the next start-up sweep finds what was left.
async fn serve(cfg: Config, opts: Options, reload_from: Option<PathBuf>) -> u8 {
    let handle = match daemon::start(cfg, opts).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    super::say(format_args!(
        "scaletestd listening on http://{}/ (metrics on /metrics)",
        handle.addr()
    ));
    let shutdown = async {
        super::signal().await;
        tokio::spawn(async {
            super::signal().await;
            super::say(format_args!(
                "second signal: exiting now; the next start-up sweep deletes what is left"
            ));
            std::process::exit(i32::from(EXIT_FAILED));
        });
    };
    match handle.run(shutdown, reloads(reload_from)).await {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_USAGE
        }
    }
}

/// The configurations SIGHUP brings: the file read again, when it is good.
fn reloads(path: Option<PathBuf>) -> impl futures_util::Stream<Item = Config> {
    let hup = path.map(|p| {
        let sig = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .expect("SIGHUP handler installs");
        (sig, p)
    });
    futures_util::stream::unfold(hup, |hup| async move {
        let (mut sig, path) = match hup {
            Some(h) => h,
            None => std::future::pending().await,
        };
        loop {
            sig.recv().await?;
            match Config::load(&path, &Env::from_process()) {
                Ok(cfg) => {
                    tracing::info!(path = %path.display(), "configuration re-read");
                    for w in &cfg.warnings {
                        tracing::warn!("{w}");
                    }
                    return Some((cfg, Some((sig, path))));
                }
                Err(e) => {
                    tracing::error!(error = %e, "configuration reload refused; the previous configuration stays in force")
                }
            }
        }
    })
}

/// The demo's simulator: realistic latencies and a few failures, so the dashboards move.
fn demo_sim() -> SimConfig {
    let mut s = SimConfig {
        provisioners: 4,
        ..Default::default()
    };
    s.failures.build = 0.03;
    s.failures.agent_timeout = 0.02;
    s.failures.pty_drop = 0.02;
    s.failures.app_502 = 0.02;
    // The herd autostarts within a second of its minute, not within a minute of it.
    s.autostart_tick = crate::config::HumanDuration(std::time::Duration::from_secs(1));
    // And the notifier is told at once rather than on its 15 s fetch.
    s.latency.notification = crate::sim::config::Latency::Range {
        min: crate::config::HumanDuration(std::time::Duration::from_millis(200)),
        max: crate::config::HumanDuration(std::time::Duration::from_millis(1500)),
    };
    s
}

/// A random run-API token in a new file readable by this user only.
fn write_demo_api_token() -> std::io::Result<std::path::PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = std::env::temp_dir().join(format!("scaletestd-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("api-token");
    let _ = std::fs::remove_file(&path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    writeln!(
        f,
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )?;
    Ok(path)
}

/// `coder ssh --stdio` played by this binary against the demo's simulator.
fn demo_proxy_command() -> String {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "scaletestd".into());
    format!(
        "'{}' sim-coder ssh --stdio {{workspace}}",
        exe.replace('\'', "'\\''")
    )
}

/// The demo's configuration, pointing at its simulator.
pub fn demo_config(
    args: &DemoArgs,
    sim_url: &url::Url,
    token: &str,
    api_token_file: &std::path::Path,
) -> Result<Config, String> {
    let text = format!(
        r#"[coder]
url = "{sim_url}"

[server]
listen = "{listen}"
shutdown_grace = "30s"
api_token_file = {api_token_file}

[telemetry]
propagate = true
{trace_link}

[[scenario]]
name = "demo"
schedule = "{schedule}"
template = "docker"
parameters = {{ image = "codercom/enterprise-base:ubuntu" }}
count = {count}
concurrency = {concurrency}
phases = ["parameters", "create", "build", "agent", "app", "ssh", "pty", "stop", "start", "agent", "delete"]
run_command = "echo hello from $(hostname)"
expect_output = "hello from"

[scenario.ssh]
transport = "proxy-command"
proxy_command = {proxy}

[scenario.app]
slug = "echo"
expect = "echo app on"

# Sustained traffic: two workspaces kept running, one web terminal and one SSH session each,
# 64 bytes echoed every second.
[[scenario]]
name = "demo-traffic"
kind = "traffic"
workspace_prefix = "demo-traffic"
template = "docker"
count = 2
phases = ["create", "build", "agent", "delete"]

[scenario.traffic]
sessions_per_workspace = 1
transports = ["pty", "ssh"]
bytes_per_tick = 64
tick_interval = "1s"

[scenario.ssh]
transport = "proxy-command"
proxy_command = {proxy}

[scenario.timeouts]
build = "2m"
agent = "1m"
pty = "20s"
delete = "2m"

# The start-of-day herd: four workspaces of two test users, stopped, then started together by
# Coder's lifecycle executor at one scheduled minute, measured from that minute.
[[scenario]]
name = "demo-autostart"
kind = "autostart"
workspace_prefix = "demo-herd"
schedule = "{herd_schedule}"
template = "docker"
count = 4
# The test users create the workspaces; the token's user is told of each in its inbox.
phases = ["create", "notify", "build", "agent", "stop", "autostart.created", "autostart.acquired", "autostart.built", "autostart.ready", "delete"]

[scenario.users]
count = 2
prefix = "demo-user"

[scenario.timeouts]
"autostart.created" = "3m"
"#,
        listen = args.listen,
        schedule = args.schedule,
        herd_schedule = args.herd_schedule,
        count = args.count,
        concurrency = args.count.clamp(1, 5),
        proxy = toml::Value::String(demo_proxy_command()),
        api_token_file = toml::Value::String(api_token_file.display().to_string()),
        // Without a tracing backend, the page's trace ids link to what the daemon itself
        // knows of them (the failed workspace, its run, its error).
        trace_link = if crate::config::Env::from_process().otlp_endpoint.is_none()
            && args.listen.port() != 0
        {
            format!(
                "trace_link = \"http://{}/api/v1/traces/{{trace_id}}\"",
                args.listen
            )
        } else {
            String::new()
        },
    );
    let env = Env {
        coder_session_token: Some(token.to_string()),
        ..Env::from_process()
    };
    Config::parse("demo", &text, &env).map_err(|e| e.to_string())
}

pub async fn demo(args: DemoArgs) -> (u8, Option<Config>) {
    let sim_cfg = match &args.sim_config {
        Some(p) => match SimConfig::load(p) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return (EXIT_USAGE, None);
            }
        },
        None => demo_sim(),
    };
    let mut sim_cfg = sim_cfg;
    sim_cfg
        .metrics_listen
        .get_or_insert(args.sim_metrics_listen);
    if sim_cfg.tracing.otlp_endpoint.is_none() {
        sim_cfg.tracing.otlp_endpoint = Env::from_process().otlp_endpoint;
    }
    let token = format!("demo-{}", uuid::Uuid::new_v4().simple());
    let sim = match Sim::start(sim_cfg, &token, args.sim_listen).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "error: the simulator cannot listen on {}: {e}",
                args.sim_listen
            );
            return (EXIT_USAGE, None);
        }
    };
    // The run API's token: random, in a file only this user can read, never printed.
    let api_token_file = match write_demo_api_token() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: cannot write the demo's API token file: {e}");
            return (EXIT_USAGE, None);
        }
    };
    let cfg = match demo_config(&args, &sim.url(), &token, &api_token_file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return (EXIT_USAGE, None);
        }
    };
    super::say(format_args!(
        "Coder simulator on {}; coderd metrics on http://{}/metrics",
        sim.url(),
        sim.metrics_addr()
    ));
    super::say(format_args!(
        "demo scenario: {} workspaces on schedule \"{}\"",
        args.count, args.schedule
    ));
    super::say(format_args!(
        "start a run now: curl -X POST -H \"Authorization: Bearer $(cat {})\" -d '{{\"scenario\": \"demo\"}}' http://{}/api/v1/runs",
        api_token_file.display(),
        args.listen
    ));
    let code = serve(
        cfg.clone(),
        Options {
            shard: Shard::default(),
            on_run: Some(Box::new(move |r| {
                use std::io::Write;
                // One line per finished run, for the person watching: when, which, the
                // summary, and where the page with its details is.
                let page = if args.listen.port() != 0 {
                    format!(" — http://{}/", args.listen)
                } else {
                    String::new()
                };
                // A closed stdout must not take the daemon down.
                let _ = writeln!(
                    std::io::stdout().lock(),
                    "{} {}: {}{page}",
                    chrono::Local::now().format("%H:%M:%S"),
                    r.scenario,
                    crate::report::summary_line(r)
                );
            })),
        },
        None,
    )
    .await;
    sim.stop().await;
    if let Some(dir) = api_token_file.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
    (code, Some(cfg))
}

pub async fn cleanup(args: CleanupArgs, cfg: Config) -> u8 {
    let client = super::client(&cfg);
    let mut failed = false;
    for sc in &cfg.scenarios {
        match crate::sweep::sweep(&client, sc, None, &Default::default(), args.dry_run).await {
            Ok(r) => {
                for name in &r.found {
                    println!(
                        "{} {name}",
                        if args.dry_run {
                            "would delete"
                        } else {
                            "deleting"
                        }
                    );
                }
                for (name, e) in &r.failed {
                    println!("FAILED {name}: {e}");
                }
                if args.dry_run {
                    println!(
                        "scenario {:?}: {} leftover workspaces",
                        sc.name,
                        r.found.len()
                    );
                } else {
                    println!(
                        "scenario {:?}: {} leftover workspaces, {} deleted",
                        sc.name,
                        r.found.len(),
                        r.deleted
                    );
                }
                failed |= !r.failed.is_empty();
            }
            Err(e) => {
                println!("FAILED scenario {:?}: {e}", sc.name);
                failed = true;
            }
        }
        if let (true, Some(spec)) = (args.users, &sc.users) {
            match crate::users::remove(&client, &spec.prefix, args.dry_run).await {
                Ok(r) => {
                    let verb = if args.dry_run {
                        "would delete"
                    } else {
                        "deleted"
                    };
                    for name in &r.deleted {
                        println!("{verb} user {name}");
                    }
                    for (name, why) in &r.kept {
                        println!("kept user {name}: {why}");
                    }
                    println!(
                        "scenario {:?}: {} test users {verb}, {} kept",
                        sc.name,
                        r.deleted.len(),
                        r.kept.len()
                    );
                }
                Err(e) => {
                    println!("FAILED scenario {:?} users: {e}", sc.name);
                    failed = true;
                }
            }
        }
    }
    if failed { EXIT_FAILED } else { EXIT_OK }
}
