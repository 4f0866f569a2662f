//! scaletestd against a real Coder (issue 23): coderd built from Coder's own module at the
//! release `scripts/real-coder` pins, with PostgreSQL, echo provisioners and one real
//! `coder agent` per workspace, all in a network namespace of this test's own. The test's
//! thread joins that namespace before it starts its runtime, so everything it starts
//! (the daemon, Prometheus, the OTLP receiver, `coder ssh`) sees only that loopback.
//!
//! If Coder cannot be built or started, the test fails with the reason: nothing is skipped.

use crate::common::shape;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::real_coder_here;
use crate::common::daemon::{cron_at, spawn, tmpdir};
use crate::common::prom::{
    Prometheus, check_series, dashboards, query, series, substitute, targets,
};
use crate::common::real::{OTLP, RealCoder, listed};
use crate::common::{Bin, ConfigText, ScenarioText, eventually_async};
use scaletestd::phases::Reason;

/// The command both transports run; its output is matched on `hello-42`, which the
/// command line itself does not contain.
const ECHO: &str = "echo hello-$((40+2))";
const WALK: &str =
    r#"["create", "build", "agent", "ssh", "pty", "app", "stop", "start", "agent", "delete"]"#;

#[test]
fn scaletestd_walks_a_real_coder() {
    let (_turn, coder, rt) = real_coder_here("sctest", Some(OTLP));
    rt.block_on(walk(&coder));
}

/// The configuration for a run of `count` at concurrency 10 through `phases`.
fn config(
    coder: &RealCoder,
    prefix: &str,
    schedule: Option<&str>,
    count: u32,
    phases: &str,
    command: &str,
) -> String {
    let mut scenario = ScenarioText::new("real", count)
        .template(coder.get("CODER_TEMPLATE"))
        .prefix(prefix)
        .key("concurrency = 10")
        .key(&format!("phases = {phases}"))
        .command(command, "hello-42")
        .timeout("build", "90s")
        .timeout("agent", "90s")
        .timeout("pty", "60s")
        .timeout("delete", "90s")
        .table(
            "ssh",
            &format!(
                "proxy_command = \"{} --disable-direct-connections ssh --stdio {{workspace}}\"",
                coder.get("CODER_BIN")
            ),
        );
    if let Some(s) = schedule {
        scenario = scenario.schedule(s);
    }
    // The app's keys are refused on a scenario without the phase.
    if phases.contains("\"app\"") {
        scenario = scenario.table(
            "app",
            &format!(
                "slug = \"{}\"\nexpect = \"hello from the real-coder app\"",
                coder.get("CODER_APP")
            ),
        );
    }
    ConfigText::new(coder.get("CODER_URL"))
        .server("listen = \"127.0.0.1:0\"")
        .server("shutdown_grace = \"60s\"")
        .telemetry(&format!("otlp_endpoint = \"http://{OTLP}\""))
        .scenario(scenario)
        .text()
}

async fn walk(coder: &RealCoder) {
    let (_, spans) = crate::common::otlp::grpc_at(OTLP).await;
    let dir = tmpdir("real-coder");

    // 1. The whole walk, 20 workspaces at concurrency 10, by the daemon on a schedule that
    //    fires once, scraped by a real Prometheus along with coderd.
    let prefix = "strc";
    let cfg_path: PathBuf = dir.join("run.toml");
    std::fs::write(
        &cfg_path,
        config(coder, prefix, Some(&cron_at(&[8])), 20, WALK, ECHO),
    )
    .unwrap();
    let d = spawn(
        &["run", "--config", cfg_path.to_str().unwrap()],
        coder.get("CODER_SESSION_TOKEN"),
    );
    let prometheus = Prometheus::start(
        &dir,
        &[("scaletestd", &d.addr), ("coder", "127.0.0.1:2112")],
        None,
    )
    .await;
    let prom = prometheus.addr.clone();
    let s = d
        .wait_for(Duration::from_secs(600), |s| {
            s.sum("scaletest_runs", &[]) >= 1.0
        })
        .await;
    let failures = s.sum("scaletest_phase_failures", &[]);
    let ok = s.sum("scaletest_runs", &[("result", "success")]);
    let count = |phase: &str| s.sum("scaletest_phase_duration_seconds", &[("phase", phase)]);
    let log = d.log();
    assert_eq!(failures, 0.0, "phase failures:\n{}", s.text);
    assert_eq!(ok, 1.0, "{log}");
    for (phase, want) in [
        ("create", 20.0),
        ("build", 20.0),
        ("agent", 40.0),
        ("ssh", 20.0),
        ("pty", 20.0),
        ("app", 20.0),
        ("stop", 20.0),
        ("start", 20.0),
        ("delete", 20.0),
    ] {
        assert_eq!(count(phase), want, "{phase} observations:\n{}", s.text);
    }
    let left = listed(coder, prefix).await;
    assert!(left.is_empty(), "Coder still lists {left:?}");
    println!("real coder walk: 20/20 through {WALK}, Coder lists none of them afterwards");
    // This coderd traces (CODER_TRACE_ENABLE with --otlp): the gauge and check say so.
    assert_eq!(s.sum("scaletest_coder_tracing", &[]), 1.0, "{}", s.text);
    let check = tokio::task::block_in_place(|| {
        crate::common::Bin::new(&["check", "--config", cfg_path.to_str().unwrap()])
            .env("CODER_SESSION_TOKEN", coder.get("CODER_SESSION_TOKEN"))
            .run()
    });
    assert!(
        check.stdout.contains(
            "ok   Coder records server spans for our requests (its X-Span-ID is its own): they join our traces"
        ) && check.stdout.contains("ok   Coder's deployment config agrees: trace.enable = true"),
        "{check}"
    );

    // 2. Traces: coderd's server spans are children of our client spans.
    let ours: HashMap<(String, String), String> = spans
        .of("scaletestd")
        .iter()
        .map(|g| ((g.trace_id(), g.span_id()), g.name().to_string()))
        .collect();
    let joined = eventually_async(Duration::from_secs(60), || async {
        let children: Vec<_> = spans
            .of("coderd")
            .into_iter()
            .filter(|g| ours.contains_key(&(g.trace_id(), g.parent_id())))
            .collect();
        (children.len() >= 20).then_some(children)
    })
    .await;
    let example = &joined[0];
    println!(
        "traces: {} coderd spans are children of scaletestd spans, e.g. coderd {:?} under ours {:?} in trace {}",
        joined.len(),
        example.name(),
        ours[&(example.trace_id(), example.parent_id())],
        example.trace_id()
    );

    // 3. Metrics: every coderd_* query of the dashboards returns data.
    eventually_async(Duration::from_secs(30), || async {
        let up = series(&prom, "up{job=~\"coder|scaletestd\"} == 1").await;
        (up == Ok(2)).then_some(())
    })
    .await;
    let mut checked = 0;
    let mut empty = Vec::new();
    for (_, dash) in dashboards() {
        for (title, t) in targets(&dash) {
            let expr = t["expr"].as_str().unwrap_or_default();
            if !expr.contains("coderd_") {
                continue;
            }
            let q = substitute(expr).replace("20s", "5m");
            checked += 1;
            check_series(&prom, &title.to_string(), &q, &mut empty).await;
        }
    }
    assert!(checked >= 5, "{checked} coderd queries");
    assert!(empty.is_empty(), "{empty:#?}");
    let builds = query(&prom, "sum(coderd_workspace_builds_total)").await;
    println!(
        "prometheus: {checked} coderd_* dashboard queries return data; coderd counted {} builds",
        builds["data"]["result"][0]["value"][1]
    );
    d.signal("TERM");
    drop(d);

    // 4. coderd killed (SIGKILL) and restarted mid-run: the run ends, every failure has a
    //    reason from our set, and after a sweep nothing is left.
    let prefix = "strk";
    let cfg_path = dir.join("crash.toml");
    std::fs::write(
        &cfg_path,
        config(
            coder,
            prefix,
            None,
            10,
            r#"["create", "build", "agent", "pty", "delete"]"#,
            // Long enough that every walk is in its terminal when coderd goes.
            "sleep 20; echo hello-$((40+2))",
        ),
    )
    .unwrap();
    let report = dir.join("crash.json");
    let mut once = Bin::new(&["once", "--config", cfg_path.to_str().unwrap(), "--output"])
        .arg(format!("json:{}", report.display()))
        .env("CODER_SESSION_TOKEN", coder.get("CODER_SESSION_TOKEN"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    // Once every build is done (a provisioner job in flight would stay "running" until
    // coderd's hung-job reaper, minutes later), coderd goes away without a word.
    let once_pid = once.id();
    eventually_async(Duration::from_secs(120), || async move {
        assert!(
            std::path::Path::new(&format!("/proc/{once_pid}/cmdline")).exists()
                && !std::fs::read_to_string(format!("/proc/{once_pid}/stat"))
                    .unwrap_or_default()
                    .contains(") Z "),
            "scaletestd once ended before coderd was killed"
        );
        let ws = listed(coder, prefix).await;
        (ws.len() == 10
            && ws.iter().all(|w| {
                w["latest_build"]["transition"] == "start"
                    && w["latest_build"]["job"]["status"] == "succeeded"
            }))
        .then_some(())
    })
    .await;
    let killed_at = Instant::now();
    tokio::task::block_in_place(|| coder.restart_coderd());
    println!("coderd killed and back in {:.1?}", killed_at.elapsed());
    let out = tokio::task::block_in_place(|| {
        let deadline = Instant::now() + Duration::from_secs(420);
        while once.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "scaletestd once did not end within 7 min"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        once.wait_with_output().unwrap()
    });
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let mut reasons = Vec::new();
    collect_reasons(&json, &mut reasons);
    for r in &reasons {
        serde_json::from_value::<Reason>(serde_json::Value::String(r.clone()))
            .unwrap_or_else(|e| panic!("{r:?} is not one of our reasons: {e}"));
    }
    Bin::new(&["cleanup", "--config", cfg_path.to_str().unwrap()])
        .env("CODER_SESSION_TOKEN", coder.get("CODER_SESSION_TOKEN"))
        .run()
        .expect_code(0);
    let left = eventually_async(Duration::from_secs(120), || async {
        let ws = listed(coder, prefix).await;
        ws.is_empty().then_some(ws)
    })
    .await;
    assert!(left.is_empty());
    println!(
        "coderd restart mid-run: {}; reasons {reasons:?}; after the sweep Coder lists none",
        stdout.lines().next().unwrap_or_default()
    );
}

/// Every `"reason"` string anywhere in the JSON report.
fn collect_reasons(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("reason", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => collect_reasons(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_reasons(v, out)),
        _ => {}
    }
}

/// The simulator answers as coderd does: the same calls to both, and every field, JSON
/// type, status, error message and watch-ws state order compared (issue 23). Each
/// difference this found was fixed in the simulator, citing Coder's file; the allowances
/// below are the ones that stay, each with its reason.
#[test]
fn the_simulator_answers_as_coderd_does() {
    let (_turn, coder, rt) = real_coder_here("scshape", Some(OTLP));
    rt.block_on(conformance(&coder));
}

/// A server under comparison, and what its answers looked like.
struct Side {
    label: &'static str,
    base: url::Url,
    token: String,
    template: String,
    /// Rich parameter values the template needs.
    parameters: serde_json::Value,
    http: reqwest::Client,
    /// Call label → (status, body).
    answers: std::collections::BTreeMap<&'static str, (u16, serde_json::Value)>,
    /// The watch-ws stream's messages, reduced to the states a phase decides on.
    states: Vec<String>,
    /// The name of the workspace it made.
    workspace: String,
}

impl Side {
    fn new(label: &'static str, base: &str, token: &str, template: &str) -> Side {
        Side {
            label,
            base: url::Url::parse(base).unwrap(),
            token: token.to_string(),
            template: template.to_string(),
            parameters: serde_json::json!([]),
            http: reqwest::Client::new(),
            answers: Default::default(),
            states: Vec::new(),
            workspace: String::new(),
        }
    }

    /// One call; its status and body are kept under `what` and returned.
    async fn call(
        &mut self,
        what: &'static str,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
        token: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let mut url = self.base.clone();
        let (p, q) = path.split_once('?').unwrap_or((path, ""));
        url.set_path(p);
        url.set_query((!q.is_empty()).then_some(q));
        let mut req = self
            .http
            .request(method, url)
            .header("Coder-Session-Token", token.unwrap_or(&self.token))
            .header("X-Coder-Bypass-Ratelimit", "true");
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.unwrap_or_else(|e| {
            panic!("{}: {what}: {e}", self.label);
        });
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        self.answers.insert(what, (status, json.clone()));
        (status, json)
    }

    async fn get(&mut self, what: &'static str, path: &str) -> serde_json::Value {
        let (status, body) = self
            .call(what, reqwest::Method::GET, path, None, None)
            .await;
        assert_eq!(status, 200, "{}: {what}: {body}", self.label);
        body
    }

    /// Follows the workspace's watch-ws stream until `done` holds for a state (120 s at
    /// most), keeping each message reduced to what phases decide on.
    async fn watch(&mut self, id: &str, done: impl Fn(&serde_json::Value) -> bool) {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut url = self.base.clone();
        url.set_scheme("ws").unwrap();
        url.set_path(&format!("/api/v2/workspaces/{id}/watch-ws"));
        let mut req = url.as_str().into_client_request().unwrap();
        req.headers_mut()
            .insert("Coder-Session-Token", self.token.parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .unwrap_or_else(|e| panic!("{}: watch-ws: {e}", self.label));
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = tokio::time::timeout(left, ws.next())
                .await
                .unwrap_or_else(|_| panic!("{}: no final state within 120 s", self.label))
                .unwrap_or_else(|| panic!("{}: watch-ws ended", self.label))
                .unwrap();
            let text = match msg {
                tokio_tungstenite::tungstenite::Message::Text(t) => t.to_string(),
                _ => continue,
            };
            let ev: serde_json::Value = serde_json::from_str(&text).unwrap();
            let state = match ev["type"].as_str() {
                Some("data") => reduce(&ev["data"]),
                other => other.unwrap_or("?").to_string(),
            };
            if self.states.last() != Some(&state) {
                self.states.push(state);
            }
            if ev["type"] == "data" {
                self.answers
                    .insert("watch-ws data", (200, ev["data"].clone()));
                if done(&ev["data"]) {
                    return;
                }
            }
        }
    }

    /// The same walk on either server: what scaletestd calls, in its order, and the
    /// refusals it must tell apart.
    async fn walk(&mut self) {
        self.get("buildinfo", "/api/v2/buildinfo").await;
        let me = self.get("users/me", "/api/v2/users/me").await;
        let org = me["organization_ids"][0].as_str().unwrap().to_string();
        self.get("organization", &format!("/api/v2/organizations/{org}"))
            .await;
        let template = self
            .get(
                "template",
                &format!("/api/v2/organizations/{org}/templates/{}", self.template),
            )
            .await;
        let version = template["active_version_id"].as_str().unwrap().to_string();
        self.get(
            "rich-parameters",
            &format!("/api/v2/templateversions/{version}/rich-parameters"),
        )
        .await;
        // The form's evaluation as a test user's browser asks for it, and without an owner.
        let owner = me["id"].as_str().unwrap().to_string();
        self.call(
            "evaluate parameters",
            reqwest::Method::POST,
            &format!("/api/v2/templateversions/{version}/dynamic-parameters/evaluate"),
            Some(serde_json::json!({"id": 1, "owner_id": owner, "inputs": {}})),
            None,
        )
        .await;
        self.call(
            "evaluate parameters, no owner",
            reqwest::Method::POST,
            &format!("/api/v2/templateversions/{version}/dynamic-parameters/evaluate"),
            Some(serde_json::json!({"id": 1, "inputs": {}})),
            None,
        )
        .await;
        self.accounts(&org).await;
        let name = format!("shape-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        self.workspace = name.clone();
        let create = serde_json::json!({
            "name": name,
            "template_id": template["id"],
            "rich_parameter_values": self.parameters,
        });
        let (status, ws) = self
            .call(
                "create",
                reqwest::Method::POST,
                "/api/v2/users/me/workspaces",
                Some(create.clone()),
                None,
            )
            .await;
        assert_eq!(status, 201, "{}: create: {ws}", self.label);
        let id = ws["id"].as_str().unwrap().to_string();
        self.call(
            "create, name taken",
            reqwest::Method::POST,
            "/api/v2/users/me/workspaces",
            Some(create),
            None,
        )
        .await;
        self.watch(&id, |w| {
            w["latest_build"]["status"] == "running"
                && agents(w).iter().all(|a| a["lifecycle_state"] == "ready")
                && !agents(w).is_empty()
        })
        .await;
        // The autostart herd's calls: a schedule set, a malformed one refused, cleared.
        for (what, body) in [
            (
                "autostart schedule",
                serde_json::json!({"schedule": "CRON_TZ=UTC 30 9 * * *"}),
            ),
            (
                "autostart schedule, malformed",
                serde_json::json!({"schedule": "CRON_TZ=UTC 99 9 * * *"}),
            ),
            ("autostart schedule, cleared", serde_json::json!({})),
        ] {
            self.call(
                what,
                reqwest::Method::PUT,
                &format!("/api/v2/workspaces/{id}/autostart"),
                Some(body),
                None,
            )
            .await;
        }
        let ws = self
            .get("workspace", &format!("/api/v2/workspaces/{id}"))
            .await;
        let build = ws["latest_build"]["id"].as_str().unwrap().to_string();
        self.get("build", &format!("/api/v2/workspacebuilds/{build}"))
            .await;
        self.get(
            "build timings",
            &format!("/api/v2/workspacebuilds/{build}/timings"),
        )
        .await;
        self.get("workspaces", "/api/v2/workspaces?q=owner%3Ame")
            .await;
        self.call(
            "cancel a finished build",
            reqwest::Method::PATCH,
            &format!("/api/v2/workspacebuilds/{build}/cancel"),
            None,
            None,
        )
        .await;
        let (status, del) = self
            .call(
                "delete build",
                reqwest::Method::POST,
                &format!("/api/v2/workspaces/{id}/builds"),
                Some(serde_json::json!({"transition": "delete"})),
                None,
            )
            .await;
        assert_eq!(status, 201, "{}: delete: {del}", self.label);
        self.watch(&id, |w| w["latest_build"]["status"] == "deleted")
            .await;
        // Asked until it is 410 (10 s at most): the one answer here that could race the
        // event before it, should coderd publish the delete's end before its transaction
        // (provisionerdserver.go `completeWorkspaceBuildJob`) is visible to this read.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (status, _) = self
                .call(
                    "deleted workspace",
                    reqwest::Method::GET,
                    &format!("/api/v2/workspaces/{id}"),
                    None,
                    None,
                )
                .await;
            if status == 410 || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.get(
            "deleted workspace, include_deleted",
            &format!("/api/v2/workspaces/{id}?include_deleted=true"),
        )
        .await;
        self.call(
            "include_deleted not a bool",
            reqwest::Method::GET,
            &format!("/api/v2/workspaces/{id}?include_deleted=maybe"),
            None,
            None,
        )
        .await;
        self.call(
            "delete a deleted workspace",
            reqwest::Method::POST,
            &format!("/api/v2/workspaces/{id}/builds"),
            Some(serde_json::json!({"transition": "delete"})),
            None,
        )
        .await;
        let unknown = uuid::Uuid::new_v4();
        self.call(
            "unknown workspace",
            reqwest::Method::GET,
            &format!("/api/v2/workspaces/{unknown}"),
            None,
            None,
        )
        .await;
        self.call(
            "not a uuid",
            reqwest::Method::GET,
            "/api/v2/workspaces/not-a-uuid",
            None,
            None,
        )
        .await;
        self.call(
            "no such route",
            reqwest::Method::GET,
            "/api/v2/no-such-route",
            None,
            None,
        )
        .await;
        // A well-formed key (`<10-char id>-<22-char secret>`) that was never issued.
        self.call(
            "unknown key",
            reqwest::Method::GET,
            "/api/v2/users/me",
            None,
            Some("AbCdEfGhIj-0123456789abcdefghijkl"),
        )
        .await;
    }
}

impl Side {
    /// The create form of `template`'s active version over its websocket: the first
    /// preview, and the answer to `inputs` (one value out of its validation).
    async fn form(&mut self, template: &str, inputs: &str) {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let me = self.get("users/me", "/api/v2/users/me").await;
        let org = me["organization_ids"][0].as_str().unwrap().to_string();
        let t = self
            .get(
                "template",
                &format!("/api/v2/organizations/{org}/templates/{template}"),
            )
            .await;
        let version = t["active_version_id"].as_str().unwrap().to_string();
        let mut url = self.base.clone();
        url.set_scheme("ws").unwrap();
        url.set_path(&format!(
            "/api/v2/templateversions/{version}/dynamic-parameters"
        ));
        let mut req = url.as_str().into_client_request().unwrap();
        req.headers_mut()
            .insert("Coder-Session-Token", self.token.parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .unwrap_or_else(|e| panic!("{}: the form: {e}", self.label));
        let read = async |ws: &mut tokio_tungstenite::WebSocketStream<_>| loop {
            let msg = tokio::time::timeout(Duration::from_secs(30), ws.next())
                .await
                .expect("a preview within 30 s")
                .expect("the form stays open")
                .unwrap();
            if let Message::Text(t) = msg {
                return serde_json::from_str::<serde_json::Value>(&t).unwrap();
            }
        };
        let first = read(&mut ws).await;
        assert_eq!(first["id"], -1, "{}: {first}", self.label);
        self.answers.insert("form, first preview", (200, first));
        ws.send(Message::Text(
            format!(r#"{{"id": 1, "inputs": {inputs}}}"#).into(),
        ))
        .await
        .unwrap();
        let answer = read(&mut ws).await;
        assert_eq!(answer["id"], 1, "{}: {answer}", self.label);
        // The bad value's diagnostic is on its parameter, in the provider's words.
        let cpu = answer["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "cpu")
            .cloned()
            .unwrap_or_default();
        println!(
            "{}: the form's answer for cpu = 99: {}",
            self.label, cpu["diagnostics"]
        );
        self.answers.insert("form, answer", (200, answer));
    }

    /// What test users need: the entitlements, each way Coder refuses a user, a password
    /// user made, found, given a token (and refused one too long) and deleted.
    async fn accounts(&mut self, org: &str) {
        use reqwest::Method;
        self.get("entitlements", "/api/v2/entitlements").await;
        self.get(
            "notification preferences",
            "/api/v2/users/me/notifications/preferences",
        )
        .await;
        let name = format!("cf-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let email = format!("{name}@scaletestd.invalid");
        let user = |extra: serde_json::Value| {
            let mut body = serde_json::json!({"username": name, "organization_ids": [org]});
            body.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            Some(body)
        };
        let refusals = [
            (
                "user, login type none",
                serde_json::json!({"email": email, "login_type": "none"}),
            ),
            (
                "user, service account",
                serde_json::json!({"service_account": true}),
            ),
            (
                "user, service account with an email",
                serde_json::json!({"service_account": true, "email": email}),
            ),
            (
                "user, weak password",
                serde_json::json!({"email": email, "login_type": "password", "password": "password1"}),
            ),
            (
                "user, no email",
                serde_json::json!({"login_type": "password"}),
            ),
        ];
        for (what, extra) in refusals {
            self.call(what, Method::POST, "/api/v2/users", user(extra), None)
                .await;
        }
        let good = serde_json::json!({
            "email": email,
            "login_type": "password",
            "password": "Xk3p9LqZr7wTb2mQ8vN4sHdJc6eWy1uA0fGhKiLo",
            "name": "scaletestd test user",
        });
        let (status, made) = self
            .call(
                "user, password",
                Method::POST,
                "/api/v2/users",
                user(good.clone()),
                None,
            )
            .await;
        assert_eq!(status, 201, "{}: {made}", self.label);
        self.call(
            "user, taken",
            Method::POST,
            "/api/v2/users",
            user(good),
            None,
        )
        .await;
        self.get(
            "users, search",
            &format!("/api/v2/users?q={name}&limit=100&offset=0"),
        )
        .await;
        let id = made["id"].as_str().unwrap().to_string();
        self.call(
            "token",
            Method::POST,
            &format!("/api/v2/users/{id}/keys/tokens"),
            Some(serde_json::json!({"token_name": "cf", "lifetime": 3_600_000_000_000u64})),
            None,
        )
        .await;
        self.call(
            "token, too long",
            Method::POST,
            &format!("/api/v2/users/{id}/keys/tokens"),
            Some(serde_json::json!({"token_name": "cf-long", "lifetime": 100u64 * 24 * 3_600_000_000_000})),
            None,
        )
        .await;
        self.call(
            "delete user",
            Method::DELETE,
            &format!("/api/v2/users/{id}"),
            None,
            None,
        )
        .await;
    }
}

fn agents(w: &serde_json::Value) -> Vec<&serde_json::Value> {
    w["latest_build"]["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["agents"].as_array().into_iter().flatten())
        .collect()
}

/// A workspace state as the phases see it: the build's transition and status, its job's
/// status, and each agent's status and lifecycle.
fn reduce(w: &serde_json::Value) -> String {
    let b = &w["latest_build"];
    let mut s = format!(
        "{} {} (job {})",
        b["transition"].as_str().unwrap_or("?"),
        b["status"].as_str().unwrap_or("?"),
        b["job"]["status"].as_str().unwrap_or("?")
    );
    for a in agents(w) {
        s += &format!(
            ", agent {}/{}",
            a["status"].as_str().unwrap_or("?"),
            a["lifecycle_state"].as_str().unwrap_or("?")
        );
    }
    s
}

async fn conformance(coder: &RealCoder) {
    let sim = scaletestd::sim::Sim::start(
        scaletestd::sim::SimConfig::default(),
        crate::common::TOKEN,
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .expect("the simulator starts");
    let mut real = Side::new(
        "coderd",
        coder.get("CODER_URL"),
        coder.get("CODER_SESSION_TOKEN"),
        coder.get("CODER_TEMPLATE"),
    );
    let mut ours = Side::new(
        "simulator",
        sim.url().as_str(),
        crate::common::TOKEN,
        "docker",
    );
    ours.parameters =
        serde_json::json!([{"name": "image", "value": "codercom/enterprise-base:ubuntu"}]);
    real.walk().await;
    ours.walk().await;
    // The create form of a template with dynamic parameters on each side.
    real.form(
        coder.get("CODER_DYNAMIC_TEMPLATE"),
        r#"{"region": "us", "zone": "us-west", "cpu": "99"}"#,
    )
    .await;
    ours.form("docker", r#"{"region": "us", "cpu": "99"}"#)
        .await;
    // Both trace (coderd with --otlp): neither echoes our span id; without a traceparent
    // both answer an X-Trace-ID of their own (tests/it/external/coder/features.rs: both off).
    for propagate in [true, false] {
        let probe = |url: &str, token: &str| {
            scaletestd::coder::Client::new(
                url.parse().unwrap(),
                scaletestd::secret::Secret::new(token),
                Default::default(),
            )
        };
        let r = probe(coder.get("CODER_URL"), coder.get("CODER_SESSION_TOKEN"))
            .probe_tracing(propagate)
            .await
            .unwrap();
        let o = probe(sim.url().as_str(), crate::common::TOKEN)
            .probe_tracing(propagate)
            .await
            .unwrap();
        assert_eq!((r, o), (Some(true), Some(true)), "propagate {propagate}");
    }

    let mut diffs = Vec::new();
    for (what, (status, body)) in &real.answers {
        let Some((s, b)) = ours.answers.get(what) else {
            diffs.push(format!("{what}: the simulator was not asked"));
            continue;
        };
        if s != status {
            diffs.push(format!(
                "{what}: coderd answered {status}, the simulator {s}"
            ));
        }
        // An error's message and validations are what clients match on: to the letter, but
        // for the workspace's own id and name.
        if status / 100 != 2 {
            for key in ["message", "validations"] {
                let norm = |side: &Side, v: &serde_json::Value| {
                    shape::without_ids(&v[key].to_string()).replace(&side.workspace, "{name}")
                };
                let (r, o) = (norm(&real, body), norm(&ours, b));
                if r != o {
                    diffs.push(format!("{what}: coderd's {key} {r}, the simulator's {o}"));
                }
            }
        }
        diffs.extend(
            shape::differences(what, &shape::shape(body), &shape::shape(b))
                .into_iter()
                .filter(|d| !ALLOWED.iter().any(|(path, _)| d.contains(path))),
        );
    }
    // The order of the states a phase decides on. Which passing states a stream shows
    // depends on when it opened and how fast the agent went (coderd reads the workspace
    // when it sends, so a state gone by then is never seen): the states both streams
    // showed must come in the same order, and both must show where each wait ended.
    println!("coderd's watch-ws states: {:#?}", real.states);
    println!("the simulator's watch-ws states: {:#?}", ours.states);
    let shared = |a: &Side, b: &Side| -> Vec<String> {
        a.states
            .iter()
            .filter(|st| b.states.contains(st))
            .cloned()
            .collect()
    };
    if shared(&real, &ours) != shared(&ours, &real) {
        diffs.push(format!(
            "watch-ws: the states both showed come in another order: coderd {:?}, the simulator {:?}",
            shared(&real, &ours),
            shared(&ours, &real)
        ));
    }
    // And every state coderd showed, the simulator shows too (its agents pass through each
    // state for tens of milliseconds or more), but a job still pending: a provisioner that
    // takes it before the stream opens is a matter of timing on either side.
    for st in &real.states {
        if !st.contains("(job pending)") && !ours.states.contains(st) {
            diffs.push(format!(
                "watch-ws: coderd showed {st:?}, the simulator never does"
            ));
        }
    }
    for end in [
        "start running (job succeeded), agent connected/ready",
        "delete deleted (job succeeded)",
    ] {
        for side in [&real, &ours] {
            if !side.states.iter().any(|st| st == end) {
                diffs.push(format!("watch-ws: {} never showed {end:?}", side.label));
            }
        }
    }
    for d in &diffs {
        println!("difference: {d}");
    }
    assert!(diffs.is_empty(), "{} differences (above)", diffs.len());
    println!(
        "the simulator answers as coderd {} does: {} calls compared field by field, {} watch-ws states shown by both in the same order",
        coder.get("CODER_VERSION"),
        real.answers.len(),
        shared(&real, &ours).len()
    );
}

/// Differences that stay, each with its reason.
const ALLOWED: &[(&str, &str)] = &[
    (
        "agents[].directory`",
        "the simulator's template (a Docker one) sets the agent's directory; the echo template \
         sets none, and coderd omits it when empty (codersdk.WorkspaceAgent `directory,omitempty`)",
    ),
    (
        "build.has_",
        "`has_ai_task` and `has_external_agent` are `*bool`s coderd omits until its job \
         completion writes them (coderd/provisionerdserver/provisionerdserver.go \
         `UpdateWorkspaceBuildFlagsByID`); whether the event that shows a build ended has them \
         yet differs from run to run; the simulator sets both when the job ends",
    ),
    (
        "agents[].latency",
        "coderd shows an agent's DERP latencies once its first stats report arrives, seconds \
         after it connects or not yet (`latency,omitempty`); the simulator's agents report at once",
    ),
];
