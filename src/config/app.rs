//! The `app` phase's keys of a scenario: which app (`app`, its slug), how to reach it
//! (`app_access`, `app_path`), and what counts as success (`app_status`, `app_expect`,
//! `app_websocket`). They belong to a scenario whose phases include `app`.

use std::ops::Range;

use super::scenario::RawScenario;
use super::{ConfigError, Source};
use crate::phases::Phase;
use crate::phases::app::AppSettings;

pub(super) fn validate(
    src: &Source<'_>,
    s: &RawScenario,
    phases: &[Phase],
    phases_span: Option<Range<usize>>,
) -> Result<Option<AppSettings>, ConfigError> {
    let at = |span: Range<usize>, msg: String| ConfigError::at(src, Some(span), msg);
    if !phases.contains(&Phase::App) {
        let set = [
            ("app", s.app.as_ref().map(|v| v.span())),
            ("app_access", s.app_access.as_ref().map(|v| v.span())),
            ("app_path", s.app_path.as_ref().map(|v| v.span())),
            ("app_status", s.app_status.as_ref().map(|v| v.span())),
            ("app_expect", s.app_expect.as_ref().map(|v| v.span())),
            ("app_websocket", s.app_websocket.as_ref().map(|v| v.span())),
        ];
        if let Some((key, Some(span))) = set.into_iter().find(|(_, sp)| sp.is_some()) {
            return Err(at(
                span,
                format!(
                    "{key} is set but `phases` has no \"app\": add \"app\" to phases or remove {key}"
                ),
            ));
        }
        return Ok(None);
    }
    let Some(slug) = &s.app else {
        return Err(ConfigError::at(
            src,
            phases_span.or(Some(s.name.span())),
            "phase \"app\" needs `app = \"<slug>\"`: the slug of the template's app to reach (its coder_app `slug`)",
        ));
    };
    // Coder's app slug rule (codersdk `AppSlugRegex`): lowercase letters and digits, single
    // hyphens inside.
    let text = slug.get_ref();
    let slug_ok = !text.is_empty()
        && !text.starts_with('-')
        && !text.ends_with('-')
        && !text.contains("--")
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !slug_ok {
        return Err(at(
            slug.span(),
            format!(
                "app {text:?} is not an app slug: expected lowercase letters, digits and single hyphens, such as \"code-server\""
            ),
        ));
    }
    let path = match &s.app_path {
        Some(p) if !p.get_ref().starts_with('/') => {
            return Err(at(
                p.span(),
                format!(
                    "app_path {:?}: expected a path starting with '/', such as \"/healthz\"",
                    p.get_ref()
                ),
            ));
        }
        Some(p) => p.get_ref().clone(),
        None => "/".into(),
    };
    let statuses = match &s.app_status {
        Some(list) => {
            let codes = list.get_ref();
            if codes.is_empty() {
                return Err(at(
                    list.span(),
                    "app_status is empty: expected HTTP statuses such as [200, 302]".into(),
                ));
            }
            if let Some(bad) = codes.iter().find(|c| !(100..=599).contains(*c)) {
                return Err(at(
                    list.span(),
                    format!("app_status has {bad}: expected HTTP statuses from 100 to 599"),
                ));
            }
            Some(codes.clone())
        }
        None => None,
    };
    Ok(Some(AppSettings {
        slug: text.clone(),
        access: s
            .app_access
            .as_ref()
            .map(|a| *a.get_ref())
            .unwrap_or_default(),
        path,
        statuses,
        expect: s.app_expect.as_ref().map(|e| e.get_ref().clone()),
        websocket: s.app_websocket.as_ref().is_some_and(|w| *w.get_ref()),
    }))
}
