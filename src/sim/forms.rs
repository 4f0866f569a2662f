//! The simulator's create form: `GET /templateversions/{id}/dynamic-parameters` upgraded to a
//! websocket, as coderd/parameters.go `handleParameterWebsocket` serves it — a first preview
//! (id -1) computed without input, then one preview per `{"id": N, "inputs": {...},
//! "owner_id": …}` received, each evaluated after `latency.form` (coderd runs coder/preview
//! on the template for each), with the caller as owner unless the request names another.

use std::sync::Arc;

use axum::Extension;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::{Path, State as Ax};
use axum::response::Response as AxResponse;

use super::accounts::Caller;
use super::api::App;
use crate::coder::parameters::DynamicParametersRequest;

pub async fn handler(
    Ax(app): Ax<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(version): Path<String>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> AxResponse {
    let ws = match super::api::upgrade(ws) {
        Ok(ws) => ws,
        Err(refused) => return *refused,
    };
    if version != app.state.id.template.active_version_id.to_string() {
        return super::api::resource_not_found();
    }
    let cut = app.until_crash();
    ws.on_upgrade(move |mut socket| async move {
        let st = &app.state;
        let render = |id: i64, req: &DynamicParametersRequest| {
            let owner = req.owner_id.filter(|o| !o.is_nil()).unwrap_or(caller.id);
            let known = st.accounts.find(&owner.to_string()).is_some();
            super::parameters::evaluate(&st.id.params, id, &req.inputs, known)
        };
        tokio::time::sleep(st.cfg.latency.form.sample()).await;
        let first = render(-1, &DynamicParametersRequest::default());
        if socket
            .send(Message::Text(first.to_string().into()))
            .await
            .is_err()
        {
            return;
        }
        loop {
            let text = tokio::select! {
                _ = cut.cancelled() => return,
                m = socket.recv() => match m {
                    Some(Ok(Message::Text(t))) => t.to_string(),
                    Some(Ok(Message::Binary(b))) => String::from_utf8_lossy(&b).into_owned(),
                    Some(Ok(_)) => continue,
                    _ => return,
                },
            };
            // wsjson drops a message it cannot decode and keeps reading.
            let Ok(req) = serde_json::from_str::<DynamicParametersRequest>(&text) else {
                continue;
            };
            tokio::time::sleep(st.cfg.latency.form.sample()).await;
            let answer = render(req.id, &req);
            if socket
                .send(Message::Text(answer.to_string().into()))
                .await
                .is_err()
            {
                return;
            }
        }
    })
}
