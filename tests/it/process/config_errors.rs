//! Bad configuration is refused with file, line, column and what was expected.

use scaletestd::config::{Config, Env};

const GOOD: &str = r#"[coder]
url = "http://127.0.0.1:3000"

[[scenario]]
name = "s"
template = "docker"
count = 10
concurrency = 5
phases = ["create", "build", "agent", "pty", "delete"]
schedule = "0 */15 * * * *"

[scenario.timeouts]
build = "15m"
"#;

fn env() -> Env {
    Env {
        coder_session_token: Some("tok".into()),
        ..Default::default()
    }
}

/// Replaces `from` in the good file by `to` and returns the error's text.
fn broken(from: &str, to: &str) -> String {
    assert!(GOOD.contains(from), "{from}");
    let text = GOOD.replacen(from, to, 1);
    Config::parse("cfg.toml", &text, &env())
        .expect_err(&format!("{to:?} must be refused"))
        .to_string()
}

#[test]
fn the_good_file_is_accepted() {
    let c = Config::parse("cfg.toml", GOOD, &env()).unwrap();
    assert_eq!(c.scenarios[0].count, 10);
    assert_eq!(
        c.scenarios[0].timeouts.of(scaletestd::phases::Phase::Build),
        std::time::Duration::from_secs(900)
    );
}

/// (replace, with, expected location, expected words).
type Case = (&'static str, &'static str, &'static str, &'static str);

fn cases() -> &'static [Case] {
    &[
        // (replace, with, expected location, expected words)
        (
            "count = 10",
            "count = 0",
            "cfg.toml:7:9",
            "expected 1 to 99999",
        ),
        (
            "concurrency = 5",
            "concurrency = 11",
            "cfg.toml:8:15",
            "from 1 to count (10)",
        ),
        (
            "build = \"15m\"",
            "build = \"15 parsecs\"",
            "cfg.toml:13:9",
            "expected a duration",
        ),
        (
            "\"pty\", \"delete\"",
            "\"pty\", \"teleport\"",
            "cfg.toml:9:46",
            "unknown phase \"teleport\": expected one of parameters, create, notify, build, agent",
        ),
        (
            "\"build\", \"agent\"",
            "\"agent\", \"build\"",
            "cfg.toml:9:10",
            "phase \"agent\" (number 2) cannot run after \"create\": the workspace is still building",
        ),
        (
            "\"agent\", \"pty\"",
            "\"pty\", \"agent\"",
            "cfg.toml:9:10",
            "phase \"pty\" (number 3) cannot run after \"build\": no agent is known ready yet",
        ),
        (
            "\"agent\", \"pty\"",
            "\"agent\", \"start\", \"pty\"",
            "cfg.toml:9:10",
            "phase \"start\" (number 4) cannot run after \"agent\": the workspace is running with its agent ready; it needs a stopped workspace",
        ),
        (
            "\"agent\", \"pty\"",
            "\"agent\", \"stop\", \"agent\", \"pty\"",
            "cfg.toml:9:10",
            "phase \"agent\" (number 5) cannot run after \"stop\": the workspace is stopped (put \"start\" before it)",
        ),
        (
            "\"agent\", \"pty\"",
            "\"agent\", \"stop\", \"pty\"",
            "cfg.toml:9:10",
            "phase \"pty\" (number 5) cannot run after \"stop\"",
        ),
        (
            "\"pty\", \"delete\"",
            "\"pty\", \"app\", \"delete\"",
            "cfg.toml:9:10",
            "phase \"app\" needs [scenario.app] with `slug = \"<slug>\"`",
        ),
        (
            "\"pty\", \"delete\"]",
            "\"pty\", \"app\", \"delete\"]\napp = \"Code Server\"",
            "cfg.toml:10:7",
            "app \"Code Server\" is not an app slug",
        ),
        (
            "\"pty\", \"delete\"]",
            "\"pty\", \"app\", \"delete\"]\napp = \"echo\"\napp_status = [200, 700]",
            "cfg.toml:11:14",
            "app_status has 700: expected HTTP statuses from 100 to 599",
        ),
        (
            "\"pty\", \"delete\"]",
            "\"pty\", \"app\", \"delete\"]\napp = \"echo\"\napp_path = \"healthz\"",
            "cfg.toml:11:12",
            "expected a path starting with '/'",
        ),
        (
            "\"pty\", \"delete\"]",
            "\"pty\", \"app\", \"delete\"]\napp = \"echo\"\napp_access = \"dns\"",
            "cfg.toml:11:14",
            "unknown variant `dns`, expected one of `auto`, `path`, `subdomain`",
        ),
        (
            "count = 10",
            "count = 10\napp_expect = \"hi\"",
            "cfg.toml:8:14",
            "app_expect is set but `phases` has no \"app\"",
        ),
        (
            "url = \"http://127.0.0.1:3000\"",
            "url = \"http://127.0.0.1:3000\"\napps_address = \"localhost\"",
            "cfg.toml:3:16",
            "apps_address \"localhost\": expected an IP address",
        ),
        (
            "\"agent\", \"pty\"",
            "\"agent\", \"stop\", \"app\", \"pty\"",
            "cfg.toml:9:10",
            "phase \"app\" (number 5) cannot run after \"stop\"",
        ),
        (
            "build = \"15m\"",
            "build = \"15m\"\n[scenario.users]\ncount = 0",
            "cfg.toml:15:9",
            "[scenario.users] count is 0: expected 1 to 10000",
        ),
        (
            "build = \"15m\"",
            "build = \"15m\"\n[scenario.users]\ncount = 8\nprefix = \"st_user\"",
            "cfg.toml:16:10",
            "must be Coder user names",
        ),
        (
            "build = \"15m\"",
            "build = \"15m\"\n[scenario.users]\ncount = 8\nprefix = \"a-very-long-prefix-for-users-xy\"",
            "cfg.toml:16:10",
            "\"a-very-long-prefix-for-users-xy-8\" must be Coder user names",
        ),
        (
            "build = \"15m\"",
            "build = \"15m\"\n[scenario.users]\ncount = 8\ntoken_lifetime = \"60d\"",
            "cfg.toml:16:18",
            "at most 30 days",
        ),
        (
            "build = \"15m\"",
            "build = \"15m\"\n[scenario.users]\ncount = 8\nrole = \"owner\"",
            "cfg.toml:16:1",
            "unknown field `role`",
        ),
        (
            "count = 10",
            "count = 10\nkind = \"autostart\"",
            "cfg.toml:10:10",
            "kind = \"autostart\" scenario's phases must include \"autostart.created\"",
        ),
        (
            "\"agent\", \"pty\"",
            "\"agent\", \"autostart.created\", \"pty\"",
            "cfg.toml:9:10",
            "phase \"autostart.created\" (number 4) cannot run after \"agent\": the workspace is running with its agent ready; it needs a stopped workspace",
        ),
        (
            "\"agent\", \"pty\"",
            "\"agent\", \"stop\", \"autostart.created\", \"autostart.built\", \"pty\"",
            "cfg.toml:9:10",
            "phase \"pty\" (number 7) cannot run after \"autostart.built\": the autostart build is done but no agent is known ready (put \"autostart.ready\" next)",
        ),
        (
            "build = \"15m\"",
            "build = \"15m\"\nautostart.created = \"5m\"",
            "cfg.toml:14:1",
            "a phase name with a dot goes in quotes: write it \"<phase>.created\" = \"5m\"",
        ),
        (
            "count = 10",
            "count = 10\nmax_failures = 2\nmax_failure_ratio = 0.1",
            "cfg.toml:9:21",
            "has both max_failures and max_failure_ratio: keep one",
        ),
        (
            "count = 10",
            "count = 10\nmax_failure_ratio = 1.5",
            "cfg.toml:8:21",
            "max_failure_ratio is 1.5: expected at least 0 and less than 1",
        ),
        (
            "url = \"http://127.0.0.1:3000\"",
            "url = \"http://127.0.0.1:3000\"\n[server]\napi_token_file = \"/nonexistent/scaletestd-api-token\"",
            "cfg.toml:4:18",
            "cannot read api_token_file /nonexistent/scaletestd-api-token",
        ),
        (
            "count = 10",
            "count = 10\nflavour = \"x\"",
            "cfg.toml:8:1",
            "unknown field `flavour`",
        ),
        (
            "count = 10",
            "count = \"ten\"",
            "cfg.toml:7:9",
            "invalid type",
        ),
        (
            "schedule = \"0 */15 * * * *\"",
            "schedule = \"*/15 * * * *\"",
            "cfg.toml:10:12",
            "cron with seconds",
        ),
        (
            "url = \"http://127.0.0.1:3000\"",
            "url = \"ftp://x\"",
            "cfg.toml:2:7",
            "http:// or https://",
        ),
        ("[[scenario]]", "[[scenario]\n", "cfg.toml:4:", ""),
        (
            "\"create\", \"build\"",
            "\"build\", \"create\"",
            "cfg.toml:9:10",
            "must start with \"create\"",
        ),
        (
            ", \"delete\"]",
            "]",
            "cfg.toml:9:10",
            "must end with \"delete\"",
        ),
        (
            "schedule = \"0 */15 * * * *\"",
            "schedule = \"0 61 * * * *\"",
            "cfg.toml:10:12",
            "invalid schedule",
        ),
        (
            "schedule = \"0 */15 * * * *\"",
            "schedule = \"every tuesday\"",
            "cfg.toml:10:12",
            "invalid schedule",
        ),
        (
            "build = \"15m\"",
            "build = \"-5s\"",
            "cfg.toml:13:9",
            "expected a duration",
        ),
        (
            "build = \"15m\"",
            "build = 15",
            "cfg.toml:13:9",
            "invalid type",
        ),
        (
            "build = \"15m\"",
            "build = \"0s\"",
            "cfg.toml:13:9",
            "more than zero",
        ),
        (
            "count = 10",
            "count = 100000",
            "cfg.toml:7:9",
            "expected 1 to 99999",
        ),
        ("count = 10", "count = -3", "cfg.toml:7:9", "invalid value"),
        ("count = 10", "count = 2.5", "cfg.toml:7:9", "invalid type"),
        (
            "concurrency = 5",
            "concurrency = 0",
            "cfg.toml:8:15",
            "from 1 to count (10)",
        ),
        (
            "name = \"s\"",
            "name = \"s\"\nworkspace_prefix = \"Bad_Prefix!\"",
            "cfg.toml:6:20",
            "invalid workspace_prefix",
        ),
        (
            "phases = [",
            "phases = \"create\"\nx = [",
            "cfg.toml:9:10",
            "invalid type",
        ),
        (
            "template = \"docker\"",
            "template = \"docker",
            "cfg.toml:6:",
            "",
        ),
        (
            "[coder]",
            "[coder]\nurl = \"http://a\"",
            "cfg.toml:3:1",
            "duplicate key",
        ),
        (
            "count = 10",
            "count = 10\nsessions_per_workspace = 2",
            "cfg.toml:8:26",
            "sessions_per_workspace belongs to kind = \"traffic\" scenarios, and scenario \"s\" is kind = \"lifecycle\"",
        ),
        (
            "count = 10",
            "count = 10\ntick_interval = \"10ms\"",
            "cfg.toml:8:17",
            "tick_interval belongs to kind = \"traffic\" scenarios",
        ),
        (
            "count = 10",
            "count = 10\nkind = \"traffic\"",
            "cfg.toml:11:12",
            "schedule belongs to kind = \"lifecycle\" scenarios, and scenario \"s\" is kind = \"traffic\"",
        ),
        (
            "[scenario.timeouts]",
            "[scenario.timeouts]\nteleport = \"1s\"",
            "cfg.toml:13:1",
            "[scenario.timeouts]: unknown phase \"teleport\"",
        ),
    ]
}

#[test]
fn each_mistake_names_line_column_and_expectation() {
    for (from, to, at, words) in cases() {
        let e = broken(from, to);
        assert!(e.starts_with(at), "{to:?}: {e}");
        assert!(e.contains(words), "{to:?}: {e}");
    }
}

/// The same mistakes through the real binary: exit 2, the file's path with line and column
/// on stderr, and nothing run.
#[test]
fn the_binary_refuses_each_with_exit_2() {
    let dir = std::env::temp_dir().join(format!("scaletestd-badcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("cfg.toml");
    for (from, to, at, words) in cases() {
        std::fs::write(&path, GOOD.replacen(from, to, 1)).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_scaletestd"))
            .args(["once", "--config", path.to_str().unwrap()])
            .env("CODER_SESSION_TOKEN", "tok")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{to:?}: {err}");
        let want = format!("{}{}", path.display(), at.trim_start_matches("cfg.toml"));
        assert!(err.contains(&want), "{to:?}: wanted {want} in {err}");
        assert!(err.contains(words), "{to:?}: {err}");
    }
    println!(
        "{} broken configurations, each refused with exit 2",
        cases().len()
    );
}

#[test]
fn missing_token_names_both_ways_to_give_it() {
    let e = Config::parse("cfg.toml", GOOD, &Env::default())
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("cfg.toml:1:1"), "{e}");
    assert!(
        e.contains("CODER_SESSION_TOKEN") && e.contains("token_file"),
        "{e}"
    );
}

#[test]
fn environment_fills_what_the_file_leaves_out() {
    let text = GOOD.replace("url = \"http://127.0.0.1:3000\"\n", "");
    let env = Env {
        coder_url: Some("https://coder.example.com".into()),
        ..env()
    };
    let c = Config::parse("cfg.toml", &text, &env).unwrap();
    assert_eq!(c.coder.url.as_str(), "https://coder.example.com/");
    assert_eq!(c.coder.token.expose(), "tok");
}

#[test]
fn token_file_is_read_and_never_printed() {
    let dir = std::env::temp_dir().join(format!("scaletestd-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("token");
    std::fs::write(&path, "file-token-abcdef\n").unwrap();
    let text = GOOD.replace(
        "[coder]\n",
        &format!("[coder]\ntoken_file = {:?}\n", path.display().to_string()),
    );
    let c = Config::parse("cfg.toml", &text, &Env::default()).unwrap();
    assert_eq!(c.coder.token.expose(), "file-token-abcdef");
    assert!(!format!("{c:?}").contains("file-token-abcdef"));
    let _ = std::fs::remove_dir_all(dir);
}

/// A count from the command line goes through the same check as one in the file: names that
/// would pass Coder's 32 characters are refused before anything is created.
#[test]
fn an_impossible_count_on_the_command_line_is_refused() {
    let dir = std::env::temp_dir().join(format!("scaletestd-badcount-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("cfg.toml");
    let long_prefix = GOOD.replacen(
        "name = \"s\"",
        "name = \"s\"\nworkspace_prefix = \"a-twenty-two-chars-pfx\"",
        1,
    );
    for (text, count, words) in [
        (
            GOOD,
            "100000",
            "--count: count is 100000: expected 1 to 99999",
        ),
        (GOOD, "0", "--count: count is 0: expected 1 to 99999"),
        (
            long_prefix.as_str(),
            "100",
            "--count: count is 100: expected 1 to 99 (Coder's names are at most 32 characters, and workspace_prefix \"a-twenty-two-chars-pfx\" leaves room for 2 digits)",
        ),
    ] {
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_scaletestd"))
            .args(["once", "--count", count, "--config", path.to_str().unwrap()])
            .env("CODER_SESSION_TOKEN", "tok")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--count {count}: {err}");
        assert!(err.contains(words), "--count {count}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `[scenario.app]` and `[scenario.traffic]`: the tables are the spelling; the flat keys of
/// earlier releases still work, each with a warning naming its new spelling, file and line;
/// both at once is refused.
#[test]
fn app_and_traffic_settings_are_tables_and_the_flat_keys_still_work_with_a_warning() {
    let with_app = GOOD.replacen("\"pty\", \"delete\"]", "\"pty\", \"app\", \"delete\"]", 1);
    let table = format!(
        "{with_app}\n[scenario.app]\nslug = \"echo\"\npath = \"/x\"\nstatus = [200, 204]\nwebsocket = true\n"
    );
    let c = Config::parse("cfg.toml", &table, &env()).unwrap();
    let app = c.scenarios[0].app.as_ref().unwrap();
    assert_eq!(
        (
            app.slug.as_str(),
            app.path.as_str(),
            app.statuses.as_deref(),
            app.websocket
        ),
        ("echo", "/x", Some(&[200u16, 204][..]), true)
    );
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);

    // The flat spelling: the same settings, a warning per key where it was written.
    let flat = with_app.replacen(
        "schedule = ",
        "app = \"echo\"\napp_path = \"/x\"\napp_status = [200, 204]\napp_websocket = true\nschedule = ",
        1,
    );
    let c = Config::parse("cfg.toml", &flat, &env()).unwrap();
    let old = c.scenarios[0].app.as_ref().unwrap();
    assert_eq!(
        (
            old.slug.as_str(),
            old.path.as_str(),
            old.statuses.as_deref(),
            old.websocket
        ),
        ("echo", "/x", Some(&[200u16, 204][..]), true)
    );
    assert_eq!(
        c.warnings,
        [
            "cfg.toml:10:7: app = \"<slug>\" is deprecated: write it as `slug` in [scenario.app] (it still works for now)",
            "cfg.toml:11:12: app_path is deprecated: write it as `path` in [scenario.app] (it still works for now)",
            "cfg.toml:12:14: app_status is deprecated: write it as `status` in [scenario.app] (it still works for now)",
            "cfg.toml:13:17: app_websocket is deprecated: write it as `websocket` in [scenario.app] (it still works for now)",
        ]
    );

    // A table's bad value is named with the table's spelling, where it was written.
    let bad = table.replace("slug = \"echo\"", "slug = \"Code Server\"");
    let e = Config::parse("cfg.toml", &bad, &env())
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("cfg.toml:16:8: [scenario.app] slug \"Code Server\" is not an app slug"),
        "{e}"
    );
    // Both spellings at once.
    let both = table.replacen("schedule = ", "app_path = \"/y\"\nschedule = ", 1);
    let e = Config::parse("cfg.toml", &both, &env())
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("cfg.toml:10:12: app_path is the old spelling of a [scenario.app] key, and this scenario has [scenario.app] (line 16)"),
        "{e}"
    );

    // Traffic: the table on a traffic pool; the flat keys warn; neither on a lifecycle one.
    let pool = GOOD
        .replacen("schedule = \"0 */15 * * * *\"", "kind = \"traffic\"", 1)
        .replacen(
            "phases = [\"create\", \"build\", \"agent\", \"pty\", \"delete\"]",
            "phases = [\"create\", \"build\", \"agent\", \"delete\"]",
            1,
        );
    let c = Config::parse(
        "cfg.toml",
        &format!("{pool}\n[scenario.traffic]\nsessions_per_workspace = 3\ntransports = [\"pty\", \"ssh\"]\ntick_interval = \"250ms\"\n"),
        &env(),
    )
    .unwrap();
    let t = &c.scenarios[0].traffic;
    assert_eq!(
        (
            t.sessions_per_workspace,
            t.transports.len(),
            t.tick_interval
        ),
        (3, 2, std::time::Duration::from_millis(250))
    );
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let c = Config::parse(
        "cfg.toml",
        &pool.replacen("kind = ", "sessions_per_workspace = 3\nkind = ", 1),
        &env(),
    )
    .unwrap();
    assert_eq!(c.scenarios[0].traffic.sessions_per_workspace, 3);
    assert_eq!(
        c.warnings,
        [
            "cfg.toml:10:26: sessions_per_workspace is deprecated: write it as `sessions_per_workspace` in [scenario.traffic] (it still works for now)"
        ]
    );
    let e = Config::parse(
        "cfg.toml",
        &format!("{GOOD}\n[scenario.traffic]\nsessions_per_workspace = 3\n"),
        &env(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("[scenario.traffic] belongs to kind = \"traffic\" scenarios, and scenario \"s\" is kind = \"lifecycle\""),
        "{e}"
    );
}

/// The fuzz target's property (`fuzz/fuzz_targets/config.rs`) over its seeds and every prefix
/// of each: accepted, or refused with an error that names the file and never the token. The
/// test command replays these; `scripts/fuzz` fuzzes from them.
#[test]
fn fuzz_seeds_and_each_prefix_are_accepted_or_refused_naming_the_file() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/config");
    let env = Env {
        coder_session_token: Some("fuzz-token".into()),
        ..Default::default()
    };
    let (mut tried, mut refused) = (0, 0);
    for entry in std::fs::read_dir(&dir).expect("fuzz/seeds/config") {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let cuts = text.char_indices().map(|(i, _)| i).chain([text.len()]);
        for cut in cuts {
            tried += 1;
            if let Err(e) = Config::parse("fuzz.toml", &text[..cut], &env) {
                refused += 1;
                let msg = e.to_string();
                assert!(msg.starts_with("fuzz.toml"), "{msg}");
                assert!(!msg.contains("fuzz-token"), "the token leaked: {msg}");
            }
        }
    }
    // Three seeds of a few hundred bytes: most prefixes are refused, the whole good one not.
    assert!(tried > 1000, "{tried} texts");
    assert!(
        refused > 0 && refused < tried,
        "{refused} of {tried} refused"
    );
}
