//! The floor: the same calls as a full lifecycle (create, the watch stream until the build
//! succeeds and the agent is ready, SSH exec, the web terminal, delete and its end on the
//! stream, and the same reads: build timings, the workspace before delete and after) with no
//! metrics, tracing, retries or classification. What any load generator must
//! spend at least.

use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::*;

const TOKEN_HEADER: &str = "Coder-Session-Token";

async fn post(http: &reqwest::Client, url: &str, body: Value) -> Result<Value, String> {
    let r = http
        .post(url)
        .header(TOKEN_HEADER, TOKEN)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let bytes = r.bytes().await.map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

/// The workspace states on a `/watch` stream.
struct Watch {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: Vec<u8>,
    /// The latest state seen.
    last: Value,
}

impl Watch {
    async fn open(http: &reqwest::Client, url: &str) -> Result<Watch, String> {
        let r = http
            .get(url)
            .header(TOKEN_HEADER, TOKEN)
            .header("accept", "text/event-stream")
            .send()
            .await
            .map_err(|e| e.to_string())?;
        Ok(Watch {
            body: Box::pin(r.bytes_stream()),
            buf: Vec::new(),
            last: Value::Null,
        })
    }

    /// The next state; `None` when the stream ends.
    async fn next(&mut self) -> Option<Value> {
        loop {
            while let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=nl).collect();
                if let Some(data) = line.strip_prefix(b"data: ")
                    && let Ok(v) = serde_json::from_slice::<Value>(data)
                {
                    self.last = v.clone();
                    return Some(v);
                }
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                _ => return None,
            }
        }
    }
}

struct AnyKey;

impl russh::client::Handler for AnyKey {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

async fn ssh(addr: &str, user: &str) -> Result<(), String> {
    let cfg = Arc::new(russh::client::Config::default());
    let mut s = russh::client::connect(cfg, addr, AnyKey)
        .await
        .map_err(|e| e.to_string())?;
    if !s
        .authenticate_none(user)
        .await
        .map_err(|e| e.to_string())?
        .success()
    {
        return Err("ssh auth refused".into());
    }
    let mut ch = s.channel_open_session().await.map_err(|e| e.to_string())?;
    ch.exec(true, "echo bench-ok")
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    while let Some(msg) = ch.wait().await {
        if let russh::ChannelMsg::Data { data } = msg {
            out.extend_from_slice(&data);
        }
    }
    let _ = s
        .disconnect(russh::Disconnect::ByApplication, "", "en")
        .await;
    if String::from_utf8_lossy(&out).contains("bench-ok") {
        Ok(())
    } else {
        Err("ssh output".into())
    }
}

async fn pty(base: &str, agent: &str) -> Result<(), String> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!(
        "{}/api/v2/workspaceagents/{agent}/pty?reconnect={}&width=80&height=24&command=echo%20bench-ok",
        base.replacen("http", "ws", 1),
        uuid::Uuid::new_v4()
    );
    let mut req = url.into_client_request().map_err(|e| e.to_string())?;
    req.headers_mut()
        .insert(TOKEN_HEADER, TOKEN.parse().expect("a header value"));
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    while let Some(Ok(m)) = ws.next().await {
        out.extend_from_slice(&m.into_data());
        if String::from_utf8_lossy(&out).contains("bench-ok") {
            return Ok(());
        }
    }
    Err("pty output".into())
}

async fn lifecycle(
    http: &reqwest::Client,
    base: &str,
    ssh_addr: &str,
    template: &str,
    name: String,
) -> Result<(), String> {
    let ws = post(
        http,
        &format!("{base}/api/v2/users/me/workspaces"),
        json!({"template_id": template, "name": name}),
    )
    .await?;
    let id = ws["id"].as_str().ok_or("no id")?.to_string();
    let mut watch = Watch::open(http, &format!("{base}/api/v2/workspaces/{id}/watch")).await?;
    let agent = loop {
        let ws = watch.next().await.ok_or("stream ended")?;
        let b = &ws["latest_build"];
        match b["job"]["status"].as_str() {
            Some("failed" | "canceled") => return Err("build failed".into()),
            Some("succeeded") => {}
            _ => continue,
        }
        let agents: Vec<&Value> = b["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|r| r["agents"].as_array().into_iter().flatten())
            .collect();
        if !agents.is_empty() && agents.iter().all(|a| a["lifecycle_state"] == "ready") {
            break agents[0]["id"].as_str().ok_or("no agent id")?.to_string();
        }
    };
    let build = ws_build_id(&watch.last)?;
    get(
        http,
        &format!("{base}/api/v2/workspacebuilds/{build}/timings"),
    )
    .await?;
    ssh(ssh_addr, &name).await?;
    pty(base, &agent).await?;
    get(http, &format!("{base}/api/v2/workspaces/{id}")).await?;
    post(
        http,
        &format!("{base}/api/v2/workspaces/{id}/builds"),
        json!({"transition": "delete"}),
    )
    .await?;
    while let Some(ws) = watch.next().await {
        let b = &ws["latest_build"];
        if b["transition"] == "delete" && b["job"]["status"] == "succeeded" {
            break;
        }
    }
    // Gone (404 or 410): read but not judged.
    let _ = get(http, &format!("{base}/api/v2/workspaces/{id}")).await;
    Ok(())
}

fn ws_build_id(ws: &Value) -> Result<String, String> {
    Ok(ws["latest_build"]["id"]
        .as_str()
        .ok_or("no build id")?
        .to_string())
}

async fn get(http: &reqwest::Client, url: &str) -> Result<Value, String> {
    let r = http
        .get(url)
        .header(TOKEN_HEADER, TOKEN)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let bytes = r.bytes().await.map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

pub async fn run(n: u32, concurrency: u32, base: &str, ssh_addr: &str) -> Value {
    let http = reqwest::Client::new();
    let t: Value = {
        let r = http
            .get(format!(
                "{base}/api/v2/organizations/coder/templates/docker"
            ))
            .header(TOKEN_HEADER, TOKEN)
            .send()
            .await
            .expect("the simulator answers");
        serde_json::from_slice(&r.bytes().await.expect("a body")).expect("a template")
    };
    let template = t["id"].as_str().expect("a template id").to_string();
    let (_, rss0) = rss_mib("self");
    let cpu0 = cpu_seconds("self");
    let start = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency as usize));
    let run = format!("{:06x}", rand::random::<u32>() & 0xffffff);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let (http, base, ssh_addr, template) = (
            http.clone(),
            base.to_string(),
            ssh_addr.to_string(),
            template.clone(),
        );
        let sem = sem.clone();
        let name = format!("raw-{run}-{i}");
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await.expect("never closed");
            lifecycle(&http, &base, &ssh_addr, &template, name).await
        });
    }
    let (mut ok, mut errors) = (0, Vec::new());
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok(())) => ok += 1,
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push(e.to_string()),
        }
    }
    json!({
        "ok": ok,
        "n": n,
        "wall_s": start.elapsed().as_secs_f64(),
        "cpu_s": cpu_seconds("self") - cpu0,
        "rss_start_mib": rss0,
        "summary": format!("{n} lifecycles: {ok} succeeded, {} failed {:?}", errors.len(), errors.first()),
    })
}
