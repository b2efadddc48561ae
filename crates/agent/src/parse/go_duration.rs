//! Go's `time.ParseDuration` syntax, which the LBNodeAgent `garpConfig` strings use
//! (`"100ms"`, `"1.5s"`, `"1m30s"`).

use std::time::Duration;

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("invalid duration {0:?}")]
    Invalid(String),
    #[error("missing unit in duration {0:?}")]
    MissingUnit(String),
    #[error("unknown unit {unit:?} in duration {input:?}")]
    UnknownUnit { unit: String, input: String },
    #[error("duration {0:?} is too long")]
    Overflow(String),
    #[error("duration {0:?} is negative")]
    Negative(String),
}

/// Go's limit: a duration is an `int64` count of nanoseconds.
const MAX_NANOS: u128 = i64::MAX as u128;

/// Parses a Go duration: an optional sign, then one or more decimal numbers (with an
/// optional fraction) each followed by a unit (`ns`, `us`, `µs`, `μs`, `ms`, `s`, `m`,
/// `h`); `"0"` alone needs no unit.
///
/// Choice: a negative duration is refused (Go accepts it and then sleeps for zero), so
/// a sign typo is reported instead of silently meaning "no delay".
pub fn parse_go_duration(input: &str) -> Result<Duration, DurationError> {
    let invalid = || DurationError::Invalid(input.to_owned());
    let (negative, mut rest) = match input.as_bytes().first() {
        Some(b'-') => (true, &input[1..]),
        Some(b'+') => (false, &input[1..]),
        _ => (false, input),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        // The number: integer digits, then an optional fraction.
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_digits, after_int) = rest.split_at(int_len);
        let mut integer: u128 = 0;
        for b in int_digits.bytes() {
            integer = integer * 10 + u128::from(b - b'0');
            if integer > MAX_NANOS {
                return Err(DurationError::Overflow(input.to_owned()));
            }
        }
        let (mut fraction, mut scale, mut after_num) = (0u128, 1u128, after_int);
        let mut has_fraction_digits = false;
        if let Some(frac) = after_int.strip_prefix('.') {
            let frac_len = frac.bytes().take_while(u8::is_ascii_digit).count();
            let (frac_digits, after_frac) = frac.split_at(frac_len);
            has_fraction_digits = frac_len > 0;
            // Like Go, digits beyond what can matter are ignored rather than overflowing.
            for b in frac_digits.bytes().take(18) {
                fraction = fraction * 10 + u128::from(b - b'0');
                scale *= 10;
            }
            after_num = after_frac;
        }
        if int_len == 0 && !has_fraction_digits {
            return Err(invalid());
        }
        // The unit: everything up to the next digit or '.'.
        let unit_len = after_num
            .char_indices()
            .find(|(_, c)| *c == '.' || c.is_ascii_digit())
            .map_or(after_num.len(), |(i, _)| i);
        let (unit, after_unit) = after_num.split_at(unit_len);
        if unit.is_empty() {
            return Err(DurationError::MissingUnit(input.to_owned()));
        }
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => {
                return Err(DurationError::UnknownUnit {
                    unit: unit.to_owned(),
                    input: input.to_owned(),
                });
            }
        };
        total = integer
            .checked_mul(unit_nanos)
            .and_then(|v| v.checked_add(fraction * unit_nanos / scale))
            .and_then(|v| v.checked_add(total))
            .filter(|v| *v <= MAX_NANOS)
            .ok_or_else(|| DurationError::Overflow(input.to_owned()))?;
        rest = after_unit;
    }
    if negative && total != 0 {
        return Err(DurationError::Negative(input.to_owned()));
    }
    let nanos = u64::try_from(total).map_err(|_| DurationError::Overflow(input.to_owned()))?;
    Ok(Duration::from_nanos(nanos))
}

/// Formats a duration the way Go's `Duration.String` does for the values this crate
/// reports (`100ms`, `1.5s`, `1m30s`), for warning texts.
pub fn format_go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", trim_fraction(nanos, 1_000));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", trim_fraction(nanos, 1_000_000));
    }
    let secs = nanos / 1_000_000_000;
    let sub = nanos % 1_000_000_000;
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let seconds = trim_fraction(s * 1_000_000_000 + sub, 1_000_000_000);
    match (h, m) {
        (0, 0) => format!("{seconds}s"),
        (0, m) => format!("{m}m{seconds}s"),
        (h, m) => format!("{h}h{m}m{seconds}s"),
    }
}

/// `value / unit` as a decimal without trailing zeros.
fn trim_fraction(value: u128, unit: u128) -> String {
    let (whole, frac) = (value / unit, value % unit);
    if frac == 0 {
        return whole.to_string();
    }
    let width = unit.ilog10() as usize;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn go_examples() {
        for (s, want) in [
            ("0", Duration::ZERO),
            ("+0", Duration::ZERO),
            ("-0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("100ms", ms(100)),
            ("500ms", ms(500)),
            ("1s", ms(1000)),
            ("1m30s", ms(90_000)),
            ("1h", ms(3_600_000)),
            ("1.5s", ms(1500)),
            (".5s", ms(500)),
            ("1.s", ms(1000)),
            ("1.5h2m", ms(5_520_000)),
            ("2us", Duration::from_micros(2)),
            ("2µs", Duration::from_micros(2)),
            ("2μs", Duration::from_micros(2)),
            ("7ns", Duration::from_nanos(7)),
            ("1s500ms", ms(1500)),
            ("0.000000001s", Duration::from_nanos(1)),
            (
                "9223372036854775807ns",
                Duration::from_nanos(i64::MAX as u64),
            ),
        ] {
            assert_eq!(parse_go_duration(s), Ok(want), "{s:?}");
        }
    }

    #[test]
    fn rejects_what_go_rejects() {
        for s in [
            "", "s", "1", "10", ".s", ".", "-", "1x", "1 s", " 1s", "1s ", "1e3s", "ms",
        ] {
            assert!(parse_go_duration(s).is_err(), "{s:?}");
        }
        assert_eq!(
            parse_go_duration("10"),
            Err(DurationError::MissingUnit("10".into()))
        );
        assert_eq!(
            parse_go_duration("3d"),
            Err(DurationError::UnknownUnit {
                unit: "d".into(),
                input: "3d".into()
            })
        );
        assert_eq!(
            parse_go_duration("9223372036854775808ns"),
            Err(DurationError::Overflow("9223372036854775808ns".into()))
        );
        assert_eq!(
            parse_go_duration("3000000h"),
            Err(DurationError::Overflow("3000000h".into()))
        );
        assert_eq!(
            parse_go_duration("-1s"),
            Err(DurationError::Negative("-1s".into()))
        );
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format_go_duration(Duration::ZERO), "0s");
        assert_eq!(format_go_duration(ms(100)), "100ms");
        assert_eq!(format_go_duration(ms(1500)), "1.5s");
        assert_eq!(format_go_duration(ms(90_000)), "1m30s");
        assert_eq!(format_go_duration(ms(3_600_000)), "1h0m0s");
        assert_eq!(format_go_duration(Duration::from_nanos(1500)), "1.5µs");
        assert_eq!(format_go_duration(Duration::from_nanos(12)), "12ns");
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(nanos in 0u64..=(i64::MAX as u64)) {
            let d = Duration::from_nanos(nanos);
            prop_assert_eq!(parse_go_duration(&format_go_duration(d)), Ok(d));
        }
    }
}
