//! A real coderd for a test: `scripts/real-coder` up in a network namespace of the test's
//! own, the test's thread moved into it, and `down` when dropped (`external::coder`, and
//! the coder-peer bench).
#![allow(dead_code)]

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::Instant;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// coderd exports its spans here (set before it starts; the port is the namespace's own).
pub const OTLP: &str = "127.0.0.1:4317";

/// A running `scripts/real-coder` instance; `down` when dropped.
pub struct RealCoder {
    name: String,
    env: HashMap<String, String>,
    /// The namespace this process started in, to go back to before `down`.
    host: std::fs::File,
}

fn script(args: &[&str]) -> std::process::Output {
    Command::new(format!("{ROOT}/scripts/real-coder"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("scripts/real-coder runs")
}

impl RealCoder {
    /// Starts one; `otlp`: where coderd exports its spans (`CODER_TRACE_ENABLE`), none: it
    /// does not trace.
    pub fn up(name: &str, otlp: Option<&str>) -> RealCoder {
        RealCoder::up_with(name, otlp, true)
    }

    /// [`RealCoder::up`]; `agents`: whether a real agent starts for each build (off: builds
    /// alone, as Coder's `--no-wait-for-agents` loads them).
    pub fn up_with(name: &str, otlp: Option<&str>, agents: bool) -> RealCoder {
        let started = Instant::now();
        let mut args = vec!["up", "--name", name];
        if let Some(o) = otlp {
            args.extend(["--otlp", o]);
        }
        if !agents {
            args.extend(["--agents", "off"]);
        }
        let out = script(&args);
        assert!(
            out.status.success(),
            "scripts/real-coder up failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(format!("{ROOT}/target/real-coder/run/{name}/env"))
            .expect("scripts/real-coder up wrote its env file");
        let env = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        println!(
            "real coder {name} up in {:.1?} (the build included when it was not cached)",
            started.elapsed()
        );
        RealCoder {
            name: name.to_string(),
            env,
            host: std::fs::File::open("/proc/thread-self/ns/net").expect("this thread's namespace"),
        }
    }

    pub fn get(&self, key: &str) -> &str {
        self.env
            .get(key)
            .unwrap_or_else(|| panic!("{key} missing from scripts/real-coder's env"))
    }

    /// SIGKILL coderd and start it again on the same database (bounded by the script).
    pub fn restart_coderd(&self) {
        let out = script(&["restart-coderd", "--name", &self.name]);
        assert!(
            out.status.success(),
            "restart-coderd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for RealCoder {
    fn drop(&mut self) {
        // From inside, the script's sweep of the namespace's processes would see ours.
        // SAFETY: as in `join_netns`.
        unsafe { libc::setns(self.host.as_raw_fd(), libc::CLONE_NEWNET) };
        let out = script(&["down", "--name", &self.name]);
        if !out.status.success() {
            eprintln!(
                "down failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Moves this thread into the named network namespace; threads and processes it starts
/// afterwards are born there.
pub fn join_netns(name: &str) {
    let f = std::fs::File::open(format!("/run/netns/{name}")).expect("the namespace exists");
    // SAFETY: setns on a valid namespace fd affects only the calling thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
}

/// Coder's own answer: the workspaces whose name starts with `prefix`, deleted ones excluded.
pub async fn listed(coder: &RealCoder, prefix: &str) -> Vec<serde_json::Value> {
    let resp = reqwest::Client::new()
        .get({
            let mut u = url::Url::parse(coder.get("CODER_URL")).unwrap();
            u.set_path("/api/v2/workspaces");
            u.query_pairs_mut()
                .append_pair("q", &format!("owner:me name:{prefix}"))
                .append_pair("limit", "200");
            u
        })
        .header("Coder-Session-Token", coder.get("CODER_SESSION_TOKEN"))
        // The test's own polling must not eat the run's rate-limit window (coderd lets an
        // owner skip it: coderd/httpmw/ratelimit.go).
        .header("X-Coder-Bypass-Ratelimit", "true")
        .send()
        .await
        .expect("coderd answers");
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    body["workspaces"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|w| w["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
        .collect()
}
