//! `[scenario.app]`: the `app` phase's settings — which app (`slug`), how to reach it
//! (`access`, `path`), and what counts as success (`status`, `expect`, `websocket`). They
//! belong to a scenario whose phases include `app`.
//!
//! Earlier releases spelled them flat on the scenario (`app = "<slug>"`, `app_access`,
//! `app_path`, `app_status`, `app_expect`, `app_websocket`); those still work, each with a
//! warning naming its new spelling and where it was written.

use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use super::scenario::RawScenario;
use super::{ConfigError, Source};
use crate::phases::Phase;
use crate::phases::app::{AccessMode, AppSettings};

/// `[scenario.app]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApp {
    slug: Option<Spanned<String>>,
    access: Option<Spanned<AccessMode>>,
    path: Option<Spanned<String>>,
    status: Option<Spanned<Vec<u16>>>,
    expect: Option<Spanned<String>>,
    websocket: Option<Spanned<bool>>,
}

/// The scenario's `app` key: the table, or the slug of the flat spelling.
#[derive(Debug)]
pub(super) enum AppKey {
    Table(RawApp),
    Slug(String),
}

impl<'de> Deserialize<'de> for AppKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<AppKey, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = AppKey;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a [scenario.app] table, or an app slug")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<AppKey, E> {
                Ok(AppKey::Slug(v.to_string()))
            }
            // Through the map's own access, so that the table's values keep their spans.
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<AppKey, A::Error> {
                RawApp::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(AppKey::Table)
            }
        }
        d.deserialize_any(V)
    }
}

/// The app settings as written, in either spelling (a warning for each flat key).
fn gather(
    src: &Source<'_>,
    s: &RawScenario,
    warnings: &mut Vec<String>,
) -> Result<RawApp, ConfigError> {
    let flat = [
        (
            "app_access",
            "access",
            s.app_access.as_ref().map(|v| v.span()),
        ),
        ("app_path", "path", s.app_path.as_ref().map(|v| v.span())),
        (
            "app_status",
            "status",
            s.app_status.as_ref().map(|v| v.span()),
        ),
        (
            "app_expect",
            "expect",
            s.app_expect.as_ref().map(|v| v.span()),
        ),
        (
            "app_websocket",
            "websocket",
            s.app_websocket.as_ref().map(|v| v.span()),
        ),
    ];
    let table = match s.app.as_ref().map(|a| (a.span(), a.get_ref())) {
        Some((span, AppKey::Table(t))) => {
            if let Some((old, _, Some(at))) = flat.iter().find(|(_, _, at)| at.is_some()) {
                return Err(ConfigError::at(
                    src,
                    Some(at.clone()),
                    format!(
                        "{old} is the old spelling of a [scenario.app] key, and this scenario has [scenario.app] (line {}): write every app setting in the table",
                        super::line_of(src, span.start)
                    ),
                ));
            }
            return Ok(RawApp {
                slug: t.slug.clone(),
                access: t.access.clone(),
                path: t.path.clone(),
                status: t.status.clone(),
                expect: t.expect.clone(),
                websocket: t.websocket.clone(),
            });
        }
        Some((span, AppKey::Slug(slug))) => {
            super::deprecated(
                src,
                warnings,
                span.clone(),
                "app = \"<slug>\"",
                "slug",
                "app",
            );
            Some(Spanned::new(span, slug.clone()))
        }
        None => None,
    };
    for (old, new, at) in &flat {
        if let Some(at) = at {
            super::deprecated(src, warnings, at.clone(), old, new, "app");
        }
    }
    Ok(RawApp {
        slug: table,
        access: s.app_access.clone(),
        path: s.app_path.clone(),
        status: s.app_status.clone(),
        expect: s.app_expect.clone(),
        websocket: s.app_websocket.clone(),
    })
}

pub(super) fn validate(
    src: &Source<'_>,
    raw: &RawScenario,
    phases: &[Phase],
    phases_span: Option<Range<usize>>,
    warnings: &mut Vec<String>,
) -> Result<Option<AppSettings>, ConfigError> {
    let at = |span: Range<usize>, msg: String| ConfigError::at(src, Some(span), msg);
    let s = gather(src, raw, warnings)?;
    // Messages name a key as it was written.
    let table = matches!(
        raw.app.as_ref().map(|a| a.get_ref()),
        Some(AppKey::Table(_))
    );
    let key = |k: &str| {
        if table {
            format!("[scenario.app] {k}")
        } else if k == "slug" {
            "app".to_string()
        } else {
            format!("app_{k}")
        }
    };
    if !phases.contains(&Phase::App) {
        let table = raw.app.as_ref().map(|v| v.span());
        let set = [
            ("[scenario.app]", table),
            ("app_access", raw.app_access.as_ref().map(|v| v.span())),
            ("app_path", raw.app_path.as_ref().map(|v| v.span())),
            ("app_status", raw.app_status.as_ref().map(|v| v.span())),
            ("app_expect", raw.app_expect.as_ref().map(|v| v.span())),
            (
                "app_websocket",
                raw.app_websocket.as_ref().map(|v| v.span()),
            ),
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
    let Some(slug) = &s.slug else {
        return Err(ConfigError::at(
            src,
            phases_span.or(Some(raw.name.span())),
            "phase \"app\" needs [scenario.app] with `slug = \"<slug>\"`: the slug of the template's app to reach (its coder_app `slug`)",
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
                "{} {text:?} is not an app slug: expected lowercase letters, digits and single hyphens, such as \"code-server\"",
                key("slug")
            ),
        ));
    }
    let path = match &s.path {
        Some(p) if !p.get_ref().starts_with('/') => {
            return Err(at(
                p.span(),
                format!(
                    "{} {:?}: expected a path starting with '/', such as \"/healthz\"",
                    key("path"),
                    p.get_ref()
                ),
            ));
        }
        Some(p) => p.get_ref().clone(),
        None => "/".into(),
    };
    let statuses = match &s.status {
        Some(list) => {
            let codes = list.get_ref();
            if codes.is_empty() {
                return Err(at(
                    list.span(),
                    format!(
                        "{} is empty: expected HTTP statuses such as [200, 302]",
                        key("status")
                    ),
                ));
            }
            if let Some(bad) = codes.iter().find(|c| !(100..=599).contains(*c)) {
                return Err(at(
                    list.span(),
                    format!(
                        "{} has {bad}: expected HTTP statuses from 100 to 599",
                        key("status")
                    ),
                ));
            }
            Some(codes.clone())
        }
        None => None,
    };
    Ok(Some(AppSettings {
        slug: text.clone(),
        access: s.access.as_ref().map(|a| *a.get_ref()).unwrap_or_default(),
        path,
        statuses,
        expect: s.expect.as_ref().map(|e| e.get_ref().clone()),
        websocket: s.websocket.as_ref().is_some_and(|w| *w.get_ref()),
    }))
}
