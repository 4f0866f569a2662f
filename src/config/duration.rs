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
