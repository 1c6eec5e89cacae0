//! Go-style durations (`20s`, `1m30s`, `1.5h`, `250ms`), as Kubernetes and Linkerd write them.
//!
//! The syntax is exactly Go's `time.ParseDuration`, because the API server checks these strings
//! with CEL's `duration()`, which is Go's parser: a value the API server accepts must parse here,
//! and one it rejects must fail here. Three deliberate restrictions, each also in the schema:
//! no sign (`-5s` and `+5s` are refused, because no lameduck setting can be negative); ASCII
//! units only (`us`, not `µs`, which the client-side CEL evaluator does not know); and an upper
//! limit of `2562047h`, the whole hours below Go's range, so overflow is an error, not a panic.
//!
//! kube-core has a `Duration` too, but it parses through `f64` (rounding `0.1s`) and panics on
//! overflow, which a controller must never do on user input.

use std::{borrow::Cow, fmt, str::FromStr, time::Duration};

/// The longest duration accepted: the whole hours below Go's limit of `i64::MAX` nanoseconds.
/// The schema states the same bound, so both sides reject the same values.
pub const MAX_DURATION_TEXT: &str = "2562047h";
const MAX_NANOS: u128 = 2_562_047 * 3_600_000_000_000;

/// The duration syntax as an RE2 pattern, for the CRD schema. Kept beside the parser so the two
/// are reviewed together; a test checks they agree on every sample.
pub const GO_DURATION_PATTERN: &str = "^(0|(([0-9]+([.][0-9]*)?|[.][0-9]+)(ns|us|ms|s|m|h))+)$";

/// Longest string the schema admits; keeps CEL cost estimates small.
pub const GO_DURATION_MAX_LENGTH: u64 = 64;

/// A non-negative duration written in Go's syntax.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GoDuration(Duration);

/// Why a duration string was refused. Messages quote the input so a caller can prefix a field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseDurationError {
    /// The string is empty.
    #[error("empty duration; write one such as 20s, 2m or 1h30m")]
    Empty,
    /// The string starts with a sign.
    #[error("invalid duration {0:?}: a sign is not allowed (durations here are never negative)")]
    Signed(String),
    /// A number is missing where one was expected.
    #[error("invalid duration {0:?}: expected a number such as 20 or 1.5 before each unit")]
    MissingNumber(String),
    /// A number has no unit after it.
    #[error("invalid duration {0:?}: missing unit after a number (use ns, us, ms, s, m or h)")]
    MissingUnit(String),
    /// The unit is not one Go knows.
    #[error("invalid duration {input:?}: unknown unit {unit:?} (use ns, us, ms, s, m or h)")]
    UnknownUnit {
        /// The whole input.
        input: String,
        /// The unit as written.
        unit: String,
    },
    /// The value does not fit in Go's duration range.
    #[error("invalid duration {0:?}: too large (the limit is 2562047h)")]
    Overflow(String),
}

impl GoDuration {
    /// Zero.
    pub const ZERO: Self = Self(Duration::ZERO);

    /// A whole number of seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }

    /// The value as a standard duration.
    pub const fn as_std(self) -> Duration {
        self.0
    }

    /// Whole seconds, rounded down.
    pub const fn as_secs(self) -> u64 {
        self.0.as_secs()
    }

    /// Whole seconds, rounded up: what a `sleep` must last to cover this duration.
    pub fn as_secs_ceil(self) -> u64 {
        self.0.as_secs() + u64::from(self.0.subsec_nanos() > 0)
    }
}

impl From<Duration> for GoDuration {
    fn from(value: Duration) -> Self {
        Self(value)
    }
}

impl From<GoDuration> for Duration {
    fn from(value: GoDuration) -> Self {
        value.0
    }
}

fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        "us" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    })
}

impl FromStr for GoDuration {
    type Err = ParseDurationError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let owned = || input.to_owned();
        if input.is_empty() {
            return Err(ParseDurationError::Empty);
        }
        if input.starts_with(['+', '-']) {
            return Err(ParseDurationError::Signed(owned()));
        }
        if input == "0" {
            return Ok(Self::ZERO);
        }

        let mut rest = input;
        let mut total: u128 = 0;
        while !rest.is_empty() {
            let int_len = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
            let (int_digits, after_int) = rest.split_at(int_len);
            let (frac_digits, after_num) = match after_int.strip_prefix('.') {
                Some(after_dot) => {
                    let len = after_dot.find(|c: char| !c.is_ascii_digit()).unwrap_or(after_dot.len());
                    after_dot.split_at(len)
                }
                None => ("", after_int),
            };
            if int_digits.is_empty() && frac_digits.is_empty() {
                return Err(ParseDurationError::MissingNumber(owned()));
            }
            let unit_len =
                after_num.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after_num.len());
            let (unit, next) = after_num.split_at(unit_len);
            if unit.is_empty() {
                return Err(ParseDurationError::MissingUnit(owned()));
            }
            let scale = unit_nanos(unit)
                .ok_or_else(|| ParseDurationError::UnknownUnit { input: owned(), unit: unit.to_owned() })?;

            // Integer part: checked, since a long digit string must be an error, not a wrap.
            let mut whole: u128 = 0;
            for digit in int_digits.bytes() {
                whole = whole * 10 + u128::from(digit - b'0');
                if whole > MAX_NANOS {
                    return Err(ParseDurationError::Overflow(owned()));
                }
            }
            let mut nanos = whole
                .checked_mul(scale)
                .filter(|n| *n <= MAX_NANOS)
                .ok_or_else(|| ParseDurationError::Overflow(owned()))?;

            // Fraction: digits past 18 cannot change a nanosecond count once truncated.
            let frac_digits = &frac_digits[..frac_digits.len().min(18)];
            if !frac_digits.is_empty() {
                let numerator: u128 = frac_digits.parse().unwrap_or(0);
                let denominator = 10u128.pow(frac_digits.len() as u32);
                nanos += numerator * scale / denominator;
            }

            total += nanos;
            if total > MAX_NANOS {
                return Err(ParseDurationError::Overflow(owned()));
            }
            rest = next;
        }
        let secs = (total / 1_000_000_000) as u64;
        let subsec = (total % 1_000_000_000) as u32;
        Ok(Self(Duration::new(secs, subsec)))
    }
}

/// Formats like Go's `Duration.String()` (`0s`, `250ms`, `1.5s`, `2m0s`, `1h30m0s`), but with
/// `us` for microseconds so the output parses again.
impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        if nanos == 0 {
            return f.write_str("0s");
        }
        if nanos < 1_000_000_000 {
            let (value, divisor, unit) = if nanos < 1_000 {
                (nanos, 1, "ns")
            } else if nanos < 1_000_000 {
                (nanos, 1_000, "us")
            } else {
                (nanos, 1_000_000, "ms")
            };
            return write_fraction(f, value, divisor, unit);
        }
        let total_secs = self.0.as_secs();
        let (hours, minutes) = (total_secs / 3600, (total_secs % 3600) / 60);
        if hours > 0 {
            write!(f, "{hours}h")?;
        }
        if hours > 0 || minutes > 0 {
            write!(f, "{minutes}m")?;
        }
        let secs_nanos = u128::from(total_secs % 60) * 1_000_000_000 + u128::from(self.0.subsec_nanos());
        write_fraction(f, secs_nanos, 1_000_000_000, "s")
    }
}

fn write_fraction(f: &mut fmt::Formatter<'_>, value: u128, divisor: u128, unit: &str) -> fmt::Result {
    let whole = value / divisor;
    let frac = value % divisor;
    if frac == 0 {
        return write!(f, "{whole}{unit}");
    }
    let width = divisor.ilog10() as usize;
    let digits = format!("{frac:0width$}");
    write!(f, "{whole}.{}{unit}", digits.trim_end_matches('0'))
}

impl serde::Serialize for GoDuration {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for GoDuration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Cow::<str>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for GoDuration {
    fn schema_name() -> Cow<'static, str> {
        "GoDuration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        // Checked by CEL rather than `pattern` so the message can say what a duration looks like.
        // `duration(self)` fails on values past Go's range, which the pattern alone would admit.
        let rule = format!(
            "self.matches('{GO_DURATION_PATTERN}') && duration(self) <= duration('{MAX_DURATION_TEXT}')"
        );
        schemars::json_schema!({
            "type": "string",
            "maxLength": GO_DURATION_MAX_LENGTH,
            "x-kubernetes-validations": [{
                "rule": rule,
                "message": format!("must be a duration such as 20s, 2m or 1h30m (units ns, us, ms, s, m, h; no sign; at most {MAX_DURATION_TEXT})"),
            }],
        })
    }
}

/// Serializes a [`Duration`] as a number of seconds (`20`, `1.5`), for reports meant for people
/// and scripts alike. Use with `#[serde(serialize_with = "...")]`.
pub fn serialize_seconds<S: serde::Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(value.as_secs_f64())
}

/// [`serialize_seconds`] for an optional value (`null` when absent).
pub fn serialize_opt_seconds<S: serde::Serializer>(
    value: &Option<Duration>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(d) => serializer.serialize_some(&d.as_secs_f64()),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Duration, ParseDurationError> {
        s.parse::<GoDuration>().map(GoDuration::as_std)
    }

    #[test]
    fn parses_go_syntax() {
        let cases: &[(&str, Duration)] = &[
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("20s", Duration::from_secs(20)),
            ("2m", Duration::from_secs(120)),
            ("1h30m", Duration::from_secs(5400)),
            ("1h30m15s", Duration::from_secs(5415)),
            ("1.5s", Duration::from_millis(1500)),
            (".5s", Duration::from_millis(500)),
            ("5.s", Duration::from_secs(5)),
            ("250ms", Duration::from_millis(250)),
            ("10us", Duration::from_micros(10)),
            ("7ns", Duration::from_nanos(7)),
            ("1.5h", Duration::from_secs(5400)),
            ("0.1s", Duration::from_millis(100)),
            ("3m2s1ms", Duration::from_millis(182_001)),
            // Go truncates sub-nanosecond fractions.
            ("1.0000000009s", Duration::from_secs(1)),
            ("0.3333333333333333333333s", Duration::from_nanos(333_333_333)),
            // The limit, written two ways.
            ("2562047h", Duration::from_secs(2_562_047 * 3600)),
            ("9223369200000000000ns", Duration::from_secs(2_562_047 * 3600)),
        ];
        for (input, want) in cases {
            assert_eq!(parse(input).as_ref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn rejects_bad_input() {
        use ParseDurationError::*;
        type Expect = fn(&ParseDurationError) -> bool;
        let cases: &[(&str, Expect)] = &[
            ("", |e| matches!(e, Empty)),
            ("-5s", |e| matches!(e, Signed(_))),
            ("+5s", |e| matches!(e, Signed(_))),
            ("-0", |e| matches!(e, Signed(_))),
            ("20", |e| matches!(e, MissingUnit(_))),
            ("1h30", |e| matches!(e, MissingUnit(_))),
            ("s", |e| matches!(e, MissingNumber(_))),
            (".s", |e| matches!(e, MissingNumber(_))),
            ("1..5s", |e| matches!(e, MissingUnit(_))),
            ("20 s", |e| matches!(e, UnknownUnit { .. })),
            (" 20s", |e| matches!(e, MissingNumber(_))),
            ("20s ", |e| matches!(e, UnknownUnit { .. })),
            ("20d", |e| matches!(e, UnknownUnit { unit, .. } if unit == "d")),
            ("20sec", |e| matches!(e, UnknownUnit { unit, .. } if unit == "sec")),
            ("1e3s", |e| matches!(e, UnknownUnit { .. })),
            ("NaNs", |e| matches!(e, MissingNumber(_))),
            ("infh", |e| matches!(e, MissingNumber(_))),
            ("garbage", |e| matches!(e, MissingNumber(_))),
            ("9223372036854775808ns", |e| matches!(e, Overflow(_))),
            ("2562047h0m0.000000001s", |e| matches!(e, Overflow(_))),
            ("10\u{b5}s", |e| matches!(e, UnknownUnit { .. })),
            ("2562048h", |e| matches!(e, Overflow(_))),
            ("2562047h48m", |e| matches!(e, Overflow(_))),
            ("99999999999999999999999999999999999999999s", |e| matches!(e, Overflow(_))),
        ];
        for (input, check) in cases {
            let err = parse(input).expect_err(input);
            assert!(check(&err), "{input:?} gave {err:?}");
            assert!(err.to_string().contains("duration"), "{err}");
        }
    }

    #[test]
    fn error_messages_quote_the_input_and_the_unit() {
        let err = parse("20d").unwrap_err().to_string();
        assert!(err.contains("\"20d\"") && err.contains("\"d\""), "{err}");
    }

    #[test]
    fn displays_like_go() {
        let cases: &[(Duration, &str)] = &[
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(7), "7ns"),
            (Duration::from_nanos(1500), "1.5us"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_micros(1500), "1.5ms"),
            (Duration::from_secs(20), "20s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_secs(120), "2m0s"),
            (Duration::from_secs(5400), "1h30m0s"),
            (Duration::from_millis(3_723_500), "1h2m3.5s"),
        ];
        for (value, want) in cases {
            assert_eq!(GoDuration::from(*value).to_string(), *want);
        }
    }

    #[test]
    fn display_round_trips() {
        for input in ["0s", "1ns", "999ns", "1.5us", "20s", "2m", "1h30m", "1.000000001s", "2562047h"] {
            let parsed: GoDuration = input.parse().unwrap();
            let again: GoDuration = parsed.to_string().parse().unwrap();
            assert_eq!(parsed, again, "{input}");
        }
    }

    #[test]
    fn serde_uses_strings_and_reports_bad_ones() {
        let d: GoDuration = serde_json::from_str("\"1h30m\"").unwrap();
        assert_eq!(d.as_secs(), 5400);
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"1h30m0s\"");
        let err = serde_json::from_str::<GoDuration>("\"-1s\"").unwrap_err();
        assert!(err.to_string().contains("sign"), "{err}");
        assert!(serde_json::from_str::<GoDuration>("20").is_err());
    }

    #[test]
    fn seconds_round_up_for_sleeps() {
        assert_eq!("1.2s".parse::<GoDuration>().unwrap().as_secs_ceil(), 2);
        assert_eq!("2s".parse::<GoDuration>().unwrap().as_secs_ceil(), 2);
        assert_eq!(GoDuration::ZERO.as_secs_ceil(), 0);
    }
}
