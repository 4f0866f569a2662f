//! The `ssh` phase against a real peer: Debian's OpenSSH server, started by the test on a
//! loopback port with its own configuration, host keys, authorized keys and pid file (the
//! test command installs `openssh-server`, `openssh-client` and `netcat-openbsd`). The
//! workspaces come from the simulator; their SSH goes to this sshd, as to a template that
//! runs its own.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;
use scaletestd::phases::{Phase, Reason};
use scaletestd::report;

/// An sshd of this test's own, killed (then its files removed) when dropped.
struct Sshd {
    child: Kill,
    port: u16,
    dir: TempDir,
    user: String,
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (the test command installs openssh)"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn keygen(path: &Path, kind: &str) {
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-N", "", "-C", "scaletestd-test", "-t", kind, "-f"])
        .arg(path);
    if kind == "rsa" {
        cmd.args(["-b", "2048"]);
    }
    run_ok(&mut cmd);
}

fn pubkey(path: &Path) -> String {
    std::fs::read_to_string(path.with_extension("pub"))
        .unwrap()
        .trim()
        .to_string()
}

/// Starts sshd with RSA, ECDSA and Ed25519 host keys, taking `client.pub` for this user.
fn start_sshd(test: &str) -> Sshd {
    let sshd = ["/usr/sbin/sshd", "/usr/bin/sshd"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("sshd is installed (the test command installs Debian's openssh-server)");
    let dir = TempDir::new(&format!("openssh-{test}"));
    for kind in ["rsa", "ecdsa", "ed25519"] {
        keygen(&dir.join(&format!("host_{kind}")), kind);
    }
    keygen(&dir.join("client"), "ed25519");
    keygen(&dir.join("stranger"), "ed25519");
    std::fs::write(
        dir.join("authorized_keys"),
        pubkey(&dir.join("client")) + "\n",
    )
    .unwrap();
    let user = run_ok(Command::new("id").arg("-un")).trim().to_string();
    let root = user == "root";
    if root {
        // sshd refuses to start as root without its privilege-separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
    }
    let port = free_port();
    let config = dir.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_rsa\nHostKey {d}/host_ecdsa\nHostKey {d}/host_ed25519\nPidFile {d}/sshd.pid\nAuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nPubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin {}\nLogLevel VERBOSE\n",
            if root { "prohibit-password" } else { "no" },
            d = dir.display()
        ),
    )
    .unwrap();
    let child = Command::new(sshd)
        .args(["-D", "-e", "-f"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.join("sshd.log")).unwrap(),
        ))
        .spawn()
        .expect("sshd starts");
    let mut d = Sshd {
        child: Kill(child),
        port,
        dir,
        user,
    };
    eventually_blocking(Duration::from_secs(5), || {
        if let Ok(Some(status)) = d.child.try_wait() {
            panic!(
                "sshd exited with {status}: {}",
                std::fs::read_to_string(d.dir.join("sshd.log")).unwrap_or_default()
            );
        }
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    d
}

impl Sshd {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A known_hosts file naming this sshd (`[127.0.0.1]:port`, or `host` as given) with the
    /// given host keys.
    fn known_hosts(&self, name: &str, host: Option<&str>, keys: &[&str]) -> PathBuf {
        let host = host
            .map(str::to_string)
            .unwrap_or_else(|| format!("[127.0.0.1]:{}", self.port));
        let text: String = keys
            .iter()
            .map(|k| format!("{host} {}\n", pubkey(&self.path(k))))
            .collect();
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("sshd.log")).unwrap_or_default()
    }
}

/// The scenario's `[scenario.ssh]` table for this sshd.
fn ssh_table(d: &Sshd, transport: &str, known: Option<&Path>, identity: &str) -> String {
    let mut t = format!(
        "phases = [\"create\", \"build\", \"agent\", \"ssh\", \"delete\"]\n[scenario.ssh]\nuser = \"{}\"\nidentity_file = {:?}\n",
        d.user,
        d.path(identity).display().to_string()
    );
    match transport {
        "tcp" => t.push_str(&format!(
            "transport = \"tcp\"\naddress = \"127.0.0.1:{}\"\n",
            d.port
        )),
        _ => t.push_str(&format!(
            "transport = \"proxy-command\"\nproxy_command = \"nc 127.0.0.1 {}\"\n",
            d.port
        )),
    }
    if let Some(k) = known {
        t.push_str(&format!("known_hosts = {:?}\n", k.display().to_string()));
    }
    t
}

async fn ssh_run(sim: &scaletestd::sim::Sim, table: &str) -> scaletestd::runner::RunReport {
    let mut cfg = config(sim, 2, 2, table);
    cfg.scenarios[0].run_command = "echo hello-$((6*7))-openssh".into();
    cfg.scenarios[0].expect_output = "hello-42-openssh".into();
    cfg.scenarios[0]
        .timeouts
        .set(Phase::Ssh, Duration::from_secs(15));
    run(&cfg).await
}

fn ssh_failure(r: &scaletestd::runner::RunReport) -> (Reason, String) {
    let (phase, reason, msg) = r.workspaces[0]
        .failure()
        .unwrap_or_else(|| panic!("refused: {}", report::summary_line(r)));
    assert_eq!(phase, Phase::Ssh, "{msg}");
    (reason, msg.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_and_proxy_command_with_an_identity_file_and_checked_host_keys() {
    let d = start_sshd("ok");
    let sim = start(fast_sim()).await;
    let known = d.known_hosts("known_hosts", None, &["host_ed25519"]);
    let r = ssh_run(&sim, &ssh_table(&d, "tcp", Some(&known), "client")).await;
    assert_eq!(
        report::summary_line(&r),
        "2 workspaces: 2 succeeded, 0 failed",
        "{}",
        d.log()
    );
    // Through a proxy command's stdio, as through `coder ssh --stdio`.
    let r = ssh_run(&sim, &ssh_table(&d, "proxy", None, "client")).await;
    assert_eq!(
        report::summary_line(&r),
        "2 workspaces: 2 succeeded, 0 failed",
        "{}",
        d.log()
    );
    assert!(
        d.log().contains("Accepted publickey for"),
        "sshd saw our key: {}",
        d.log()
    );
    assert!(settle(&sim).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_unknown_and_refused_are_told_apart() {
    let d = start_sshd("refusals");
    let sim = start(fast_sim()).await;
    let host = format!("[127.0.0.1]:{}", d.port);

    // Another key of the same type recorded for this host: it changed.
    std::fs::write(
        d.path("wrong_known_hosts"),
        format!("{host} {}\n", pubkey(&d.path("stranger"))),
    )
    .unwrap();
    let r = ssh_run(
        &sim,
        &ssh_table(&d, "tcp", Some(&d.path("wrong_known_hosts")), "client"),
    )
    .await;
    let (reason, msg) = ssh_failure(&r);
    assert_eq!(reason, Reason::AuthError, "{msg}");
    assert!(
        msg.contains(&format!("the host key of {host} changed")) && msg.contains("line 1"),
        "{msg}"
    );

    // Nothing recorded for this host: unknown.
    let other = d.known_hosts(
        "other_known_hosts",
        Some("elsewhere.example"),
        &["host_ed25519"],
    );
    let r = ssh_run(&sim, &ssh_table(&d, "tcp", Some(&other), "client")).await;
    let (reason, msg) = ssh_failure(&r);
    assert_eq!(reason, Reason::AuthError, "{msg}");
    assert!(msg.contains(&format!("host {host} is unknown")), "{msg}");

    // The host is right, our key is not one sshd takes.
    let known = d.known_hosts("known_hosts", None, &["host_ed25519"]);
    let r = ssh_run(&sim, &ssh_table(&d, "tcp", Some(&known), "stranger")).await;
    let (reason, msg) = ssh_failure(&r);
    assert_eq!(reason, Reason::AuthError, "{msg}");
    assert!(msg.contains("refused user"), "{msg}");
    assert!(settle(&sim).await.is_empty());
}

/// An sshd with RSA, ECDSA and Ed25519 host keys and a known_hosts holding only its RSA key:
/// OpenSSH's own client logs in (it offers the types known_hosts holds first); so must we.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_hosts_with_only_the_rsa_key_is_enough_as_for_openssh() {
    let d = start_sshd("rsa-only");
    let known = d.known_hosts("rsa_known_hosts", None, &["host_rsa"]);
    let out = Command::new("ssh")
        .args([
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
        ])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known.display()))
        .arg("-i")
        .arg(d.path("client"))
        .args(["-p", &d.port.to_string()])
        .arg(format!("{}@127.0.0.1", d.user))
        .arg("echo openssh-ok")
        .output()
        .expect("ssh is installed (the test command installs openssh-client)");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "openssh-ok",
        "OpenSSH's client: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let sim = start(fast_sim()).await;
    let r = ssh_run(&sim, &ssh_table(&d, "tcp", Some(&known), "client")).await;
    assert_eq!(
        report::summary_line(&r),
        "2 workspaces: 2 succeeded, 0 failed",
        "{:?}",
        r.workspaces[0].failure()
    );
    assert!(settle(&sim).await.is_empty());
}
