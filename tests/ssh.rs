//! The `ssh` phase over both transports against the simulator's real SSH server, every
//! failure class, and no proxy process or workspace left behind.
//!
//! A test binary of its own, not in `tests/it`: it makes this process the reaper of orphans
//! and counts the process's descendants, which other tests' children would join there.

#[path = "it/common/mod.rs"]
mod common;

use std::time::Duration;

use common::*;
use scaletestd::phases::{Phase, Reason};
use scaletestd::report;

fn proxy(prefix_cmd: &str) -> String {
    format!(
        r#"phases = ["create", "build", "agent", "ssh", "pty", "delete"]
[scenario.ssh]
transport = "proxy-command"
proxy_command = "{prefix_cmd}{BIN} sim-coder ssh --stdio {{workspace}}""#
    )
}

fn tcp(sim: &scaletestd::sim::Sim) -> String {
    format!(
        r#"phases = ["create", "build", "agent", "ssh", "pty", "delete"]
[scenario.ssh]
transport = "tcp"
address = "{}"
user = "{{workspace}}""#,
        sim.ssh_addr()
    )
}

/// Proxy processes this test started that still run (orphans included: see
/// [`reap_orphans`]).
fn proxies_left() -> Vec<String> {
    descendants()
        .into_iter()
        .map(|(_, cmd)| cmd)
        .filter(|c| c.contains("sim-coder ssh --stdio"))
        .collect()
}

async fn no_proxies_left() {
    let waited = tokio::time::timeout(
        Duration::from_secs(6),
        eventually(Duration::from_secs(5), || proxies_left().is_empty()),
    )
    .await;
    assert!(waited.is_ok(), "proxy processes left: {:?}", proxies_left());
}

/// `scaletestd once` on `count` workspaces with `scenario_extra`; its exit code and stdout.
fn once(sim: &scaletestd::sim::Sim, count: u32, scenario_extra: &str) -> (i32, String) {
    reap_orphans();
    let dir = TempDir::new("ssh-once");
    let cfg = ConfigText::new(sim.url())
        .scenario(
            ScenarioText::new("ssh", count)
                .key("concurrency = 10")
                .key("run_command = \"echo hello-ssh\"")
                .key("expect_output = \"hello-ssh\"")
                .keys(scenario_extra),
        )
        .write(&dir, "once.toml");
    let ran = Bin::new(&["once", "--config"]).arg(&cfg).run();
    (ran.code.unwrap_or(-1), ran.stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_workspaces_over_each_transport() {
    reap_orphans();
    let sim = start(fast_sim()).await;
    for (name, extra) in [("proxy-command", proxy("")), ("tcp", tcp(&sim))] {
        let (code, stdout) = tokio::task::block_in_place(|| once(&sim, 30, &extra));
        assert_eq!(code, 0, "{name}: {stdout}");
        assert_eq!(
            stdout.lines().next(),
            Some("30 workspaces: 30 succeeded, 0 failed"),
            "{name}"
        );
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with("ssh ") && l.contains(" 30 ")),
            "{name}: {stdout}"
        );
        assert!(
            stdout.lines().any(|l| l.starts_with("ssh.handshake ")),
            "{name}: {stdout}"
        );
        assert_eq!(
            stdout.lines().any(|l| l.starts_with("ssh.proxy_startup ")),
            name == "proxy-command",
            "{stdout}"
        );
    }
    assert!(settle(&sim).await.is_empty());
    no_proxies_left().await;
}

/// Runs `count` workspaces in-process; the report.
async fn run_with(
    sim: &scaletestd::sim::Sim,
    count: u32,
    extra: &str,
) -> scaletestd::runner::RunReport {
    let cfg = config(sim, count, count, extra);
    run(&cfg).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_failures_are_classified_on_both_transports() {
    reap_orphans();
    let mut sc = fast_sim();
    sc.seed = 11;
    sc.failures.ssh_refuse = 0.2;
    sc.failures.ssh_auth = 0.2;
    sc.failures.ssh_stall = 0.2;
    let sim = start(sc).await;
    let mut seen = std::collections::BTreeSet::new();
    for extra in [proxy(""), tcp(&sim)] {
        let r = run_with(&sim, 40, &extra).await;
        let ledger_name = |w: &scaletestd::runner::WorkspaceReport| w.name.clone();
        let cfg = &sim.app.state.cfg;
        for w in &r.workspaces {
            let name = ledger_name(w);
            let expected = if cfg.inject("ssh_refuse", &name, 0.2) {
                Some(Reason::ConnectError)
            } else if cfg.inject("ssh_stall", &name, 0.2) {
                Some(Reason::Timeout)
            } else if cfg.inject("ssh_auth", &name, 0.2) {
                Some(Reason::AuthError)
            } else {
                None
            };
            let got = w.failure().map(|(p, r, _)| (p, r));
            assert_eq!(
                got,
                expected.map(|r| (Phase::Ssh, r)),
                "{name}: {:?}",
                w.failure()
            );
        }
        seen.extend(r.failures_by_phase().into_keys());
        assert!(
            r.workspaces
                .iter()
                .all(|w| w.record(Phase::Delete).is_some_and(|d| d.ok)),
            "delete still ran"
        );
    }
    for reason in [Reason::ConnectError, Reason::Timeout, Reason::AuthError] {
        assert!(
            seen.contains(&(Phase::Ssh, reason)),
            "80 workspaces at 20% each include {reason}: {seen:?}"
        );
    }
    assert!(settle(&sim).await.is_empty());
    no_proxies_left().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_proxies_and_outputs_fail_with_the_right_reason() {
    reap_orphans();
    let sim = start(fast_sim()).await;
    let cases: Vec<(String, Reason, &str)> = vec![
        // A proxy command that does not exist: its stderr is in the error.
        (
            r#"phases = ["create", "build", "agent", "ssh", "delete"]
[scenario.ssh]
proxy_command = "/nonexistent/coder ssh --stdio {workspace}""#
                .into(),
            Reason::ConnectError,
            "not found",
        ),
        // A proxy that dies mid-session (the command outlives it).
        (
            proxy("timeout 3 ")
                .replace("\"pty\", ", "")
                .replace("echo hello-ssh", "sleep 4; echo hello-ssh"),
            Reason::ConnectError,
            "closed|exited",
        ),
        // Something that is not SSH behind the proxy.
        (
            r#"phases = ["create", "build", "agent", "ssh", "delete"]
[scenario.ssh]
proxy_command = "printf 'SSH-2.0-x\r\n'; head -c 4096 /dev/urandom; sleep 4""#
                .into(),
            Reason::ProtocolError,
            "handshake",
        ),
    ];
    for (extra, reason, words) in cases {
        let mut cfg = config(&sim, 2, 2, &extra);
        if extra.contains("timeout 3 ") {
            cfg.scenarios[0].run_command = "sleep 4; echo hello-ssh".into();
        }
        let r = run(&cfg).await;
        for w in &r.workspaces {
            let (phase, got, msg) = w
                .failure()
                .unwrap_or_else(|| panic!("{extra}: expected a failure"));
            assert_eq!((phase, got), (Phase::Ssh, reason), "{extra}: {msg}");
            assert!(words.split('|').any(|w| msg.contains(w)), "{extra}: {msg}");
        }
    }
    // Output that does not match: the first bytes seen are in the error.
    let mut cfg = config(&sim, 2, 2, &tcp(&sim));
    cfg.scenarios[0].expect_output = "goodbye".into();
    let r = run(&cfg).await;
    let (phase, reason, msg) = r.workspaces[0].failure().unwrap();
    assert_eq!((phase, reason), (Phase::Ssh, Reason::OutputMismatch));
    assert!(msg.contains("hello-42"), "{msg}");
    assert!(settle(&sim).await.is_empty());
    no_proxies_left().await;
    let s = report::summary_line(&r);
    assert!(s.contains("2 ssh: output_mismatch"), "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_hosts_are_checked_and_identity_files_used() {
    reap_orphans();
    let mut sc = fast_sim();
    sc.ssh_require_key = true;
    let sim = start(sc).await;
    let dir = std::env::temp_dir().join(format!("scaletestd-ssh-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = sim.ssh_addr().port();
    let known = |key: &str| {
        let path = dir.join(format!("known_hosts-{}", key.len() % 97));
        std::fs::write(&path, format!("[127.0.0.1]:{port} {key}\n")).unwrap();
        path
    };
    let right = known(sim.ssh_host_key());
    let other = scaletestd::sim::ssh::host_key()
        .public_key()
        .to_openssh()
        .unwrap();
    let wrong = dir.join("known_hosts-wrong");
    std::fs::write(&wrong, format!("[127.0.0.1]:{port} {other}\n")).unwrap();
    let identity = dir.join("id_ed25519");
    let key = scaletestd::sim::ssh::host_key();
    std::fs::write(
        &identity,
        key.to_openssh(russh::keys::ssh_key::LineEnding::LF)
            .unwrap()
            .as_bytes(),
    )
    .unwrap();

    let ssh = |known_hosts: Option<&std::path::Path>, identity: Option<&std::path::Path>| {
        let mut extra = tcp(&sim).replace("\"ssh\", \"pty\"", "\"ssh\"");
        if let Some(k) = known_hosts {
            extra.push_str(&format!("\nknown_hosts = {:?}", k.display().to_string()));
        }
        if let Some(i) = identity {
            extra.push_str(&format!("\nidentity_file = {:?}", i.display().to_string()));
        }
        config(&sim, 2, 2, &extra)
    };
    // The right host key and a key the server takes: success.
    let r = run(&ssh(Some(&right), Some(&identity))).await;
    assert_eq!(r.failed(), 0, "{}", report::summary_line(&r));
    // The server takes keys only: without an identity file, `none` is refused.
    let r = run(&ssh(Some(&right), None)).await;
    let (phase, reason, msg) = r.workspaces[0].failure().expect("refused");
    assert_eq!((phase, reason), (Phase::Ssh, Reason::AuthError), "{msg}");
    assert!(msg.contains("with none"), "{msg}");
    // A host key other than the one recorded: refused before authenticating.
    let r = run(&ssh(Some(&wrong), Some(&identity))).await;
    let (phase, reason, msg) = r.workspaces[0].failure().expect("refused");
    assert_eq!((phase, reason), (Phase::Ssh, Reason::AuthError), "{msg}");
    assert!(msg.contains("handshake"), "{msg}");
    assert!(settle(&sim).await.is_empty());
}

/// `coder ssh` reads `coder.<ws>` as workspace `coder`, agent `<ws>` unless told to strip the
/// prefix (cli/ssh.go): the stand-in reads it the same way, so the mistake fails here as it
/// fails against Coder, and the flag mends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coder_dot_prefix_needs_its_flag_as_with_coder() {
    reap_orphans();
    let sim = start(fast_sim()).await;
    let with = |target: &str| {
        format!(
            r#"phases = ["create", "build", "agent", "ssh", "delete"]
[scenario.ssh]
proxy_command = "{BIN} sim-coder ssh --stdio {target}""#
        )
    };
    let r = run_with(&sim, 3, &with("coder.{workspace}")).await;
    assert_eq!(r.failed(), 3, "{}", report::summary_line(&r));
    for w in &r.workspaces {
        let (phase, reason, msg) = w.failure().unwrap();
        assert_eq!((phase, reason), (Phase::Ssh, Reason::ConnectError), "{msg}");
        assert!(msg.contains("workspace \"coder\""), "{msg}");
    }
    for target in [
        "--ssh-host-prefix coder. coder.{workspace}",
        "--hostname-suffix coder {workspace}.coder",
        "{workspace}",
        "{owner}/{workspace}",
        "{owner}--{workspace}.{agent}",
    ] {
        let r = run_with(&sim, 3, &with(target)).await;
        assert_eq!(r.failed(), 0, "{target}: {}", report::summary_line(&r));
    }
    assert!(settle(&sim).await.is_empty());
    no_proxies_left().await;
}

/// The process check above can fail: it sees what this test started, orphans included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_process_check_sees_our_children_and_orphans() {
    reap_orphans();
    let mut child = std::process::Command::new("sh")
        .args(["-c", "a=30; sleep $a & exec sleep $((a+1))"])
        .spawn()
        .unwrap();
    eventually(Duration::from_secs(5), || {
        let d = descendants();
        d.iter().any(|(_, c)| c == "sleep 30 ") && d.iter().any(|(_, c)| c == "sleep 31 ")
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    // `sleep 30` lost its parent: it is ours still.
    let d = descendants();
    let orphan = d
        .iter()
        .find(|(_, c)| c == "sleep 30 ")
        .expect("the orphan is ours");
    assert!(!d.iter().any(|(_, c)| c == "sleep 31 "));
    // SAFETY: kill(2) on a pid this test started.
    unsafe { libc::kill(orphan.0 as i32, libc::SIGKILL) };
}
