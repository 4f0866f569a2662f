//! The real `scaletestd run` as a child process, with its stderr captured, and scrapes of its
//! `/metrics` parsed by a real exposition parser.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openmetrics_parser::OpenMetricsValue;
use openmetrics_parser::openmetrics::parse_openmetrics;

pub struct DaemonProcess {
    pub child: super::Kill,
    pub addr: String,
    pub stderr: Arc<Mutex<String>>,
}

/// A directory of the test's own, removed when dropped.
pub fn tmpdir(test: &str) -> super::TempDir {
    super::TempDir::new(test)
}

/// Starts `scaletestd <args>` and waits (bounded) until it says where it listens.
pub fn spawn(args: &[&str], token: &str) -> DaemonProcess {
    spawn_logging(args, token, "info,tokio_cron_scheduler=warn")
}

/// [`spawn`] with a log filter (`RUST_LOG`).
pub fn spawn_logging(args: &[&str], token: &str, filter: &str) -> DaemonProcess {
    let mut child = super::Bin::new(args)
        .env("CODER_SESSION_TOKEN", token)
        .env("RUST_LOG", filter)
        // As the container image and the systemd unit run it (deploy/Dockerfile).
        .env("MALLOC_ARENA_MAX", "2")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let stderr = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let pipe = child.stderr.take().unwrap();
    let buf = stderr.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("scaletestd listening on http://") {
                let _ = tx.send(rest.split('/').next().unwrap_or("").to_string());
            }
            let mut b = buf.lock().unwrap();
            b.push_str(&line);
            b.push('\n');
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("the daemon did not start: {}", stderr.lock().unwrap()));
    DaemonProcess {
        child: super::Kill(child),
        addr,
        stderr,
    }
}

impl DaemonProcess {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
    }

    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits (bounded) for the process to exit; its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let mut code = None;
        super::eventually_blocking(within, || match self.child.try_wait().unwrap() {
            Some(st) => {
                code = st.code();
                true
            }
            None => false,
        });
        code
    }

    pub async fn get(&self, path: &str, accept: Option<&str>) -> (u16, String) {
        let mut req = reqwest::Client::new().get(format!("http://{}{path}", self.addr));
        if let Some(a) = accept {
            req = req.header("Accept", a);
        }
        let resp = req.send().await.expect("the daemon answers");
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    /// Scrapes OpenMetrics and parses it.
    pub async fn scrape(&self) -> Scrape {
        let (code, body) = self
            .get(
                "/metrics",
                Some("application/openmetrics-text; version=1.0.0"),
            )
            .await;
        assert_eq!(code, 200);
        Scrape::parse(&body)
    }

    /// Scrapes until `check` holds (bounded): [`super::eventually`] for the daemon's
    /// metrics, with its log in the panic.
    pub async fn wait_for(&self, within: Duration, check: impl Fn(&Scrape) -> bool) -> Scrape {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let s = self.scrape().await;
            if check(&s) {
                return s;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "condition not reached within {within:?}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// One sample: family, labels, value (counter/gauge value or histogram count), exemplars.
#[derive(Debug, Clone)]
pub struct Series {
    pub family: String,
    pub labels: HashMap<String, String>,
    pub value: f64,
    pub exemplar_trace_ids: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Scrape {
    pub series: Vec<Series>,
    pub text: String,
}

impl Scrape {
    pub fn parse(text: &str) -> Scrape {
        let exp = parse_openmetrics(text)
            .unwrap_or_else(|e| panic!("exposition does not parse: {e:?}\n{text}"));
        let mut series = Vec::new();
        for (name, fam) in exp.families {
            for s in fam.iter_samples() {
                let ls = s.get_labelset().unwrap();
                let labels: HashMap<String, String> =
                    ls.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                let (value, ex) = match &s.value {
                    OpenMetricsValue::Counter(c) => (
                        c.value.as_f64(),
                        c.exemplar.iter().cloned().collect::<Vec<_>>(),
                    ),
                    OpenMetricsValue::Gauge(g) | OpenMetricsValue::Unknown(g) => {
                        (g.as_f64(), vec![])
                    }
                    OpenMetricsValue::Histogram(h) => (
                        h.count.unwrap_or(0) as f64,
                        h.buckets
                            .iter()
                            .filter_map(|b| b.exemplar.clone())
                            .collect(),
                    ),
                    _ => continue,
                };
                let exemplar_trace_ids = ex
                    .iter()
                    .filter_map(|e| e.labels.get("trace_id").cloned())
                    .collect();
                series.push(Series {
                    family: name.clone(),
                    labels,
                    value,
                    exemplar_trace_ids,
                });
            }
        }
        Scrape {
            series,
            text: text.to_string(),
        }
    }

    /// Sum of a family's values over the series matching every given label.
    pub fn sum(&self, family: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(family, labels).map(|s| s.value).sum()
    }

    pub fn matching<'a>(
        &'a self,
        family: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Series> + 'a {
        self.series.iter().filter(move |s| {
            s.family == family
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    pub fn has(&self, family: &str, labels: &[(&str, &str)]) -> bool {
        self.matching(family, labels).next().is_some()
    }
}

/// A daemon configuration against `sim_url`, written to `path`: listening on any port, a
/// trace link for the status page, and `scenarios`.
pub fn write_config(path: &Path, sim_url: &str, scenarios: &[super::ScenarioText]) {
    let text = scenarios
        .iter()
        .fold(daemon_config(sim_url), |c, s| c.scenario(s.clone()))
        .text();
    std::fs::write(path, text).unwrap();
}

/// The daemon's configuration against `sim_url` ([`write_config`]'s), for scenarios to be
/// added to.
pub fn daemon_config(sim_url: &str) -> super::ConfigText {
    super::ConfigText::new(sim_url)
        .daemon()
        .telemetry("trace_link = \"https://grafana.example.com/explore?traceId={trace_id}\"")
}

/// A cron expression firing at the given offsets (seconds) from now, within one minute.
pub fn cron_at(offsets: &[u32]) -> String {
    let mut now = chrono::Utc::now();
    let max = *offsets.iter().max().unwrap() as i64;
    if now.timestamp() % 60 + max + 1 >= 60 {
        let wait = 60 - now.timestamp() % 60;
        std::thread::sleep(Duration::from_secs(wait as u64));
        now = chrono::Utc::now();
    }
    use chrono::Timelike;
    let secs: Vec<String> = offsets
        .iter()
        .map(|o| (now.second() + o).to_string())
        .collect();
    format!("{} {} {} * * *", secs.join(","), now.minute(), now.hour())
}
