//! The small value languages inside a spec: memory quantities, CPU counts and
//! durations. Each parser returns a reason a user can act on when it fails.

use std::time::Duration;

/// Docker refuses a smaller memory limit ("Minimum memory limit allowed is 6MB").
pub(crate) const MIN_MEMORY: u64 = 6 << 20;
/// Docker's API takes the limit as a signed 64-bit count of bytes; a larger
/// value would reach it negative, which means "no limit".
pub(crate) const MAX_MEMORY: u64 = i64::MAX as u64;
/// Docker turns a CPU limit into a CFS quota per 100 ms period, and the
/// kernel refuses quotas under 1 ms: 0.005 CPU fails only when the container
/// starts (`cpu.cfs_quota_us: invalid argument`).
pub(crate) const MIN_MILLICPUS: u32 = 10;
/// Far beyond any one host, and far below where the conversion to Docker's
/// nanocpus could overflow; a larger number is a typo.
pub(crate) const MAX_MILLICPUS: u32 = 1024 * 1000;

/// `512Mi`, `1Gi`, `500M`, `1.5G`, `1000` → bytes. Kubernetes spellings:
/// binary suffixes `Ki`..`Ti`, decimal `k`/`K`, `M`, `G`, `T`.
pub(crate) fn memory_bytes(text: &str) -> Result<u64, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let multiplier: u128 = match suffix {
        "" => 1,
        "k" | "K" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "m" => {
            return Err(
                "`m` means thousandths; for megabytes write `M`, or `Mi` for mebibytes".into(),
            );
        }
        s if s.ends_with('B') || s.ends_with('b') => {
            let unit = s.trim_end_matches(['B', 'b']).replace('i', "");
            return Err(format!(
                "drop the `B`: write `{number}{unit}i` (binary) or `{number}{unit}` (decimal)"
            ));
        }
        s if s.trim_start().len() != s.len() => {
            return Err("remove the space between number and unit".into());
        }
        s => {
            return Err(format!(
                "unknown unit `{}`; use one of Ki, Mi, Gi, Ti, k, M, G, T",
                super::diag::short(s)
            ));
        }
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || fraction.contains('.') || (number.contains('.') && fraction.is_empty()) {
        return Err("expected a number followed by an optional unit, such as `512Mi`".into());
    }
    // 30 digits already exceed u64 bytes; refusing early keeps the arithmetic in u128.
    if whole.len() + fraction.len() > 30 {
        return Err("too large".into());
    }
    let digits: u128 = format!("{whole}{fraction}")
        .parse()
        .map_err(|_| "not a number".to_owned())?;
    let scale = 10u128.pow(u32::try_from(fraction.len()).unwrap_or(u32::MAX));
    let scaled = digits.checked_mul(multiplier).ok_or("too large")?;
    if scaled % scale != 0 {
        return Err("that is not a whole number of bytes".into());
    }
    let bytes = u64::try_from(scaled / scale).map_err(|_| "too large".to_owned())?;
    if bytes == 0 {
        return Err("a memory limit must be more than 0".into());
    }
    Ok(bytes)
}

/// `0.5` → 500; `2` → 2000. A CPU count must be a whole number of millicpus.
pub(crate) fn millicpus_from_number(cpus: f64) -> Result<u32, String> {
    if !cpus.is_finite() || cpus <= 0.0 {
        return Err("a CPU limit must be more than 0".into());
    }
    let milli = cpus * 1000.0;
    let rounded = milli.round();
    if (milli - rounded).abs() > 1e-6 {
        return Err(
            "use at most three decimals (a thousandth of a CPU is the smallest unit)".into(),
        );
    }
    if rounded > f64::from(u32::MAX) {
        return Err("too large".into());
    }
    // In range and whole, so the conversion is exact.
    Ok(rounded as u32)
}

/// `500m` → 500.
pub(crate) fn millicpus_from_text(text: &str) -> Result<u32, String> {
    let Some(digits) = text.strip_suffix('m') else {
        return Err(match text.parse::<f64>() {
            Ok(_) => format!(
                "write a number without quotes: `cpus: {}`",
                super::diag::short(text)
            ),
            Err(_) => {
                "expected a number of CPUs such as `0.5`, or millicpus such as `\"500m\"`".into()
            }
        });
    };
    match digits.parse::<u32>() {
        Ok(0) => Err("a CPU limit must be more than 0".into()),
        Ok(n) if !digits.starts_with('+') => Ok(n),
        _ => Err("expected whole millicpus before `m`, such as `\"500m\"`".into()),
    }
}

/// `60s`, `5m`, `1h 30m` → a duration greater than zero.
pub(crate) fn duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Err("must be longer than 0".into()),
        Ok(d) => Ok(d),
        Err(humantime::DurationError::UnknownUnit { unit, value, .. }) if unit.is_empty() => {
            Err(format!("a number needs a unit, e.g. `{value}s`"))
        }
        Err(humantime::DurationError::UnknownUnit { unit, .. }) => Err(format!(
            "unknown unit `{}`; use ms, s, m or h, e.g. `60s`",
            super::diag::short(&unit)
        )),
        Err(humantime::DurationError::NumberExpected(_)) if !text.trim().is_empty() => {
            Err("expected a number and a unit, e.g. `60s` or `5m`".into())
        }
        Err(e) => Err(format!(
            "{e}; write a number and a unit, e.g. `60s` or `5m`"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_quantities() {
        assert_eq!(memory_bytes("512Mi"), Ok(512 << 20));
        assert_eq!(memory_bytes("1Gi"), Ok(1 << 30));
        assert_eq!(memory_bytes("500M"), Ok(500_000_000));
        assert_eq!(memory_bytes("1000"), Ok(1000));
        assert_eq!(memory_bytes("1.5Gi"), Ok(3 << 29));
        assert_eq!(memory_bytes("2k"), Ok(2000));
        for bad in [
            "",
            "Mi",
            "1.5",
            "0",
            "0Mi",
            "1..5Mi",
            "1.Mi",
            "-1Mi",
            "512MB",
            "512 Mi",
            "512m",
            "1Xi",
            "99999999999999999999999Ti",
        ] {
            assert!(memory_bytes(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(memory_bytes("512MB").unwrap_err().contains("512Mi"));
    }

    #[test]
    fn cpu_counts() {
        assert_eq!(millicpus_from_number(0.5), Ok(500));
        assert_eq!(millicpus_from_number(2.0), Ok(2000));
        assert_eq!(millicpus_from_number(0.1), Ok(100));
        assert!(millicpus_from_number(0.0).is_err());
        assert!(millicpus_from_number(-1.0).is_err());
        assert!(millicpus_from_number(0.0005).is_err());
        assert_eq!(millicpus_from_text("500m"), Ok(500));
        assert!(millicpus_from_text("0m").is_err());
        assert!(
            millicpus_from_text("0.5")
                .unwrap_err()
                .contains("without quotes")
        );
        assert!(millicpus_from_text("half").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(duration("0s").is_err());
        assert!(duration("60").is_err());
        assert!(duration("soon").is_err());
        assert!(
            duration("5 fortnights")
                .unwrap_err()
                .contains("unknown unit")
        );
    }
}
