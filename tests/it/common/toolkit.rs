//! The test toolkit: configuration files built one way, the binary run one way (everything it
//! said shown when it fails), waiting one way, and temporary directories that go away.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use scaletestd::config::{Config, Env};

pub const BIN: &str = env!("CARGO_BIN_EXE_scaletestd");

// --- Configuration files ------------------------------------------------------------------

/// A configuration file: `[coder]` pointing at a URL, optional `[server]` and `[telemetry]`
/// lines, and scenarios.
#[derive(Debug, Clone)]
pub struct ConfigText {
    coder: Vec<String>,
    server: Vec<String>,
    telemetry: Vec<String>,
    scenarios: Vec<ScenarioText>,
}

/// One `[[scenario]]`: its keys, then its `[scenario.*]` tables.
#[derive(Debug, Clone)]
pub struct ScenarioText {
    keys: Vec<String>,
    timeouts: Vec<String>,
    tables: Vec<String>,
}

impl ConfigText {
    pub fn new(url: impl std::fmt::Display) -> ConfigText {
        ConfigText {
            coder: vec![format!(
                "url = \"{}\"",
                url.to_string().trim_end_matches('/')
            )],
            server: vec![],
            telemetry: vec![],
            scenarios: vec![],
        }
    }

    /// A line of `[coder]`.
    pub fn coder(mut self, line: &str) -> Self {
        self.coder.push(line.into());
        self
    }

    /// A line of `[server]`.
    pub fn server(mut self, line: &str) -> Self {
        self.server.push(line.into());
        self
    }

    /// `[server]` on any free loopback port, with a grace period tests can wait out.
    pub fn daemon(self) -> Self {
        self.server("listen = \"127.0.0.1:0\"")
            .server("shutdown_grace = \"30s\"")
    }

    /// A line of `[telemetry]`.
    pub fn telemetry(mut self, line: &str) -> Self {
        self.telemetry.push(line.into());
        self
    }

    /// A timeout of the last scenario added (a dotted phase name goes in quotes).
    pub fn scenario_timeout(mut self, phase: &str, limit: &str) -> Self {
        let s = self.scenarios.pop().expect("a scenario to time");
        self.scenarios.push(s.timeout(phase, limit));
        self
    }

    pub fn scenario(mut self, s: ScenarioText) -> Self {
        self.scenarios.push(s);
        self
    }

    pub fn text(&self) -> String {
        let mut t = String::new();
        let table = |t: &mut String, name: &str, lines: &[String]| {
            if !lines.is_empty() {
                let _ = writeln!(t, "[{name}]\n{}\n", lines.join("\n"));
            }
        };
        table(&mut t, "coder", &self.coder);
        table(&mut t, "server", &self.server);
        table(&mut t, "telemetry", &self.telemetry);
        for s in &self.scenarios {
            let _ = writeln!(t, "[[scenario]]\n{}\n", s.keys.join("\n"));
            for tab in &s.tables {
                let _ = writeln!(t, "{tab}\n");
            }
            if !s.timeouts.is_empty() {
                let _ = writeln!(t, "[scenario.timeouts]\n{}\n", s.timeouts.join("\n"));
            }
        }
        t
    }

    /// Parsed as the daemon would, with the test token in the environment.
    pub fn parse(&self) -> Config {
        let env = Env {
            coder_session_token: Some(super::TOKEN.into()),
            ..Default::default()
        };
        Config::parse("test.toml", &self.text(), &env)
            .unwrap_or_else(|e| panic!("the test configuration is valid: {e}\n{}", self.text()))
    }

    /// Written to `dir/name`; the path.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, self.text()).unwrap();
        path
    }
}

impl ScenarioText {
    /// A scenario of `count` workspaces from the simulator's `docker` template, all at once.
    pub fn new(name: &str, count: u32) -> ScenarioText {
        ScenarioText {
            keys: vec![
                format!("name = \"{name}\""),
                "template = \"docker\"".into(),
                format!("count = {count}"),
            ],
            timeouts: vec![],
            tables: vec![],
        }
    }

    /// The template to create from (`docker` unless set).
    pub fn template(mut self, name: &str) -> Self {
        self.keys.retain(|k| !k.starts_with("template = "));
        self.keys.push(format!("template = \"{name}\""));
        self
    }

    /// `workspace_prefix`.
    pub fn prefix(self, prefix: &str) -> Self {
        self.key(&format!("workspace_prefix = \"{prefix}\""))
    }

    /// `schedule`, a cron expression with seconds.
    pub fn schedule(self, cron: &str) -> Self {
        self.key(&format!("schedule = \"{cron}\""))
    }

    /// `phases`, in order.
    pub fn phases(self, phases: &[&str]) -> Self {
        let list: Vec<String> = phases.iter().map(|p| format!("\"{p}\"")).collect();
        self.key(&format!("phases = [{}]", list.join(", ")))
    }

    /// `run_command` and the `expect_output` it must print.
    pub fn command(self, run: &str, expect: &str) -> Self {
        self.key(&format!("run_command = \"{run}\""))
            .key(&format!("expect_output = \"{expect}\""))
    }

    /// A line of the scenario table (`concurrency = 5`, `phases = [...]`, ...).
    pub fn key(mut self, line: &str) -> Self {
        self.keys.push(line.into());
        self
    }

    /// Several lines of the scenario table, as written.
    pub fn keys(mut self, lines: &str) -> Self {
        self.keys.extend(
            lines
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(String::from),
        );
        self
    }

    /// A timeout: `("build", "20s")`; replaces one already set for the phase.
    pub fn timeout(mut self, phase: &str, limit: &str) -> Self {
        let key = format!("{phase} = ");
        self.timeouts.retain(|t| !t.starts_with(&key));
        self.timeouts.push(format!("{phase} = \"{limit}\""));
        self
    }

    /// A `[scenario.<name>]` table with its lines.
    pub fn table(mut self, name: &str, lines: &str) -> Self {
        self.tables.push(format!("[scenario.{name}]\n{lines}"));
        self
    }
}

// --- The binary --------------------------------------------------------------------------

/// `scaletestd` with arguments and environment (the test token unless set): run to its end
/// with [`Bin::run`], or started with [`Bin::spawn`]. Every test starts the binary this way.
pub struct Bin {
    cmd: Command,
}

/// What a run of the binary did.
pub struct Ran {
    pub command: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Bin {
    pub fn new(args: &[&str]) -> Bin {
        let mut cmd = Command::new(BIN);
        cmd.args(args).env("CODER_SESSION_TOKEN", super::TOKEN);
        Bin { cmd }
    }

    pub fn arg(mut self, a: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.arg(a);
        self
    }

    pub fn env(mut self, k: &str, v: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.env(k, v);
        self
    }

    /// Without a session token in its environment (as a user who has none runs it).
    pub fn no_token(mut self) -> Self {
        self.cmd.env_remove("CODER_SESSION_TOKEN");
        self
    }

    /// Where its standard output goes when spawned (inherited unless set).
    pub fn stdout(mut self, to: std::process::Stdio) -> Self {
        self.cmd.stdout(to);
        self
    }

    /// Where its standard error goes when spawned (inherited unless set).
    pub fn stderr(mut self, to: std::process::Stdio) -> Self {
        self.cmd.stderr(to);
        self
    }

    /// Started and not waited for: a server, or a run the test stops or reaps itself. Put it
    /// in a [`Kill`] unless the test waits for it.
    pub fn spawn(mut self) -> std::process::Child {
        let command = format!("{:?}", self.cmd);
        self.cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{command}: {e}"))
    }

    pub fn run(mut self) -> Ran {
        let command = format!("{:?}", self.cmd);
        let Output {
            status,
            stdout,
            stderr,
        } = self
            .cmd
            .output()
            .unwrap_or_else(|e| panic!("{command}: {e}"));
        Ran {
            command,
            code: status.code(),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }
}

impl Ran {
    /// Asserts the exit code; on a mismatch the panic shows the command and all it printed.
    pub fn expect_code(self, code: i32) -> Ran {
        assert_eq!(self.code, Some(code), "{self}");
        self
    }

    /// Stdout and stderr together.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl std::fmt::Display for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "command: {}\nexit code: {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.command, self.code, self.stdout, self.stderr
        )
    }
}

// --- Waiting -----------------------------------------------------------------------------

/// Waits until `condition` holds, checking every 20 ms; panics after `within`. The way the
/// tests wait for something to happen (never a fixed sleep).
#[track_caller]
pub fn eventually(
    within: Duration,
    mut condition: impl FnMut() -> bool,
) -> impl std::future::Future<Output = ()> {
    let at = std::panic::Location::caller();
    async move {
        let deadline = tokio::time::Instant::now() + within;
        while !condition() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the condition at {at} was not reached within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// [`eventually`] for a condition that has to await (a scrape, a request): returns the value
/// `check` accepted.
#[track_caller]
pub fn eventually_async<T, F, Fut>(
    within: Duration,
    mut check: F,
) -> impl std::future::Future<Output = T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let at = std::panic::Location::caller();
    async move {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(v) = check().await {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the condition at {at} was not reached within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// [`eventually`] for code that is not async.
#[track_caller]
pub fn eventually_blocking(within: Duration, mut condition: impl FnMut() -> bool) {
    let at = std::panic::Location::caller();
    let deadline = std::time::Instant::now() + within;
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "the condition at {at} was not reached within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

// --- Temporary directories ---------------------------------------------------------------

/// A directory of this test's own, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(test: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let d = std::env::temp_dir().join(format!("scaletestd-{test}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

// --- Turns -------------------------------------------------------------------------------

/// A turn of the cores: [`exclusive`] hands out one at a time, held for a test's length.
pub struct Exclusive(#[allow(dead_code)] std::sync::MutexGuard<'static, ()>);

/// Waits for, and holds until dropped, the one turn this test binary gives to tests that
/// saturate the cores (thousands of workspaces, soaks, a real coderd) or measure
/// milliseconds (latency within 5 ms, a herd started at its minute), so no two of them meet.
/// Light tests still run beside them, as tests of one file always have. A guard held across
/// `.await` is sound here: it is the test's own, for the whole test, and nothing it awaits
/// takes it.
pub fn exclusive() -> Exclusive {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A test that failed while holding it must not fail every test after it.
    Exclusive(TURN.lock().unwrap_or_else(|e| e.into_inner()))
}

// --- Processes ---------------------------------------------------------------------------

/// A child process of the test's own, killed and reaped when dropped: the one guard every
/// server a test starts (the binary, sshd, Prometheus, nginx) lives in.
pub struct Kill(pub std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Kill {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for Kill {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

/// Makes this test process the reaper of its orphaned descendants (Linux
/// `PR_SET_CHILD_SUBREAPER`), so a process a child leaves behind stays among
/// [`descendants`] instead of escaping to init.
pub fn reap_orphans() {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes integer arguments and touches no
    // memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(rc, 0, "prctl(PR_SET_CHILD_SUBREAPER)");
}

/// This process's living descendants (zombies left out), pid and command line: the processes
/// this test started, and only those.
pub fn descendants() -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let mut queue = vec![std::process::id()];
    while let Some(pid) = queue.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for child in children
                .split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok())
            {
                let stat =
                    std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
                let zombie = stat
                    .rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
                if !zombie {
                    let cmd = std::fs::read(format!("/proc/{child}/cmdline")).unwrap_or_default();
                    out.push((child, String::from_utf8_lossy(&cmd).replace('\0', " ")));
                }
                queue.push(child);
            }
        }
    }
    out
}

/// A loopback port free now (for a server a test configures before starting it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
