//! Durations written the way people write them in YAML: `"5s"`, `"1h"`, `"250ms"`, `"168h"`.
//!
//! Used with `#[serde(with = "crate::duration")]` on `std::time::Duration` fields, so the
//! config types hold real durations and never a string to be parsed later.

use serde::{Deserialize, Deserializer, Serializer};
use std::time::Duration;

/// Parses `"5s"`, `"1h30m"`, `"250ms"`; a bare number is rejected so units are never guessed.
pub fn parse(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration ({e}); write it with a unit, like \"5s\", \"1h\" or \"250ms\""))
}

/// Formats a duration the way [`parse`] reads it, in the largest exact unit (`"1h"`, `"90s"`).
pub fn format(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        return humantime::format_duration(d).to_string().replace(' ', "");
    }
    for (unit, size) in [("h", 3_600_000u128), ("m", 60_000), ("s", 1_000)] {
        if ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*d))
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse(&s).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_common_values() {
        for (text, d) in [
            ("5s", Duration::from_secs(5)),
            ("1h", Duration::from_secs(3600)),
            ("168h", Duration::from_secs(168 * 3600)),
            ("250ms", Duration::from_millis(250)),
            ("90s", Duration::from_secs(90)),
            ("2m", Duration::from_secs(120)),
        ] {
            assert_eq!(parse(text).unwrap(), d, "{text}");
            assert_eq!(parse(&format(d)).unwrap(), d, "{text}");
        }
        assert_eq!(format(Duration::from_secs(3600)), "1h");
        assert_eq!(format(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn rejects_bare_numbers_and_junk() {
        assert!(parse("5").is_err());
        assert!(parse("soon").unwrap_err().contains("\"soon\""));
    }
}
