//! JSON messages over a websocket, as codersdk/wsjson speaks them: one JSON value per text
//! frame, each way. Two of Coder's endpoints talk this way here: the create form's dynamic
//! parameters (`GET /templateversions/{id}/dynamic-parameters`, coderd/parameters.go) and
//! the inbox (`GET /notifications/inbox/watch`, coderd/inboxnotifications.go).

use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_tungstenite::tungstenite::Message;

use super::ws::Ws;
use super::{ApiError, Client};
use crate::coder::inbox::InboxMessage;
use crate::coder::parameters::{DynamicParametersRequest, DynamicParametersResponse};

/// An open JSON websocket.
pub struct JsonStream {
    ws: Ws,
    path: String,
}

impl JsonStream {
    /// The next message, decoded; `Ok(None)` when the server closed the stream.
    pub async fn next<T: DeserializeOwned>(&mut self) -> Result<Option<T>, ApiError> {
        loop {
            let msg = match self.ws.next().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(self.connect(e.to_string())),
                Some(Ok(m)) => m,
            };
            let text = match msg {
                Message::Text(t) => t.to_string(),
                Message::Binary(b) => String::from_utf8_lossy(&b).into_owned(),
                Message::Close(_) => return Ok(None),
                _ => continue,
            };
            return super::decode_json(text.as_bytes())
                .map(Some)
                .map_err(|detail| ApiError::Protocol {
                    method: Method::GET,
                    path: self.path.clone(),
                    detail,
                });
        }
    }

    /// Sends one message.
    pub async fn send(&mut self, msg: &impl Serialize) -> Result<(), ApiError> {
        let text = serde_json::to_string(msg).expect("request types serialize");
        self.ws
            .send(Message::Text(text.into()))
            .await
            .map_err(|e| self.connect(e.to_string()))
    }

    /// When the latest message's bytes reached this machine (the kernel's stamp).
    pub fn arrived(&self) -> Option<std::time::Instant> {
        super::ws::arrived(&self.ws)
    }

    /// Closes the stream as a browser leaving the page does.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    fn connect(&self, detail: String) -> ApiError {
        ApiError::Connect {
            method: Method::GET,
            path: self.path.clone(),
            detail,
        }
    }
}

impl Client {
    /// The create form of a template version as this client's user sees it: a first preview
    /// (id -1) arrives unasked, then one answer per [`DynamicParametersRequest`] sent.
    pub async fn open_form(&self, version: uuid::Uuid) -> Result<Form, ApiError> {
        let path = format!("/api/v2/templateversions/{version}/dynamic-parameters");
        let ws = self
            .open_websocket(
                "/api/v2/templateversions/{templateversion}/dynamic-parameters",
                &path,
                &[],
                None,
            )
            .await?;
        Ok(Form(JsonStream { ws, path }))
    }

    /// This client's user's inbox, as Coder pushes it, for notifications of `template` only.
    pub async fn watch_inbox(&self, template: uuid::Uuid) -> Result<Inbox, ApiError> {
        let path = "/api/v2/notifications/inbox/watch".to_string();
        let template = template.to_string();
        let ws = self
            .open_websocket(
                "/api/v2/notifications/inbox/watch",
                &path,
                &[("templates", template.as_str())],
                None,
            )
            .await?;
        Ok(Inbox(JsonStream { ws, path }))
    }
}

/// The create form's stream.
pub struct Form(JsonStream);

impl Form {
    /// The next preview of the form; `Ok(None)` when Coder closed it.
    pub async fn next(&mut self) -> Result<Option<DynamicParametersResponse>, ApiError> {
        self.0.next().await
    }

    pub async fn send(&mut self, req: &DynamicParametersRequest) -> Result<(), ApiError> {
        self.0.send(req).await
    }

    pub async fn close(self) {
        self.0.close().await
    }
}

/// An inbox's stream.
pub struct Inbox(JsonStream);

impl Inbox {
    /// The next notification; `Ok(None)` when Coder closed the stream.
    pub async fn next(&mut self) -> Result<Option<InboxMessage>, ApiError> {
        self.0.next().await
    }

    /// When the latest notification reached this machine.
    pub fn arrived(&self) -> Option<std::time::Instant> {
        self.0.arrived()
    }
}
