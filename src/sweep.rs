//! Sweeps: find workspaces of ours left behind (a crash, a killed run, a create that timed
//! out after Coder made the workspace) and delete them.
//!
//! "Ours" is strict: owned by the token's user (or, for a scenario with test users, by one
//! of them: `<users prefix>-<n>` exactly) and named exactly `<prefix>-<run>-<n>` with a run
//! id of our shape ([`crate::naming::parse`]). Nothing else is ever touched.

use std::collections::HashSet;

use futures_util::StreamExt;

use crate::coder::{ApiError, Client, Workspace};
use crate::config::Scenario;
use crate::shard::Shard;

/// What a sweep found and did.
#[derive(Debug, Default, Clone)]
pub struct SweepReport {
    pub found: Vec<String>,
    pub deleted: usize,
    pub failed: Vec<(String, String)>,
}

/// Lists the scenario's leftovers (owner me, its prefix, this shard's numbers), skipping the
/// names in `exclude` (workspaces of runs in flight).
pub async fn find(
    client: &Client,
    sc: &Scenario,
    shard: Option<Shard>,
    exclude: &HashSet<String>,
) -> Result<Vec<Workspace>, ApiError> {
    let me = client.me().await?;
    let users = sc.users.as_ref().map(|u| u.prefix.as_str());
    let query = match users {
        // The test users' workspaces too: the token's user (an owner) sees every one.
        Some(_) => format!("name:{}-", sc.workspace_prefix),
        None => format!("owner:me name:{}-", sc.workspace_prefix),
    };
    let mut out = Vec::new();
    let mut offset = 0;
    const PAGE: u32 = 100;
    loop {
        let page = client.workspaces(&query, PAGE, offset).await?;
        let n = page.workspaces.len() as u32;
        for ws in page.workspaces {
            let Some((_, index)) = crate::naming::parse(&sc.workspace_prefix, &ws.name) else {
                continue;
            };
            let ours = ws.owner_id == me.id
                || users.is_some_and(|p| crate::users::UserSpec::owns_name(p, &ws.owner_name));
            if !ours || exclude.contains(&ws.name) {
                continue;
            }
            if shard.is_some_and(|s| !s.owns(sc.count, index)) {
                continue;
            }
            out.push(ws);
        }
        if n < PAGE {
            break;
        }
        offset += n;
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Finds and (unless `dry_run`) deletes the scenario's leftovers, 10 at a time.
pub async fn sweep(
    client: &Client,
    sc: &Scenario,
    shard: Option<Shard>,
    exclude: &HashSet<String>,
    dry_run: bool,
) -> Result<SweepReport, ApiError> {
    let found = find(client, sc, shard, exclude).await?;
    let mut report = SweepReport {
        found: found.iter().map(|w| w.name.clone()).collect(),
        ..Default::default()
    };
    if dry_run || found.is_empty() {
        return Ok(report);
    }
    let results: Vec<_> = futures_util::stream::iter(found)
        .map(|ws| async move {
            let r = tokio::time::timeout(
                sc.timeouts.of(crate::phases::Phase::Delete),
                crate::phases::delete::run(client, ws.id, None),
            )
            .await;
            let r = match r {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err("delete timed out".to_string()),
            };
            (ws.name, r)
        })
        .buffer_unordered(10)
        .collect()
        .await;
    for (name, r) in results {
        match r {
            Ok(()) => report.deleted += 1,
            Err(e) => {
                tracing::warn!(workspace = %name, error = %e, "sweep could not delete a leftover workspace");
                report.failed.push((name, e));
            }
        }
    }
    Ok(report)
}
