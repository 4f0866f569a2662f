//! The real `scaletestd` binary: `sim` in one process, `once`/`check` in another, exit codes.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::common::*;

/// A `scaletestd sim` child, killed when dropped.
struct SimProcess {
    _child: Kill,
    url: String,
}

fn start_sim() -> SimProcess {
    start_sim_with("")
}

/// [`start_sim`] with extra simulator knobs (TOML lines before the tables).
fn start_sim_with(knobs_extra: &str) -> SimProcess {
    let dir = TempDir::new("cli-sim");
    let knobs = dir.join("sim.toml");
    std::fs::write(
        &knobs,
        knobs_extra.to_string() + "provisioners = 10\n[latency]\ninit = \"10ms\"\nplan = \"20ms\"\ngraph = \"5ms\"\napply = { min = \"30ms\", max = \"60ms\" }\ndestroy = \"30ms\"\nagent_connect = \"30ms\"\nagent_startup = \"30ms\"\n",
    )
    .unwrap();
    let mut child = Bin::new(&["sim", "--listen", "127.0.0.1:0", "--config"])
        .arg(&knobs)
        .stderr(Stdio::piped())
        .spawn();
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("the simulator says where it listens: {line:?}"))
        .trim_end_matches('/')
        .to_string();
    SimProcess {
        _child: Kill(child),
        url,
    }
}

/// The CLI tests' scenario: 30 workspaces, 10 at a time, every phase but ssh, in a file.
fn scenario_file(dir: &TempDir, url: &str, name: &str) -> PathBuf {
    let path = dir.join(name);
    let text = ConfigText::new(url)
        .scenario(
            ScenarioText::new("cli", 30)
                .key("parameters = { image = \"codercom/enterprise-base:ubuntu\" }")
                .key("concurrency = 10")
                .key("phases = [\"create\", \"build\", \"agent\", \"pty\", \"delete\"]")
                .key("run_command = \"echo hello\"")
                .key("expect_output = \"hello\""),
        )
        .text();
    std::fs::write(&path, text).unwrap();
    path
}

fn live_workspaces(url: &str) -> i64 {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = scaletestd::coder::Client::new(
            url.parse().unwrap(),
            scaletestd::secret::Secret::new(TOKEN),
            Default::default(),
        );
        c.workspaces("owner:me", 100, 0)
            .await
            .unwrap()
            .workspaces
            .len() as i64
    })
}

#[test]
fn once_runs_thirty_workspaces_against_the_simulator_and_exits_zero() {
    let dir = TempDir::new("once_runs_thirty_wor");
    let sim = start_sim();
    let cfg = scenario_file(&dir, &sim.url, "once.toml");
    let json = dir.join("out.json");
    let out = Bin::new(&["once", "--config"])
        .arg(&cfg)
        .arg("--output")
        .arg(format!("json:{}", json.display()))
        .run()
        .expect_code(0);
    let stdout = out.stdout.clone();
    assert_eq!(
        stdout.lines().next(),
        Some("30 workspaces: 30 succeeded, 0 failed")
    );
    for phase in ["create", "build", "agent", "pty", "delete"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(phase) && l.contains(" 30 ")),
            "{phase} row: {stdout}"
        );
    }
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(doc["total_runs"], 30);
    assert_eq!(doc["total_pass"], 30);
    assert_eq!(doc["workspaces"].as_array().unwrap().len(), 30);
    assert_eq!(doc["workspaces"][0]["phases"].as_array().unwrap().len(), 5);
    assert_eq!(
        live_workspaces(&sim.url),
        0,
        "the simulator lists no workspace afterwards"
    );
    let all = format!(
        "{stdout}{}{}",
        out.stderr.clone(),
        std::fs::read_to_string(&json).unwrap()
    );
    assert!(!all.contains(TOKEN));
}

#[test]
fn once_exits_one_when_a_workspace_fails_and_two_on_bad_config() {
    let dir = TempDir::new("once_exits_one_when_");
    let sim = start_sim();
    let cfg = scenario_file(&dir, &sim.url, "fail.toml");
    // A command whose output never matches: every pty phase fails, every workspace is deleted.
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("expect_output = \"hello\"", "expect_output = \"goodbye\"");
    std::fs::write(&cfg, text).unwrap();
    let (json, junit) = (dir.join("out.json"), dir.join("junit.xml"));
    let out = Bin::new(&["once", "--count", "4", "--config"])
        .arg(&cfg)
        .arg("--output")
        .arg(format!("json:{}", json.display()))
        .arg("--output")
        .arg(format!("junit:{}", junit.display()))
        .run();
    let stdout = out.stdout.clone();
    assert_eq!(out.code, Some(1), "{stdout}");
    // Both reports, the JUnit one valid against the schema CI systems read.
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(doc["total_fail"], 4);
    assert_eq!(
        doc["workspaces"][0]["phases"][3]["reason"], "output_mismatch",
        "one spelling of reasons"
    );
    let xsd = format!("{}/tests/fixtures/junit.xsd", env!("CARGO_MANIFEST_DIR"));
    let lint = std::process::Command::new("xmllint")
        .args(["--noout", "--schema", &xsd])
        .arg(&junit)
        .output()
        .expect("xmllint is installed (the test command installs libxml2-utils)");
    assert!(
        lint.status.success(),
        "{}",
        String::from_utf8_lossy(&lint.stderr)
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert_eq!(xml.matches("<testcase ").count(), 4, "{xml}");
    assert_eq!(
        xml.matches("<failure type=\"output_mismatch\" message=\"pty: output_mismatch\">")
            .count(),
        4,
        "{xml}"
    );
    assert!(
        xml.contains("tests=\"4\" failures=\"4\" errors=\"0\""),
        "{xml}"
    );
    // Each failed workspace's trace id, as a property.
    let traces = xml
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("<property name=\"trace_id\" value=\"")
        })
        .filter(|v| v.len() == 32 + 3 && v[..32].bytes().all(|b| b.is_ascii_hexdigit()))
        .count();
    assert_eq!(traces, 4, "{xml}");
    assert_eq!(
        stdout.lines().next(),
        Some("4 workspaces: 0 succeeded, 4 failed (4 pty: output_mismatch)")
    );
    assert_eq!(live_workspaces(&sim.url), 0);
    // Logged for a pipe: plain text, no colour codes.
    assert!(out.stderr.contains("pty failed (output_mismatch)"), "{out}");
    assert!(
        !out.stderr.contains('\x1b'),
        "colour codes in piped logs: {out}"
    );

    let bad = ConfigText::new("http://127.0.0.1:1")
        .scenario(ScenarioText::new("x", 0))
        .write(&dir, "bad.toml");
    let out = Bin::new(&["once", "--config"]).arg(&bad).run();
    let stderr = out.stderr.clone();
    assert_eq!(out.code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:7:9: count is 0", bad.display())),
        "{stderr}"
    );

    let out = Bin::new(&["no-such-command"]).run();
    assert_eq!(out.code, Some(2));
}

#[test]
fn check_reports_each_step_and_fails_on_a_wrong_token() {
    let dir = TempDir::new("check_reports_each_s");
    let sim = start_sim();
    let cfg = scenario_file(&dir, &sim.url, "check.toml");
    let out = Bin::new(&["check", "--config"]).arg(&cfg).run();
    let stdout = out.stdout.clone();
    assert_eq!(out.code, Some(0), "{stdout}");
    assert!(
        stdout.contains("session token accepted (user \"admin\")")
            && stdout.contains("Coder records server spans for our requests"),
        "{stdout}"
    );
    assert!(
        stdout.contains("scenario \"cli\": template \"docker\""),
        "{stdout}"
    );

    let wrong = "wrong-token-canary-91b2";
    let out = Bin::new(&["check", "--config"])
        .arg(&cfg)
        .env("CODER_SESSION_TOKEN", wrong)
        .run();
    let all = format!("{}{}", out.stdout.clone(), out.stderr.clone());
    assert_eq!(out.code, Some(1), "{all}");
    assert!(
        all.contains("FAIL session token") && all.contains("401"),
        "{all}"
    );
    assert!(!all.contains(wrong), "{all}");
}

/// Values Coder would refuse at create are refused by `check` and by `once` before any
/// workspace exists, per parameter and in Coder's words (the simulator's template, like a
/// Coder template with dynamic parameters, is asked through `dynamic-parameters/evaluate`).
#[test]
fn check_and_once_refuse_parameter_values_coder_would_refuse() {
    let dir = TempDir::new("check_parameters");
    let sim = start_sim();
    let cases = [
        (
            "image = \"BAD_Image\"",
            r#"parameter "image" = "BAD_Image": Invalid parameter value according to 'validation' block; an image reference in lowercase (value "BAD_Image" does not match "^[a-z0-9][a-z0-9._/:-]*$")"#,
        ),
        (
            "region = \"mars\"",
            r#"parameter "region" = "mars": Value must be a valid option; the value "mars" must be defined as one of options"#,
        ),
        (
            "cpu = \"99\"",
            r#"parameter "cpu" = "99": Invalid parameter value according to 'validation' block; value 99 is more than the maximum 8"#,
        ),
        (
            "cpu = \"two\"",
            r#"parameter "cpu" = "two": Invalid parameter value according to 'validation' block; value "two" is not a number"#,
        ),
    ];
    for (i, (value, said)) in cases.iter().enumerate() {
        let cfg = ConfigText::new(&sim.url)
            .scenario(
                ScenarioText::new("params", 3)
                    .key(&format!("parameters = {{ {value} }}"))
                    .key("phases = [\"create\", \"build\", \"delete\"]"),
            )
            .write(dir.path(), &format!("p{i}.toml"));
        let check = Bin::new(&["check", "--config"]).arg(&cfg).run();
        assert_eq!(check.code, Some(1), "{check}");
        assert!(
            check.stdout.contains(&format!(
                "FAIL scenario \"params\": scenario \"params\": template \"docker\" would refuse these values: {said}"
            )),
            "{check}"
        );
        let once = Bin::new(&["once", "--config"]).arg(&cfg).run();
        assert_eq!(once.code, Some(1), "{once}");
        assert!(once.all().contains(said), "{once}");
    }
    assert_eq!(live_workspaces(&sim.url), 0, "no workspace was created");
    // Good values pass, and the run uses them.
    let cfg = ConfigText::new(&sim.url)
        .scenario(
            ScenarioText::new("params", 3)
                .key("parameters = { image = \"ubuntu:24.04\", region = \"us\", cpu = \"8\" }")
                .key("phases = [\"create\", \"build\", \"delete\"]"),
        )
        .write(dir.path(), "good.toml");
    let check = Bin::new(&["check", "--config"]).arg(&cfg).run();
    assert_eq!(check.code, Some(0), "{check}");
    let once = Bin::new(&["once", "--config"]).arg(&cfg).run();
    assert_eq!(once.code, Some(0), "{once}");
    assert!(
        once.stdout.contains("3 workspaces: 3 succeeded, 0 failed"),
        "{once}"
    );
}

/// A directory holding an executable `coder` that is the simulator's stand-in, except that
/// `coder version` prints `version` when given.
fn coder_shim(dir: &TempDir, version: Option<&str>) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = dir.join(if version.is_some() {
        "bin-other"
    } else {
        "bin"
    });
    std::fs::create_dir_all(&dir).unwrap();
    let shim = dir.join("coder");
    let version = match version {
        Some(v) => format!("[ \"$1\" = version ] && {{ echo 'Coder {v}'; exit 0; }}\n"),
        None => String::new(),
    };
    std::fs::write(
        &shim,
        format!("#!/bin/sh\n{version}exec '{BIN}' sim-coder \"$@\"\n"),
    )
    .unwrap();
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// `check` shows the command the ssh phase would run, finds its program, reads the target as
/// `coder ssh` would, compares `coder version` with the server, and probes the watch stream.
#[test]
fn check_shows_the_ssh_command_and_how_coder_reads_it() {
    let dir = TempDir::new("check_shows_the_ssh_");
    let sim = start_sim_with("watch_endpoints = \"sse\"\n");
    // A workspace of the token's user, for the watch probe.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = scaletestd::coder::Client::new(
            sim.url.parse().unwrap(),
            scaletestd::secret::Secret::new(TOKEN),
            Default::default(),
        );
        create_workspace(&c, "probe-me").await;
    });
    let check = |proxy: Option<&str>, shim: &PathBuf| {
        let cfg = dir.join("check-ssh.toml");
        let ssh = proxy
            .map(|p| format!("[scenario.ssh]\nproxy_command = {p:?}\n"))
            .unwrap_or_default();
        let text = ConfigText::new(&sim.url)
            .scenario(
                ScenarioText::new("s", 1)
                    .key("phases = [\"create\", \"build\", \"agent\", \"ssh\", \"delete\"]")
                    .keys(&ssh),
            )
            .text();
        std::fs::write(&cfg, text).unwrap();
        let path = format!("{}:{}", shim.display(), std::env::var("PATH").unwrap());
        let out = Bin::new(&["check", "--config"])
            .arg(&cfg)
            .env("PATH", path)
            .run();
        (out.code, out.stdout)
    };
    let same = coder_shim(&dir, None);
    let (code, out) = check(None, &same);
    assert_eq!(code, Some(0), "{out}");
    for line in [
        "ok   scenario \"s\": ssh runs `coder ssh --stdio scaletest-sample-1` for workspace \"scaletest-sample-1\"",
        "ok   workspaces are followed over sse (probed on workspace \"probe-me\")",
        "as the server",
    ] {
        assert!(out.contains(line), "{line:?} in\n{out}");
    }

    let (code, out) = check(Some("coder ssh --stdio coder.{workspace}"), &same);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("`coder ssh` reads \"coder.scaletest-sample-1\" as workspace \"coder\", agent \"scaletest-sample-1\""),
        "{out}"
    );
    let (code, out) = check(
        Some("coder ssh --stdio --ssh-host-prefix coder. coder.{workspace}"),
        &same,
    );
    assert_eq!(code, Some(0), "{out}");

    let old = coder_shim(&dir, Some("v2.10.1+abcdef"));
    let (code, out) = check(None, &old);
    assert_eq!(code, Some(0), "a version mismatch is a warning: {out}");
    assert!(
        out.contains("warn") && out.contains("is Coder v2.10.1+abcdef but the server is v2.22.0"),
        "{out}"
    );

    let (code, out) = check(Some("/nonexistent/coder ssh --stdio {workspace}"), &same);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("\"/nonexistent/coder\" is not on PATH"),
        "{out}"
    );
}

#[test]
fn demo_runs_the_sample_scenario_and_serves_metrics() {
    let mut child = Bin::new(&[
        "demo",
        "--listen",
        "127.0.0.1:0",
        "--schedule",
        "*/2 * * * * *",
        "--count",
        "3",
    ])
    .no_token()
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let (token_tx, token_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(r) = l.strip_prefix("scaletestd listening on http://") {
                let _ = tx.send(r.split('/').next().unwrap_or_default().to_string());
            }
            // "start a run now: curl … Bearer $(cat FILE)" …
            if let Some((_, rest)) = l.split_once("$(cat ") {
                let _ = token_tx.send(rest.split(')').next().unwrap_or_default().to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("the demo says where it serves");
    let token_file = token_rx
        .recv_timeout(std::time::Duration::from_secs(5))
        .expect("the demo says how to start a run");
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_string();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let metrics = rt.block_on(async {
        reqwest::get(format!("http://{addr}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    // The run API answers the demo's token (202, or 409 when a scheduled run is in flight)
    // and refuses another.
    let start = |bearer: String| {
        let addr = addr.clone();
        rt.block_on(async move {
            reqwest::Client::new()
                .post(format!("http://{addr}/api/v1/runs"))
                .header("Authorization", format!("Bearer {bearer}"))
                .body(r#"{"scenario": "demo"}"#)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    let accepted = start(token.clone());
    assert!(accepted == 202 || accepted == 409, "{accepted}");
    assert_eq!(start(format!("{token}x")), 401);
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let status = child.wait().unwrap();
    // 22:02:33 demo: 3 workspaces: 2 succeeded, 1 failed (1 pty: connect_error)
    assert!(
        line.split_once(' ')
            .is_some_and(|(time, rest)| time.len() == 8 && rest.starts_with("demo: 3 workspaces: ")),
        "a run's summary line: {line:?}"
    );
    assert!(
        metrics.contains("scaletest_runs_total{scenario=\"demo\""),
        "{metrics}"
    );
    assert_eq!(status.code(), Some(0));
}

#[test]
fn cleanup_dry_run_lists_and_cleanup_deletes_leftovers() {
    let dir = TempDir::new("cleanup_dry_run_list");
    let sim = start_sim();
    let cfg = scenario_file(&dir, &sim.url, "cleanup.toml");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = scaletestd::coder::Client::new(
            sim.url.parse().unwrap(),
            scaletestd::secret::Secret::new(TOKEN),
            Default::default(),
        );
        for name in [
            "scaletest-abcdef-1",
            "scaletest-abcdef-2",
            "scaletest-other",
        ] {
            create_workspace(&c, name).await;
        }
    });
    let out = Bin::new(&["cleanup", "--dry-run", "--config"])
        .arg(&cfg)
        .run();
    let stdout = out.stdout.clone();
    assert_eq!(out.code, Some(0), "{stdout}");
    assert!(
        stdout.contains("would delete scaletest-abcdef-1")
            && stdout.contains("would delete scaletest-abcdef-2"),
        "{stdout}"
    );
    assert!(!stdout.contains("scaletest-other"), "not ours: {stdout}");
    assert_eq!(live_workspaces(&sim.url), 3, "a dry run deletes nothing");
    let out = Bin::new(&["cleanup", "--config"]).arg(&cfg).run();
    let stdout = out.stdout.clone();
    assert_eq!(out.code, Some(0), "{stdout}");
    assert!(
        stdout.contains("2 leftover workspaces, 2 deleted"),
        "{stdout}"
    );
    assert_eq!(live_workspaces(&sim.url), 1);
}

/// The console line of a failed phase, for a person (`--log-format text`) and for a log
/// pipeline (`--log-format json`, every field and the span context kept).
#[test]
fn a_failed_phase_is_one_line_for_people_and_every_field_in_json() {
    let dir = TempDir::new("console_lines");
    let sim = start_sim();
    let cfg = ConfigText::new(&sim.url)
        .scenario(
            ScenarioText::new("cli", 1)
                .key("phases = [\"create\", \"build\", \"agent\", \"pty\", \"delete\"]")
                .key("run_command = \"echo hello\"")
                .key("expect_output = \"goodbye\""),
        )
        .write(dir.path(), "console.toml");
    let text = Bin::new(&["once", "--log", "warn", "--config"])
        .arg(&cfg)
        .run();
    assert_eq!(text.code, Some(1), "{text}");
    let line = text
        .stderr
        .lines()
        .find(|l| l.contains(" failed "))
        .unwrap_or_else(|| panic!("no failure line: {text}"));
    // 21:03:07 WARN  cli scaletest-<run>-1 pty failed (output_mismatch): <error> trace 68df1514
    let (time, rest) = line.split_at(8);
    assert!(
        time.len() == 8 && time.chars().filter(|c| *c == ':').count() == 2,
        "{line}"
    );
    let rest = rest
        .strip_prefix(" WARN  cli scaletest-")
        .unwrap_or_else(|| panic!("{line}"));
    let (_, rest) = rest
        .split_once("-1 pty failed (output_mismatch): ")
        .unwrap_or_else(|| panic!("{line}"));
    let (_, trace) = rest
        .rsplit_once(" trace ")
        .unwrap_or_else(|| panic!("{line}"));
    assert!(
        trace.len() == 8 && trace.chars().all(|c| c.is_ascii_hexdigit()),
        "{line}"
    );
    assert!(!line.contains("otel."), "{line}");
    assert!(!line.contains('\x1b'), "no colour into a pipe: {line}");
    assert!(line.len() < 160, "{} characters: {line}", line.len());

    let json = Bin::new(&["once", "--log", "warn", "--log-format", "json", "--config"])
        .arg(&cfg)
        .run();
    assert_eq!(json.code, Some(1), "{json}");
    let doc: serde_json::Value = json
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["fields"]["message"] == "failed")
        .unwrap_or_else(|| panic!("no failure line: {json}"));
    assert_eq!(doc["fields"]["phase"], "pty", "{doc}");
    assert_eq!(doc["fields"]["reason"], "output_mismatch", "{doc}");
    // The span context: the phase's span, and the run and workspace above it, with their
    // fields.
    let spans = doc["spans"].as_array().unwrap_or_else(|| panic!("{doc}"));
    let names: Vec<&str> = spans
        .iter()
        .chain([&doc["span"]])
        .filter_map(|s| s["otel.name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["scaletest.run", "scaletest.workspace", "phase.pty"],
        "{doc}"
    );
    assert_eq!(spans[0]["scenario"], "cli", "{doc}");
    assert_eq!(doc["span"]["error.reason"], "output_mismatch", "{doc}");
    assert_eq!(doc["trace_id"].as_str().map(str::len), Some(32), "{doc}");
    assert!(doc["span_id"].is_string(), "{doc}");
}
