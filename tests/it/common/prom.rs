//! A real Prometheus for tests that check what it scraped: one launcher, its HTTP API
//! (queries, the number of series a query returns) and the dashboards' variables filled in.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::toolkit::Kill;

/// Debian's `prometheus`, started by the test on a free loopback port with its data and log
/// in `dir`, scraping each `(job, address)` every second; killed when dropped.
pub struct Prometheus {
    /// `host:port` of its HTTP API.
    pub addr: String,
    log: PathBuf,
    _child: Kill,
}

impl Prometheus {
    /// Starts it and waits (bounded) until it says it is ready; `rules`: a rule file to
    /// evaluate every second.
    pub async fn start(dir: &Path, jobs: &[(&str, &str)], rules: Option<&Path>) -> Prometheus {
        let mut config =
            String::from("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n");
        if let Some(r) = rules {
            config += &format!("rule_files:\n  - {}\n", r.display());
        }
        config += "scrape_configs:\n";
        for (job, target) in jobs {
            config += &format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: [\"{target}\"]\n"
            );
        }
        let file = dir.join("prometheus.yml");
        std::fs::write(&file, config).unwrap();
        let addr = format!("127.0.0.1:{}", super::free_port());
        let log = dir.join("prometheus.log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--enable-feature=exemplar-storage")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect(
                "prometheus is installed (the test command installs Debian's prometheus package)",
            );
        let p = Prometheus {
            addr,
            log,
            _child: Kill(child),
        };
        let ready = tokio::time::timeout(
            Duration::from_secs(31),
            super::eventually_async(Duration::from_secs(30), || async {
                let ok = reqwest::get(format!("http://{}/-/ready", p.addr))
                    .await
                    .is_ok_and(|r| r.status().is_success());
                ok.then_some(())
            }),
        )
        .await;
        assert!(
            ready.is_ok(),
            "prometheus did not become ready:\n{}",
            p.log()
        );
        p
    }

    /// What it has logged so far (for a failure's message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

pub async fn get_json(url: &str) -> serde_json::Value {
    let text = reqwest::get(url).await.unwrap().text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: {e}: {text}"))
}

pub async fn query(prom: &str, q: &str) -> serde_json::Value {
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("query", q)
        .finish();
    let resp = reqwest::Client::new()
        .post(format!("http://{prom}/api/v1/query"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    serde_json::from_str(&resp.text().await.unwrap()).unwrap()
}

pub async fn series(prom: &str, q: &str) -> Result<usize, String> {
    let v = query(prom, q).await;
    if v["status"] != "success" {
        return Err(format!("{}: {}", v["errorType"], v["error"]));
    }
    Ok(v["data"]["result"].as_array().map_or(0, |a| a.len()))
}

/// A panel expression with the dashboard's variables filled in.
pub fn substitute(expr: &str) -> String {
    expr.replace("$scenario", "demo.*")
        .replace("$__rate_interval", "20s")
        .replace("$__interval", "10s")
        .replace("$__range", "5m")
}

/// Every Grafana dashboard of the project (`dashboards/*.json`): its path and its JSON.
pub fn dashboards() -> Vec<(std::path::PathBuf, serde_json::Value)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/dashboards");
    let mut found: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let dash = serde_json::from_str(&std::fs::read_to_string(&p).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, dash)
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

/// Every query of a dashboard: each panel's title beside each of its targets.
pub fn targets(dash: &serde_json::Value) -> Vec<(&serde_json::Value, &serde_json::Value)> {
    dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |t| (&p["title"], t))
        })
        .collect()
}

/// Runs `q`; when it fails or returns no series, says so in `failures`, naming `what`.
pub async fn check_series(prom: &str, what: &str, q: &str, failures: &mut Vec<String>) {
    match series(prom, q).await {
        Ok(0) => failures.push(format!("{what}: no series: {q}")),
        Ok(_) => {}
        Err(e) => failures.push(format!("{what}: {e}: {q}")),
    }
}
