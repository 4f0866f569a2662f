//! A real Prometheus's HTTP API, for tests that check what it scraped: queries, the number
//! of series a query returns, and the dashboards' variables filled in.
#![allow(dead_code)]

use std::process::Child;

/// A child process killed (and reaped) when dropped.
pub struct Kill(pub Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
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
