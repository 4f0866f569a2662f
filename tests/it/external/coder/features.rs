//! Every feature against a real coderd (issue 28), one coderd for all of them, started
//! without tracing (`CODER_TRACE_ENABLE=false`): test users as an unlicensed Coder allows
//! them, a template with rich parameters, the autostart herd, a traffic pool reloaded and
//! stopped, a scheduled run and `trigger --wait`, and Coder behind a TLS front whose
//! certificate signed itself. Each part asserts what Coder itself shows afterwards.
//!
//! If Coder cannot be built or started, the test fails with the reason: nothing is skipped.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{
    ECHO, bin_async, coder_get, coder_ssh, here, once_all, real_coder_here, scenario, slow, write,
};
use crate::common::daemon::tmpdir;
use crate::common::real::{RealCoder, listed};
use crate::common::{ConfigText, Kill, eventually_async};

#[test]
fn every_feature_against_a_real_coder() {
    let (_turn, coder, rt) = real_coder_here("scfeat", None);
    rt.block_on(features(&coder));
}

async fn features(coder: &RealCoder) {
    let dir = tmpdir("real-features");
    check_says_coder_does_not_trace(coder, dir.path()).await;
    test_users(coder, dir.path()).await;
    parameters(coder, dir.path()).await;
    form_and_inbox(coder, dir.path()).await;
    super::daemon::autostart(coder, dir.path()).await;
    super::daemon::daemon_with_traffic_and_a_schedule(coder, dir.path()).await;
    tls_front(coder, dir.path()).await;
}

/// This coderd runs with `CODER_TRACE_ENABLE=false`: it echoes our span id, and `check`
/// says its spans will not be in our traces (issue 32; tests/it/external/coder/walk.rs has the traced
/// case).
async fn check_says_coder_does_not_trace(coder: &RealCoder, dir: &Path) {
    let cfg = write(
        dir,
        "check.toml",
        here(coder).scenario(
            scenario(coder, "CODER_TEMPLATE", "c", "stc", 1).phases(&["create", "build", "delete"]),
        ),
    );
    let check = bin_async(coder, &["check", "--config", &cfg]).await;
    assert_eq!(check.code, Some(0), "{check}");
    assert!(
        check
            .stdout
            .contains("warn Coder does not record traces: it echoes our span id (X-Span-ID)"),
        "{check}"
    );
    assert!(
        check
            .stdout
            .contains("ok   Coder's deployment config agrees: trace.enable = false"),
        "{check}"
    );
    assert!(!check.stdout.contains("join our traces"), "{check}");
    // The simulator with its tracing off answers as this coderd does: our span id echoed
    // when we send a traceparent, no X-Trace-ID when we do not.
    let mut sc = scaletestd::sim::SimConfig::default();
    sc.tracing.enabled = false;
    let sim = scaletestd::sim::Sim::start(sc, crate::common::TOKEN, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let client = |url: &str, token: &str| {
        scaletestd::coder::Client::new(
            url.parse().unwrap(),
            scaletestd::secret::Secret::new(token),
            Default::default(),
        )
    };
    let real = client(coder.get("CODER_URL"), coder.get("CODER_SESSION_TOKEN"));
    let ours = client(sim.url().as_str(), crate::common::TOKEN);
    for propagate in [true, false] {
        let (r, o) = (
            real.probe_tracing(propagate).await.unwrap(),
            ours.probe_tracing(propagate).await.unwrap(),
        );
        assert_eq!((r, o), (Some(false), Some(false)), "propagate {propagate}");
    }
    println!(
        "real coder without tracing, check: {}",
        check
            .stdout
            .lines()
            .find(|l| l.contains("record traces"))
            .unwrap()
    );
}

/// 12 workspaces over 4 test users through the whole walk, each made and used with its
/// owner's token; `cleanup --users` then leaves only the admin.
async fn test_users(coder: &RealCoder, dir: &Path) {
    let cfg = write(
        dir,
        "users.toml",
        here(coder).scenario(
            slow(scenario(coder, "CODER_TEMPLATE", "users", "stu", 12))
                .key("concurrency = 6")
                .phases(&["create", "build", "agent", "ssh", "pty", "app", "delete"])
                .command(ECHO, "hello-42")
                .table("ssh", &coder_ssh(coder))
                .table(
                    "app",
                    &format!(
                        "slug = \"{}\"\nexpect = \"hello from the real-coder app\"",
                        coder.get("CODER_APP")
                    ),
                )
                .table("users", "count = 4\nprefix = \"rc-user\""),
        ),
    );
    once_all(coder, &cfg, 12, &[]).await;
    // Coder's own record: each user owned three of them (coderd counts builds by owner and
    // workspace), made as a password user (no license here: no service accounts).
    let metrics = reqwest::get(coder.get("CODER_PROMETHEUS"))
        .await
        .expect("coderd's metrics")
        .text()
        .await
        .unwrap();
    for n in 1..=4 {
        let user = coder_get(coder, &format!("/api/v2/users/rc-user-{n}")).await;
        assert_eq!(user["login_type"], "password", "{user}");
        assert_eq!(
            user["email"],
            format!("rc-user-{n}@scaletestd.invalid"),
            "{user}"
        );
        let owned: std::collections::BTreeSet<&str> = metrics
            .lines()
            .filter(|l| l.starts_with("coderd_workspace_builds_total{"))
            .filter(|l| l.contains(&format!("workspace_owner=\"rc-user-{n}\"")))
            .filter_map(|l| l.split("workspace_name=\"").nth(1)?.split('"').next())
            .filter(|name| name.starts_with("stu-"))
            .collect();
        assert_eq!(owned.len(), 3, "rc-user-{n} built {owned:?}");
    }
    assert!(listed(coder, "stu-").await.is_empty(), "nothing left live");
    let out = bin_async(coder, &["cleanup", "--users", "--config", &cfg]).await;
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.stdout.contains("4 test users deleted, 0 kept"), "{out}");
    let users = coder_get(coder, "/api/v2/users?limit=100").await;
    let names: Vec<&str> = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u["username"].as_str())
        .collect();
    assert_eq!(names, ["admin"], "only the admin is left");
    println!("real coder, test users: 12/12 over 4 password users, then only the admin left");
}

/// `check` and `once` refuse what Coder would refuse, in Coder's words, before any
/// workspace exists: each bad value's message is the one coderd itself answers a create
/// with. Good values run.
async fn parameters(coder: &RealCoder, dir: &Path) {
    let template = coder.get("CODER_PARAMS_TEMPLATE");
    let params = |values: &str, count: u32| {
        here(coder).scenario(
            scenario(coder, "CODER_PARAMS_TEMPLATE", "params", "stp", count)
                .key("concurrency = 6")
                .key(&format!("parameters = {{ {values} }}"))
                .phases(&["create", "build", "agent", "delete"]),
        )
    };
    let bad = [
        ("image", "BAD_Image"),
        ("region", "mars"),
        ("memory", "99"),
        ("memory", "lots"),
    ];
    let tpl = coder_get(
        coder,
        &format!(
            "/api/v2/organizations/{}/templates/{template}",
            coder.get("CODER_ORGANIZATION_ID")
        ),
    )
    .await;
    assert_eq!(tpl["use_classic_parameter_flow"], true, "{tpl}");
    for (i, (name, value)) in bad.iter().enumerate() {
        let cfg = write(
            dir,
            &format!("bad{i}.toml"),
            params(&format!("{name} = \"{value}\""), 6),
        );
        let check = bin_async(coder, &["check", "--config", &cfg]).await;
        assert_eq!(check.code, Some(1), "{check}");
        let line = check
            .stdout
            .lines()
            .find(|l| l.starts_with("FAIL scenario \"params\""))
            .unwrap_or_else(|| panic!("no FAIL line: {check}"))
            .to_string();
        let prefix = format!("parameter \"{name}\" = \"{value}\": ");
        let words = line
            .split_once(&prefix)
            .unwrap_or_else(|| panic!("{line}"))
            .1
            .to_string();
        // coderd's own answer to a create with that value says the same.
        let (status, body) = coder_create(
            coder,
            &format!("stp-probe-{i}"),
            tpl["id"].as_str().unwrap(),
            name,
            value,
        )
        .await;
        assert_eq!(status, 400, "coderd refuses {name} = {value}: {body}");
        assert!(
            body["detail"].as_str().unwrap_or_default().contains(&words),
            "check says {words:?}; coderd says {body}"
        );
        println!("check and coderd on {name} = {value:?}: {words}");
        let once = bin_async(coder, &["once", "--config", &cfg]).await;
        assert_eq!(once.code, Some(1), "{once}");
        assert!(
            once.all().contains(&words),
            "once refuses with check's words: {once}"
        );
    }
    assert!(
        listed(coder, "stp-").await.is_empty(),
        "no workspace was made"
    );

    // "cpu" has bounds but no error message: coderd enforces neither (it drops such a
    // validation block), so neither does check, and the run goes through with it.
    let cfg = write(
        dir,
        "good.toml",
        params(
            "image = \"ubuntu:24.04\", region = \"us\", memory = \"8\", cpu = \"99\"",
            6,
        ),
    );
    let check = bin_async(coder, &["check", "--config", &cfg]).await;
    assert_eq!(check.code, Some(0), "{check}");
    once_all(coder, &cfg, 6, &[]).await;
    println!(
        "real coder, rich parameters: {} bad values refused by check and once in coderd's words, good values 6/6",
        bad.len()
    );
}

/// The create form of a template with dynamic parameters (a main.tf coderd evaluates) and
/// the inbox (issue 30): the walk with `parameters` 10/10, bad values failing there in
/// coderd's words (and refused by `check`, which asks coderd to evaluate them), a form load
/// of 50 at concurrency 25, and `notify` on 8 workspaces over 4 test users.
async fn form_and_inbox(coder: &RealCoder, dir: &Path) {
    let form = |name: &str, values: &str, count: u32, concurrency: u32, phases: &[&str]| {
        here(coder).scenario(
            slow(scenario(
                coder,
                "CODER_DYNAMIC_TEMPLATE",
                name,
                &format!("st{name}"),
                count,
            ))
            .key(&format!("concurrency = {concurrency}"))
            .key(&format!("parameters = {{ {values} }}"))
            .phases(phases)
            .command(ECHO, "hello-42"),
        )
    };
    let walk = &["parameters", "create", "build", "agent", "pty", "delete"];
    let good = "region = \"us\", zone = \"us-west\", cpu = \"4\"";
    let cfg = write(dir, "form.toml", form("form", good, 10, 10, walk));
    let report = dir.join("form.json");
    let out = once_all(
        coder,
        &cfg,
        10,
        &["--output", &format!("json:{}", report.display())],
    )
    .await;
    assert!(
        out.stdout.contains("parameters.initial") && out.stdout.contains("parameters.change"),
        "{out}"
    );
    let table: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("parameters"))
        .collect();
    println!(
        "real coder, the dynamic form before create: 10/10\n{}",
        table.join("\n")
    );

    // Bad values: a number out of its validation, a zone the region does not offer.
    for (i, (values, words)) in [
        ("cpu = \"99\"", "99 CPUs: choose 1 to 8"),
        ("region = \"us\", zone = \"eu-west\"", "\"eu-west\""),
    ]
    .iter()
    .enumerate()
    {
        let cfg = write(
            dir,
            &format!("form-bad{i}.toml"),
            form("formbad", values, 2, 2, walk),
        );
        let out = bin_async(coder, &["once", "--config", &cfg]).await;
        assert_eq!(out.code, Some(1), "{out}");
        assert!(
            out.stdout
                .contains("2 workspaces: 0 succeeded, 2 failed (2 parameters: invalid_parameters)"),
            "{out}"
        );
        assert!(
            out.all().contains(words),
            "coderd's diagnostic in the error: {out}"
        );
        // check asks coderd to evaluate the same values, and refuses them too.
        let plain = write(
            dir,
            &format!("form-check{i}.toml"),
            form("formchk", values, 2, 2, &["create", "build", "delete"]),
        );
        let check = bin_async(coder, &["check", "--config", &plain]).await;
        assert_eq!(check.code, Some(1), "{check}");
        assert!(check.stdout.contains(words), "{check}");
        println!(
            "real coder, {values}: {}",
            check
                .stdout
                .lines()
                .find(|l| l.starts_with("FAIL"))
                .unwrap_or_default()
        );
    }
    assert!(listed(coder, "stformbad-").await.is_empty());

    // A form load: 50 evaluations at concurrency 25, nothing created.
    let cfg = write(
        dir,
        "formload.toml",
        form("formload", good, 50, 25, &["parameters"]),
    );
    let out = once_all(coder, &cfg, 50, &[]).await;
    assert!(listed(coder, "stformload-").await.is_empty());
    println!(
        "real coder, a form load of 50 at concurrency 25:\n{}",
        out.stdout
            .lines()
            .filter(|l| l.starts_with("parameters"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // notify: 8 workspaces over 4 test users, the admin watching its inbox.
    let cfg = write(
        dir,
        "notify.toml",
        here(coder).scenario(
            scenario(coder, "CODER_TEMPLATE", "notify", "stn", 8)
                .key("concurrency = 8")
                .phases(&["create", "notify", "build", "delete"])
                .timeout("build", "90s")
                .timeout("delete", "90s")
                .table("users", "count = 4\nprefix = \"rc-notify\""),
        ),
    );
    let out = once_all(coder, &cfg, 8, &[]).await;
    println!(
        "real coder, notify over 4 test users: 8/8\n{}",
        out.stdout
            .lines()
            .filter(|l| l.starts_with("notify"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let out = bin_async(coder, &["cleanup", "--users", "--config", &cfg]).await;
    assert_eq!(out.code, Some(0), "{out}");
}

/// `POST /users/me/workspaces` with one parameter value, as the admin: coderd's answer.
async fn coder_create(
    coder: &RealCoder,
    name: &str,
    template: &str,
    param: &str,
    value: &str,
) -> (u16, serde_json::Value) {
    let mut url = url::Url::parse(coder.get("CODER_URL")).unwrap();
    url.set_path("/api/v2/users/me/workspaces");
    let body = serde_json::json!({
        "name": name,
        "template_id": template,
        "rich_parameter_values": [{"name": param, "value": value}],
    });
    let resp = reqwest::Client::new()
        .post(url)
        .header("Coder-Session-Token", coder.get("CODER_SESSION_TOKEN"))
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("coderd answers");
    let status = resp.status().as_u16();
    (
        status,
        serde_json::from_str(&resp.text().await.unwrap()).unwrap_or_default(),
    )
}

/// Coder behind nginx (HTTP/2 and HTTP/1.1, websockets) with a certificate `openssl req
/// -x509` made, given as the whole `ca_file`: 10/10.
async fn tls_front(coder: &RealCoder, dir: &Path) {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is installed (the test command installs it)");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("CA:TRUE"),
        "the certificate is its own authority, as the issue's was"
    );
    let front = "127.0.0.1:8443";
    let conf = dir.join("nginx.conf");
    std::fs::create_dir_all(dir.join("nginx-tmp")).unwrap();
    std::fs::write(
        &conf,
        format!(
            r#"user root;
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log;
events {{}}
http {{
    access_log off;
    client_body_temp_path {dir}/nginx-tmp/body;
    proxy_temp_path {dir}/nginx-tmp/proxy;
    fastcgi_temp_path {dir}/nginx-tmp/fastcgi;
    uwsgi_temp_path {dir}/nginx-tmp/uwsgi;
    scgi_temp_path {dir}/nginx-tmp/scgi;
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        '' close;
    }}
    server {{
        listen {front} ssl http2;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{
            proxy_pass http://127.0.0.1:80;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_buffering off;
            proxy_read_timeout 300s;
        }}
    }}
}}
"#,
            dir = dir.display(),
            cert = cert.display(),
            key = key.display(),
        ),
    )
    .unwrap();
    let child = Command::new("/usr/sbin/nginx")
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx is installed (the test command installs Debian's nginx)");
    let _nginx = Kill(child);
    eventually_async(Duration::from_secs(20), || async {
        tokio::net::TcpStream::connect(front).await.ok().map(|_| ())
    })
    .await;
    let path = ConfigText::new(format!("https://{front}"))
        .coder(&format!("ca_file = \"{}\"", cert.display()))
        .scenario(
            slow(scenario(coder, "CODER_TEMPLATE", "tls", "stl", 10))
                .key("concurrency = 10")
                .phases(&["create", "build", "agent", "pty", "delete"])
                .command(ECHO, "hello-42"),
        )
        .write(dir, "tls.toml");
    once_all(coder, path.to_str().unwrap(), 10, &[]).await;
    assert!(listed(coder, "stl-").await.is_empty());
    println!(
        "real coder behind nginx (HTTP/2) with a self-signed certificate as the whole ca_file: 10/10"
    );
}
