//! `scaletestd trigger`: starts a run on a running daemon through its run API (`POST
//! /api/v1/runs`) and, with `--wait`, follows it to the end and exits as `once` would: the
//! step a deploy pipeline adds after "deploy to staging".

use std::path::PathBuf;
use std::time::Duration;

use super::{EXIT_FAILED, EXIT_OK, EXIT_USAGE};
use crate::secret::Secret;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The daemon: its `[server] listen` address as a URL.
    #[arg(long, default_value = "http://127.0.0.1:9464")]
    pub url: url::Url,
    /// The scenario to run.
    #[arg(long)]
    pub scenario: String,
    /// Run this many workspaces instead of the scenario's count.
    #[arg(long)]
    pub count: Option<u32>,
    /// A file holding the daemon's API token (`[server] api_token_file`); else the
    /// SCALETESTD_API_TOKEN environment variable.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Wait for the run to finish; print its summary line and exit 0 (success) or 1.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this long (exit 1).
    #[arg(long, default_value = "2h", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// A response body as JSON; `Null` when it is not.
async fn json(r: reqwest::Response) -> serde_json::Value {
    r.bytes()
        .await
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn token(args: &Args) -> Result<Secret, String> {
    let (text, from) = match &args.token_file {
        Some(p) => (
            std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read --token-file {}: {e}", p.display()))?,
            format!("--token-file {}", p.display()),
        ),
        None => (
            std::env::var("SCALETESTD_API_TOKEN").map_err(|_| {
                "no API token: pass --token-file FILE or set SCALETESTD_API_TOKEN".to_string()
            })?,
            "SCALETESTD_API_TOKEN".to_string(),
        ),
    };
    let text = text.trim();
    not_a_token(text).map_err(|why| format!("{from} does not hold an API token: {why}"))?;
    Ok(Secret::new(text))
}

/// Why `text` cannot be a token in an `Authorization` header (never quoting it: it may be
/// a secret of another kind).
fn not_a_token(text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err(
            "it is empty (the daemon's token is the one line of [server] api_token_file)".into(),
        );
    }
    let lines = text.lines().count();
    if lines > 1 {
        return Err(format!(
            "it has {lines} lines, a token has one (is it the configuration file? give the file [server] api_token_file names)"
        ));
    }
    if let Some(c) = text.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "it holds {}, a token is printable ASCII without spaces",
            if c.is_whitespace() {
                "a space".to_string()
            } else {
                format!("the character {:?}", c.escape_unicode().to_string())
            }
        ));
    }
    Ok(())
}

pub async fn run(args: Args) -> u8 {
    let token = match token(&args) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client builds");
    let url = match args.url.join("/api/v1/runs") {
        Ok(u) => u,
        Err(e) => {
            eprintln!("error: --url {}: {e}", args.url);
            return EXIT_USAGE;
        }
    };
    let mut body = serde_json::json!({ "scenario": args.scenario });
    if let Some(n) = args.count {
        body["count"] = n.into();
    }
    let started = http
        .post(url.clone())
        .bearer_auth(token.expose())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_string())
        .send()
        .await;
    let (status, doc) = match started {
        Ok(r) => (r.status(), json(r).await),
        Err(e) => {
            eprintln!("error: cannot reach scaletestd at {}: {e}", args.url);
            return EXIT_USAGE;
        }
    };
    if status != reqwest::StatusCode::ACCEPTED {
        eprintln!(
            "error: scaletestd answered {status}: {}",
            doc["message"].as_str().unwrap_or("")
        );
        return if status == reqwest::StatusCode::CONFLICT {
            EXIT_FAILED
        } else {
            EXIT_USAGE
        };
    }
    let id = doc["id"].as_str().unwrap_or_default().to_string();
    println!("run {id} of scenario {:?} started", args.scenario);
    if !args.wait {
        return EXIT_OK;
    }
    let deadline = tokio::time::Instant::now() + args.timeout;
    let state_url = url
        .join(&format!("/api/v1/runs/{id}"))
        .expect("a path joins");
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if tokio::time::Instant::now() > deadline {
            eprintln!(
                "error: run {id} did not finish within {}",
                humantime::format_duration(args.timeout)
            );
            return EXIT_FAILED;
        }
        let doc = match http
            .get(state_url.clone())
            .bearer_auth(token.expose())
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => json(r).await,
            // The daemon restarting, a network blip: keep asking until the deadline.
            _ => continue,
        };
        match doc["state"].as_str() {
            Some("running") => continue,
            Some("done") => {
                println!("{}", doc["summary"].as_str().unwrap_or(""));
                return if doc["result"] == "success" {
                    EXIT_OK
                } else {
                    EXIT_FAILED
                };
            }
            _ => {
                eprintln!(
                    "error: run {id}: {}",
                    doc["message"].as_str().unwrap_or("ended without a report")
                );
                return EXIT_FAILED;
            }
        }
    }
}
