//! A duration flag's value, with its unit: `--fault slow-link=5ms` delays the ring's messages,
//! and `network --latency`, `--step-compute` and `--gamma` take the same words. It lives in
//! `parallel/` so both can take it: the network view already builds on `parallel/`, and
//! `parallel/` imports nothing from the network view.

use crate::error::{Error, Result};

/// A duration with its unit: `350ms`, `5us` or `5µs`, `0.2s`, `100ns`, `1e-3s` (the unit is
/// the letters at the end), in seconds; finite and not negative. Used by `--fault slow-link`
/// and `network --latency`/`--step-compute` alike.
pub fn parse_duration(s: &str) -> Result<f64> {
    let bad = |why: &str| {
        Error::Config(format!(
            "{s}: {why}; expected a duration such as 350ms, 5us (or 5µs), 100ns or 0.2s"
        ))
    };
    let num = s.trim_end_matches(|c: char| c.is_alphabetic());
    let unit = &s[num.len()..];
    if unit.is_empty() {
        return Err(bad("the duration needs a unit"));
    }
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| bad("not a number before the unit"))?;
    let secs = match unit {
        "ns" => v * 1e-9,
        "us" | "µs" => v * 1e-6,
        "ms" => v * 1e-3,
        "s" => v,
        _ => {
            return Err(bad(&format!(
                "{unit:?} is not a unit: use ns, us, µs, ms or s"
            )))
        }
    };
    if !(secs.is_finite() && secs >= 0.0) {
        return Err(bad("it must be finite and not negative"));
    }
    Ok(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_the_unit_at_the_end() {
        let ok = [
            ("350ms", 0.35),
            ("5us", 5e-6),
            ("5µs", 5e-6),
            ("100ns", 1e-7),
            ("0.2s", 0.2),
            ("1e-3s", 1e-3),
            ("0s", 0.0),
        ];
        for (s, want) in ok {
            let got = parse_duration(s).unwrap();
            assert!((got - want).abs() < 1e-15, "{s}: {got}");
        }
        for s in [
            "5",
            "5e",
            "ms",
            "-1ms",
            "1e400s",
            "NaNs",
            "5 parsecs",
            "5min",
        ] {
            assert!(parse_duration(s).is_err(), "{s} was accepted");
        }
    }
}
