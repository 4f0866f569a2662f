//! A real coderd v2.36.1 (`scripts/real-coder`), one at a time: the walk (`walk`), the
//! simulator held against it call by call (`conformance`), and every other feature
//! (`features`).

mod conformance;
mod daemon;
mod features;
mod walk;

use std::path::Path;

use crate::common::real::{RealCoder, join_netns};
use crate::common::{Bin, ConfigText, Exclusive, Ran, ScenarioText, exclusive};

/// The command both transports run; its output is matched on `hello-42`, which the
/// command line itself does not contain.
const ECHO: &str = "echo hello-$((40+2))";

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

/// `scaletestd <args>` as the deployment's admin, in this namespace.
fn bin(coder: &RealCoder, args: &[&str]) -> Ran {
    Bin::new(args)
        .env("CODER_SESSION_TOKEN", coder.get("CODER_SESSION_TOKEN"))
        .env("RUST_LOG", "warn")
        .run()
}

async fn bin_async(coder: &RealCoder, args: &[&str]) -> Ran {
    tokio::task::block_in_place(|| bin(coder, args))
}

/// Timeouts for a real build: coderd runs Terraform and pulls nothing, but a loaded
/// machine makes a minute possible.
fn slow(s: ScenarioText) -> ScenarioText {
    s.timeout("build", "90s")
        .timeout("agent", "90s")
        .timeout("delete", "90s")
}

/// A scenario of `count` from this coderd's template `template` (an env key of
/// `scripts/real-coder`), its workspaces named `prefix-…`.
fn scenario(
    coder: &RealCoder,
    template: &str,
    name: &str,
    prefix: &str,
    count: u32,
) -> ScenarioText {
    ScenarioText::new(name, count)
        .template(coder.get(template))
        .prefix(prefix)
}

/// `[scenario.ssh]` through Coder's own CLI, over DERP (direct connections off).
fn coder_ssh(coder: &RealCoder) -> String {
    format!(
        "proxy_command = \"{} --disable-direct-connections ssh --stdio {{workspace}}\"",
        coder.get("CODER_BIN")
    )
}

/// `once` with `args` after the configuration, which must end `n/n`; what it printed.
async fn once_all(coder: &RealCoder, cfg: &str, n: u32, args: &[&str]) -> Ran {
    let mut all = vec!["once", "--config", cfg];
    all.extend_from_slice(args);
    let out = bin_async(coder, &all).await;
    assert_eq!(out.code, Some(0), "{out}");
    assert!(
        out.stdout
            .contains(&format!("{n} workspaces: {n} succeeded, 0 failed")),
        "{out}"
    );
    out
}

/// A configuration: `[coder]` at this coderd, a `[server]` on any port.
fn here(coder: &RealCoder) -> ConfigText {
    ConfigText::new(coder.get("CODER_URL"))
        .server("listen = \"127.0.0.1:0\"")
        .server("shutdown_grace = \"60s\"")
}

/// `text` written to `dir/name`; its path.
fn write(dir: &Path, name: &str, text: ConfigText) -> String {
    text.write(dir, name).to_str().unwrap().to_string()
}

/// coderd's answer to `GET path` as the admin (the rate-limit bypass: the test's own
/// polling must not eat the runs' windows).
async fn coder_get(coder: &RealCoder, path_and_query: &str) -> serde_json::Value {
    let mut url = url::Url::parse(coder.get("CODER_URL")).unwrap();
    let (p, q) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    url.set_path(p);
    url.set_query((!q.is_empty()).then_some(q));
    let resp = reqwest::Client::new()
        .get(url)
        .header("Coder-Session-Token", coder.get("CODER_SESSION_TOKEN"))
        .header("X-Coder-Bypass-Ratelimit", "true")
        .send()
        .await
        .expect("coderd answers");
    assert_eq!(resp.status(), 200, "GET {path_and_query}");
    serde_json::from_str(&resp.text().await.unwrap()).unwrap()
}
