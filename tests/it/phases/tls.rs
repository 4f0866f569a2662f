//! A Coder behind TLS: the simulator serves HTTP/2 and HTTP/1.1 by ALPN with a certificate
//! from an authority of its own; `[coder] ca_file` trusts it. Calls then share HTTP/2
//! connections while websockets (`watch-ws`, the web terminal) take HTTP/1.1 ones, as
//! against Coder; without the authority nothing connects, and the error says why. A
//! self-signed certificate that is its own authority is trusted when `ca_file` holds exactly
//! it.

use crate::common::*;
use scaletestd::report;

fn tls_sim(dir: &TempDir) -> scaletestd::sim::SimConfig {
    scaletestd::sim::SimConfig {
        tls_ca_out: Some(dir.join("ca.pem")),
        ..fast_sim()
    }
}

/// `n` workspaces through `phases` against `sim`, trusting its authority; all must succeed.
async fn run_trusting(sim: &scaletestd::sim::Sim, dir: &TempDir, n: u32, phases: &str) {
    let cfg = config_text(sim, n, n, &format!("phases = {phases}"))
        .coder(&format!("ca_file = {:?}", dir.join("ca.pem")))
        .parse();
    let r = run(&cfg).await;
    assert_eq!(
        report::summary_line(&r),
        format!("{n} workspaces: {n} succeeded, 0 failed"),
        "{}",
        report::to_json(&r)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_share_http2_connections_and_websockets_take_http1() {
    let dir = TempDir::new("tls-h2");
    let sim = start(tls_sim(&dir)).await;
    assert_eq!(sim.url().scheme(), "https");
    let n = 12;
    run_trusting(
        &sim,
        &dir,
        n,
        r#"["create", "build", "agent", "pty", "delete"]"#,
    )
    .await;
    let (http1, http2) = sim.connections();
    // Every call of 12 concurrent lifecycles (creates, builds, deletes: over 60) rode one
    // HTTP/2 connection (two if a reconnect raced); each workspace's event stream and web
    // terminal had an HTTP/1.1 connection of its own.
    assert!(
        (1..=2).contains(&http2),
        "HTTP/2 connections: {http2} (HTTP/1.1: {http1})"
    );
    assert_eq!(
        http1,
        2 * u64::from(n),
        "one watch-ws and one terminal each"
    );
    assert!(sim.request_count("POST /api/v2/workspaces/{workspace}/builds") >= u64::from(n));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_streams_keep_connections_of_their_own() {
    // An older Coder: SSE `watch` only. Each stream is a connection of its own, never a
    // stream of the shared HTTP/2 connection: past the server's limit on concurrent streams
    // (Go's 250, hyper's 200) every call would queue behind the workspaces' streams.
    let dir = TempDir::new("tls-sse");
    let sim = start(scaletestd::sim::SimConfig {
        watch_endpoints: scaletestd::sim::config::WatchEndpoints::Sse,
        ..tls_sim(&dir)
    })
    .await;
    let n = 8;
    run_trusting(&sim, &dir, n, r#"["create", "build", "agent", "delete"]"#).await;
    let (http1, http2) = sim.connections();
    assert!((1..=2).contains(&http2), "HTTP/2 connections: {http2}");
    // One SSE stream per workspace, plus the watch-ws upgrades tried before the first 404
    // taught the run that this Coder has none (websockets are HTTP/1.1 too).
    let probes = sim.request_count("GET /api/v2/workspaces/{workspace}/watch-ws");
    assert!(probes >= 1, "the run tried watch-ws first");
    assert_eq!(http1, u64::from(n) + probes, "HTTP/1.1 connections");
    assert!(sim.request_count("GET /api/v2/workspaces/{workspace}/watch") >= u64::from(n));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_authority_nothing_connects_and_the_error_says_why() {
    let dir = TempDir::new("tls-untrusted");
    let sim = start(tls_sim(&dir)).await;
    let cfg = config(&sim, 2, 2, "");
    let c = client(&cfg);
    let err = c
        .template_by_name("coder", "docker")
        .await
        .expect_err("the simulator's certificate is not trusted");
    let text = err.to_string();
    assert!(
        text.contains("invalid peer certificate: UnknownIssuer"),
        "{text}"
    );
    assert!(
        text.contains("is not trusted by this system: if a private authority signed it, or it signed itself, name that certificate's PEM file in [coder] ca_file"),
        "{text}"
    );
    assert_eq!(sim.connections(), (0, 0), "no handshake completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_signed_certificate_given_as_the_whole_ca_file_is_trusted() {
    // As `openssl req -x509` makes one: its own authority (CA:TRUE) and the server's
    // certificate at once. webpki alone refuses it (CaUsedAsEndEntity); curl and Coder's
    // CLI trust it, and so do we, calls and websockets alike.
    let dir = TempDir::new("tls-self-signed");
    let sim = start(scaletestd::sim::SimConfig {
        tls_self_signed: true,
        ..tls_sim(&dir)
    })
    .await;
    let pem = std::fs::read_to_string(dir.join("ca.pem")).unwrap();
    assert_eq!(
        pem.matches("BEGIN CERTIFICATE").count(),
        1,
        "one certificate"
    );
    run_trusting(
        &sim,
        &dir,
        10,
        r#"["create", "build", "agent", "pty", "delete"]"#,
    )
    .await;

    // Another server's self-signed certificate in ca_file: refused, and the one line names
    // the file and says what to put in it.
    let other = TempDir::new("tls-self-signed-other");
    let _elsewhere = start(scaletestd::sim::SimConfig {
        tls_self_signed: true,
        ..tls_sim(&other)
    })
    .await;
    let cfg = config_text(&sim, 1, 1, "")
        .coder(&format!("ca_file = {:?}", other.join("ca.pem")))
        .parse();
    let text = client(&cfg)
        .template_by_name("coder", "docker")
        .await
        .expect_err("not the server's certificate")
        .to_string();
    assert!(!text.contains('\n'), "one line: {text}");
    assert!(
        text.contains(&format!(
            "Coder's certificate is not trusted with [coder] ca_file {}: put in it the certificate of the authority that signed Coder's (or Coder's own certificate, exactly as the server presents it), in PEM",
            other.join("ca.pem").display()
        )),
        "{text}"
    );
}

#[test]
fn a_ca_file_that_is_missing_or_not_pem_is_named_in_the_error() {
    let dir = TempDir::new("tls-ca-file");
    let text = |path: &std::path::Path| {
        ConfigText::new("https://coder.example.com")
            .coder(&format!("ca_file = {path:?}"))
            .scenario(ScenarioText::new("s", 1))
            .text()
    };
    let env = scaletestd::config::Env {
        coder_session_token: Some(TOKEN.into()),
        ..Default::default()
    };
    let missing = dir.join("nope.pem");
    let err = scaletestd::config::Config::parse("t.toml", &text(&missing), &env)
        .expect_err("a missing file")
        .to_string();
    assert!(err.contains("t.toml:3:"), "{err}");
    assert!(
        err.contains(&format!("ca_file {}: cannot read it", missing.display())),
        "{err}"
    );
    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let err = scaletestd::config::Config::parse("t.toml", &text(&junk), &env)
        .expect_err("not PEM")
        .to_string();
    assert!(
        err.contains(&format!("ca_file {}: no certificate in it", junk.display())),
        "{err}"
    );
}
