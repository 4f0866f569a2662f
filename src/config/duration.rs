//! Durations as they are written in the file: "500ms", "30s", "15m", "1h 30m".

use std::time::Duration;

use serde::Deserialize;

/// A human duration ("30s", "15m", "1h 30m") as it appears in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(s.trim())
            .map(HumanDuration)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "invalid duration {s:?} ({e}): expected a duration such as \"500ms\", \"30s\", \"15m\" or \"1h\""
                ))
            })
    }
}

/// A `[scenario.timeouts]` value: a duration, where a phase name with a dot written bare
/// (`autostart.created = "5m"`, which TOML reads as a table `autostart`) is refused with
/// how to write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeoutLimit(pub Duration);

impl<'de> Deserialize<'de> for TimeoutLimit {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = TimeoutLimit;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a duration such as \"90s\"")
            }

            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<TimeoutLimit, E> {
                HumanDuration::deserialize(serde::de::value::StrDeserializer::<E>::new(s))
                    .map(|h| TimeoutLimit(h.0))
            }

            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut m: M,
            ) -> Result<TimeoutLimit, M::Error> {
                let inner: Option<String> = m.next_key()?;
                Err(serde::de::Error::custom(format!(
                    "a phase name with a dot goes in quotes: write it \"<phase>.{}\" = \"5m\", as \"autostart.created\" = \"5m\"",
                    inner.unwrap_or_default()
                )))
            }
        }
        d.deserialize_any(V)
    }
}
