//! What the daemon shows through HTTP: the run API's runs and their state, the status page
//! and its JSON, and a trace's workspace (`server::Served`).

use super::Daemon;
use crate::config::Config;
use crate::metrics::Metrics;

/// Runs started through the API whose state is kept.
const DEMANDED_KEPT: usize = 100;

impl crate::server::Served for Daemon {
    fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn api_token(&self) -> Option<crate::secret::Secret> {
        self.config().server.api_token.clone()
    }

    fn start_run(
        &self,
        name: &str,
        count: Option<u32>,
    ) -> Result<String, crate::server::api::Refusal> {
        use crate::server::api::Refusal;
        let d = self.me.upgrade().ok_or(Refusal::Stopping)?;
        if self.stop.is_cancelled() {
            return Err(Refusal::Stopping);
        }
        let cfg = self.config();
        let names = || {
            cfg.scenarios
                .iter()
                .filter(|s| s.kind != crate::config::ScenarioKind::Traffic)
                .map(|s| format!("{:?}", s.name))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut sc = match self.scenario(name) {
            Some(sc) if sc.kind != crate::config::ScenarioKind::Traffic => sc,
            Some(_) => {
                return Err(Refusal::Unknown(format!(
                    "scenario {name:?} is a traffic pool, which runs all the time; runs can start: {}",
                    names()
                )));
            }
            None => {
                return Err(Refusal::Unknown(format!(
                    "no scenario {name:?}; runs can start: {}",
                    names()
                )));
            }
        };
        if let Some(n) = count {
            sc = sc
                .with_count(n)
                .map_err(|e| Refusal::Invalid(format!("count {n}: {e}")))?;
        }
        if !self.claim(name) {
            return Err(Refusal::Running);
        }
        let id = crate::naming::new_run_id();
        {
            let mut q = self.demanded.lock().unwrap_or_else(|p| p.into_inner());
            q.push_back((id.clone(), name.to_string(), None));
            while q.len() > DEMANDED_KEPT {
                q.pop_front();
            }
        }
        tracing::info!(scenario = %name, run.id = %id, "run started through the API");
        let run_id = id.clone();
        self.runs.spawn(async move {
            let report = if d.wait_for_sweep(&sc.name).await {
                d.run_scenario(&sc, Some(&run_id)).await
            } else {
                None
            };
            d.release(&sc.name);
            let doc = match report {
                Some(r) => {
                    let mut doc = crate::report::to_json_value(&r);
                    doc["state"] = "done".into();
                    doc
                }
                None => serde_json::json!({ "state": "skipped", "message": "scaletestd stopped before the run started" }),
            };
            let mut q = d.demanded.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(e) = q.iter_mut().find(|e| e.0 == run_id) {
                e.2 = Some(doc);
            }
        });
        Ok(id)
    }

    fn run_state(&self, id: &str) -> Option<serde_json::Value> {
        let q = self.demanded.lock().unwrap_or_else(|p| p.into_inner());
        let (id, scenario, doc) = q.iter().find(|e| e.0 == id)?;
        Some(match doc {
            Some(doc) => {
                let mut doc = doc.clone();
                doc["id"] = id.clone().into();
                doc
            }
            None => serde_json::json!({ "id": id, "scenario": scenario, "state": "running" }),
        })
    }

    fn status_page(&self) -> String {
        let cfg = self.config();
        crate::status::render(&self.history, &self.page_info(&cfg))
    }

    fn status_json(&self) -> serde_json::Value {
        let cfg = self.config();
        crate::status::json(&self.history, &self.page_info(&cfg))
    }

    fn find_trace(&self, trace_id: &str) -> Option<serde_json::Value> {
        let (scenario, run, w) = self.history.find_trace(trace_id)?;
        Some(serde_json::json!({
            "trace_id": trace_id,
            "scenario": scenario,
            "run_id": run.run_id,
            "run_summary": run.summary_line,
            "workspace": w.name,
            "phase": w.phase,
            "reason": w.reason,
            "error": w.error,
            "coder_trace_id": w.coder_trace_id,
        }))
    }
}

impl Daemon {
    /// What the status page and its JSON show besides the history.
    fn page_info<'a>(&self, cfg: &'a Config) -> crate::status::PageInfo<'a> {
        crate::status::PageInfo {
            // Traffic pools have their own section: listed once, with their live numbers.
            scenarios: cfg
                .scenarios
                .iter()
                .filter(|s| s.kind != crate::config::ScenarioKind::Traffic)
                .map(|s| (s.name.as_str(), s.schedule.as_deref()))
                .collect(),
            coder_url: cfg.coder.url.as_str(),
            coder_up: self.metrics.coder_up.get() == 1,
            coder_traces: self.metrics.coder_traces_seen(),
            trace_link: cfg.telemetry.trace_link.as_deref(),
            traffic: self
                .traffic
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|(name, st)| (name.clone(), st.snapshot()))
                .collect(),
        }
    }
}
