//! `scaletestd check`: the configuration is valid, Coder answers, the token is accepted, every
//! scenario's template and parameters exist, the SSH proxy command would run and name the
//! right workspace, and which transport workspaces would be followed over.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::{EXIT_FAILED, EXIT_OK};
use crate::coder::ssh_target;
use crate::coder::watch::Updates;
use crate::coder::{Client, Dialect};
use crate::config::{Scenario, ScenarioKind, SshTransport, Transport};
use crate::phases::Phase;

pub async fn run(path: &Path, cfg: crate::config::Config) -> u8 {
    println!(
        "ok   configuration {} ({} scenarios)",
        path.display(),
        cfg.scenarios.len()
    );
    let client = super::client(&cfg);
    let mut failed = false;
    let server_version = match client.build_info().await {
        Ok(b) => {
            println!("ok   Coder {} answers at {}", b.version, cfg.coder.url);
            b.version
        }
        Err(e) => {
            println!("FAIL Coder at {}: {e}", cfg.coder.url);
            return EXIT_FAILED;
        }
    };
    coder_tracing(&client, &cfg.telemetry).await;
    let me = match client.me().await {
        Ok(u) => {
            println!("ok   session token accepted (user {:?})", u.username);
            u
        }
        Err(e) => {
            println!("FAIL session token: {e}");
            return EXIT_FAILED;
        }
    };
    watch_transport(&client).await;
    for s in &cfg.scenarios {
        match crate::runner::prepare(&client, s, cfg.coder.organization.as_deref()).await {
            Ok(b) => println!(
                "ok   scenario {:?}: template {:?} with {} parameters",
                s.name,
                b.template_name,
                b.parameters.len()
            ),
            Err(e) => {
                failed = true;
                println!("FAIL scenario {:?}: {}", s.name, e.message);
            }
        }
        if crate::phases::cleanup(&s.phases).is_none() {
            println!(
                "ok   scenario {:?}: a form load ({}): it creates no workspace, so it needs no \"delete\"",
                s.name,
                s.phases
                    .iter()
                    .map(|p| format!("{p:?}", p = p.as_str()))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if s.phases.contains(&Phase::Notify) {
            println!(
                "note scenario {:?}: \"notify\" watches the inbox of user {:?}, which Coder notifies of new workspaces only as a template admin or owner",
                s.name, me.username
            );
        }
        if uses_ssh(s) && !ssh_command(s, &me.username, &cfg.coder.url, &server_version).await {
            failed = true;
        }
    }
    if failed { EXIT_FAILED } else { EXIT_OK }
}

/// What Coder does with our traces, from its own answers (see `coder::trace`): whether its
/// server spans join ours, and how to turn them on.
async fn coder_tracing(client: &Client, telemetry: &crate::config::TelemetryConfig) {
    const TURN_ON: &str = "set CODER_TRACE_ENABLE=true on coderd, and OTEL_EXPORTER_OTLP_ENDPOINT (or CODER_TRACE_HONEYCOMB_API_KEY) for where its spans go";
    let said = client.probe_tracing(telemetry.propagate).await;
    let config = client.deployment_traces().await.ok().flatten();
    match (&said, telemetry.propagate) {
        (Ok(Some(true)), true) => println!(
            "ok   Coder records server spans for our requests (its X-Span-ID is its own): they join our traces"
        ),
        (Ok(Some(false)), true) => println!(
            "warn Coder does not record traces: it echoes our span id (X-Span-ID) as a tracer that is off does, so no span of Coder's will be in our traces; {TURN_ON}"
        ),
        (Ok(None), true) => println!(
            "warn cannot tell whether Coder traces: it answered a traceparent without X-Trace-ID (a proxy that strips it, or a Coder before the header); Coder's spans may be missing from our traces"
        ),
        (Ok(Some(true)), false) => println!(
            "note Coder traces requests (X-Trace-ID), but [telemetry] propagate = false: its spans form traces of their own, linked from our client spans, not joined to ours"
        ),
        (Ok(_), false) => println!(
            "warn Coder does not trace requests (no X-Trace-ID); {TURN_ON}. With [telemetry] propagate = false its spans would be in traces of their own, linked from ours"
        ),
        (Err(e), _) => println!("note cannot tell whether Coder traces requests: {e}"),
    }
    match (config, said.as_ref().ok().copied().flatten()) {
        (Some(on), Some(seen)) if on != seen => println!(
            "warn Coder's deployment config says trace.enable = {on}, but its answers say it {} traces (a proxy in between, or a tracer that is not Coder's)",
            if seen { "does" } else { "does not" }
        ),
        (Some(on), _) => println!("ok   Coder's deployment config agrees: trace.enable = {on}"),
        (None, _) => println!(
            "note cannot read Coder's deployment config (owners only): its trace settings are known from its answers alone"
        ),
    }
    if telemetry.propagate
        && let Ok(sampler) = std::env::var("OTEL_TRACES_SAMPLER")
        && !matches!(sampler.as_str(), "always_on" | "parentbased_always_on")
    {
        println!(
            "note OTEL_TRACES_SAMPLER={sampler}: Coder records only the requests we sample (its sampler follows our traceparent's flag); unsampled runs have no Coder spans"
        );
    }
}

/// Which stream workspaces are followed over, probed on a workspace of the token's user when
/// there is one (a route's absence only shows on a workspace that exists).
async fn watch_transport(client: &Client) {
    let any = client
        .workspaces("owner:me", 1, 0)
        .await
        .ok()
        .and_then(|p| p.workspaces.into_iter().next());
    let Some(ws) = any else {
        println!(
            "note workspaces will be followed over watch-ws (Coder v2.22 on), else the SSE watch, else by polling: the first run decides (no workspace to probe with now)"
        );
        return;
    };
    let mut updates = Updates::new(client, ws.id, Arc::new(Dialect::default()));
    match updates.probe().await {
        Ok(t) => println!(
            "ok   workspaces are followed over {t} (probed on workspace {:?})",
            ws.name
        ),
        Err(e) => println!("note cannot probe the watch stream: {e}"),
    }
}

fn uses_ssh(s: &Scenario) -> bool {
    match s.kind {
        ScenarioKind::Lifecycle | ScenarioKind::Autostart => s.phases.contains(&Phase::Ssh),
        ScenarioKind::Traffic => s.traffic.transports.contains(&Transport::Ssh),
    }
}

/// Shows the command the `ssh` phase would run for a sample workspace, checks its program is
/// on PATH and, for Coder's CLI, that it names the sample workspace and matches the server's
/// version (a warning). False when the command cannot work.
async fn ssh_command(s: &Scenario, owner: &str, coder: &url::Url, server_version: &str) -> bool {
    let template = match &s.ssh.transport {
        SshTransport::Tcp(addr) => {
            println!("ok   scenario {:?}: ssh connects to {addr} (TCP)", s.name);
            return true;
        }
        SshTransport::ProxyCommand(t) => t,
    };
    let sample = crate::ssh::Target {
        workspace: format!("{}-sample-1", s.workspace_prefix),
        owner: owner.to_string(),
        agent: "main".into(),
    };
    let cmd = sample.expand(template);
    println!(
        "ok   scenario {:?}: ssh runs `{cmd}` for workspace {:?}",
        s.name, sample.workspace
    );
    let words = shell_words(&cmd);
    let Some(program) = words.iter().find(|w| !is_assignment(w)) else {
        println!("FAIL scenario {:?}: the proxy command is empty", s.name);
        return false;
    };
    let Some(found) = on_path(program) else {
        println!(
            "FAIL scenario {:?}: {program:?} is not on PATH: install it (Coder serves its CLI at {}bin/coder-linux-amd64) or give its full path",
            s.name, coder
        );
        return false;
    };
    if found.file_name().and_then(|n| n.to_str()) != Some("coder") {
        return true;
    }
    let mut ok = true;
    if let Some(target) = coder_ssh_target(&words) {
        match ssh_target::parse(&target.input, &target.prefix, &target.suffix) {
            Ok(t) if t.workspace == sample.workspace => {}
            Ok(t) => {
                ok = false;
                println!(
                    "FAIL scenario {:?}: `coder ssh` reads {:?} as workspace {:?}{}, not {:?}: drop the prefix or add `--ssh-host-prefix <prefix>` (Coder strips a host prefix only when told to)",
                    s.name,
                    target.input,
                    t.workspace,
                    t.agent
                        .map(|a| format!(", agent {a:?}"))
                        .unwrap_or_default(),
                    sample.workspace
                );
            }
            Err(e) => {
                ok = false;
                println!(
                    "FAIL scenario {:?}: `coder ssh` cannot read {:?}: {e}",
                    s.name, target.input
                );
            }
        }
    }
    match coder_version(&found).await {
        Some(v) if core_version(&v) == core_version(server_version) => {
            println!("ok   {} is Coder {v}, as the server", found.display())
        }
        Some(v) => println!(
            "warn {} is Coder {v} but the server is {server_version}: use the CLI the server serves at /bin/coder-<os>-<arch>",
            found.display()
        ),
        None => println!(
            "warn cannot tell the version of {} (`coder version` failed)",
            found.display()
        ),
    }
    ok
}

/// `coder ssh`'s target and host flags, from the proxy command's words.
struct CoderSshArgs {
    input: String,
    prefix: String,
    suffix: String,
}

fn coder_ssh_target(words: &[String]) -> Option<CoderSshArgs> {
    let at = words.iter().position(|w| w == "ssh")?;
    let mut args = CoderSshArgs {
        input: String::new(),
        prefix: String::new(),
        suffix: String::new(),
    };
    let mut rest = words[at + 1..].iter();
    while let Some(w) = rest.next() {
        let (flag, inline) = match w.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (w.as_str(), None),
        };
        let mut value = || inline.clone().or_else(|| rest.next().cloned());
        match flag {
            "--ssh-host-prefix" => args.prefix = value().unwrap_or_default(),
            "--hostname-suffix" => args.suffix = value().unwrap_or_default(),
            f if f.starts_with('-') => {}
            _ => args.input = w.clone(),
        }
    }
    (!args.input.is_empty()).then_some(args)
}

/// `VAR=value` before a command.
fn is_assignment(w: &str) -> bool {
    w.split_once('=').is_some_and(|(k, _)| {
        !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// Splits a command line as `sh` would for plain words: quotes and backslashes, no
/// expansions.
fn shell_words(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur: Option<String> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                let w = cur.get_or_insert_with(String::new);
                w.extend(chars.by_ref().take_while(|c| *c != '\''));
            }
            '"' => {
                let w = cur.get_or_insert_with(String::new);
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => w.extend(chars.next()),
                        c => w.push(c),
                    }
                }
            }
            '\\' => cur.get_or_insert_with(String::new).extend(chars.next()),
            c if c.is_whitespace() => words.extend(cur.take()),
            ';' | '&' | '|' => {
                words.extend(cur.take());
                words.push(c.to_string());
            }
            c => cur.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(cur);
    words
}

/// Where `program` runs from: itself when it has a `/`, else the first match on PATH.
fn on_path(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        return runnable(&p).then_some(p);
    }
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join(program))
        .find(|p| runnable(p))
}

/// `coder version`'s version (`v2.22.0+abc123`), within 10 s.
async fn coder_version(coder: &Path) -> Option<String> {
    let out = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::process::Command::new(coder)
            .arg("version")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .ok()?
    .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find(|w| w.starts_with('v') && w[1..].starts_with(|c: char| c.is_ascii_digit()))
        .map(str::to_string)
}

/// `2.22.0` of `v2.22.0+abc-devel`.
fn core_version(v: &str) -> &str {
    let v = v.trim().trim_start_matches('v');
    v.split(['+', '-', ' ']).next().unwrap_or(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_proxy_command_as_sh_and_coder_would() {
        let w = shell_words(
            "CODER_X=1 '/opt/my coder' ssh --stdio --ssh-host-prefix=coder. \"coder.ws\"",
        );
        assert_eq!(
            w,
            [
                "CODER_X=1",
                "/opt/my coder",
                "ssh",
                "--stdio",
                "--ssh-host-prefix=coder.",
                "coder.ws"
            ]
        );
        assert!(is_assignment(&w[0]) && !is_assignment(&w[1]));
        let t = coder_ssh_target(&w).unwrap();
        assert_eq!(
            (t.input.as_str(), t.prefix.as_str()),
            ("coder.ws", "coder.")
        );
        let t = coder_ssh_target(&shell_words(
            "coder ssh --stdio --hostname-suffix coder ws.coder",
        ))
        .unwrap();
        assert_eq!((t.input.as_str(), t.suffix.as_str()), ("ws.coder", "coder"));
        assert_eq!(core_version("v2.22.0+abc123"), "2.22.0");
        assert_eq!(core_version("v2.22.0-devel+abc"), "2.22.0");
    }
}
