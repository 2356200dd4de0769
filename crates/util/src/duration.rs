//! Durations written the way Go's `time.ParseDuration` reads them, which is how Kubernetes and
//! etcd flags take them: `500ms`, `10s`, `1m30s`, `1.5h`, `2h45m`.

use std::fmt;
use std::time::Duration;

/// Nanoseconds in each unit.
const UNITS: [(&str, u128); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000), // U+00B5 MICRO SIGN
    ("μs", 1_000), // U+03BC GREEK SMALL LETTER MU
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// Fraction digits past this many cannot change the result by a nanosecond (an hour is
/// 3.6·10¹² ns) and would overflow the arithmetic.
const MAX_FRACTION_DIGITS: usize = 24;

/// Why a text is not a duration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// The text is empty (or blank).
    Empty,
    /// The text starts with `-`: no duration Trireme takes can be negative.
    Negative,
    /// A number is missing where one must be, or is malformed (`s`, `.s`, `1..5s`).
    BadNumber,
    /// A number has no unit; only a bare `0` may go without one.
    MissingUnit,
    /// A unit other than ns, us (µs), ms, s, m and h.
    UnknownUnit(String),
    /// Longer than `u64::MAX` nanoseconds, about 584 years.
    Overflow,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Empty => f.write_str("a duration cannot be empty"),
            ParseError::Negative => f.write_str("a duration cannot be negative"),
            ParseError::BadNumber => f.write_str("expected a number such as 10 or 1.5 before each unit"),
            ParseError::MissingUnit => f.write_str("a number needs a unit: ns, us, ms, s, m or h"),
            ParseError::UnknownUnit(unit) => write!(f, "unknown unit {unit:?}: use ns, us, ms, s, m or h"),
            ParseError::Overflow => f.write_str("the duration is too long"),
        }
    }
}

impl std::error::Error for ParseError {}

/// Parses a Go-style duration: one or more numbers, each with a unit (`ns`, `us` or `µs`, `ms`,
/// `s`, `m`, `h`), such as `500ms`, `1m30s` or `1.5h`; a leading `+` and surrounding blanks
/// are allowed, and `0` may go without a unit. Fractions below a nanosecond are dropped, as Go
/// does. Negative durations are an error, as is anything over `u64::MAX` nanoseconds.
pub fn parse(text: &str) -> Result<Duration, ParseError> {
    let text = text.trim();
    let rest = match text.as_bytes().first() {
        None => return Err(ParseError::Empty),
        Some(b'-') => return Err(ParseError::Negative),
        Some(b'+') => &text[1..],
        Some(_) => text,
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(ParseError::BadNumber);
    }
    let mut rest = rest;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let (nanos, after) = component(rest)?;
        total = total.checked_add(nanos).ok_or(ParseError::Overflow)?;
        rest = after;
    }
    let nanos = u64::try_from(total).map_err(|_| ParseError::Overflow)?;
    Ok(Duration::from_nanos(nanos))
}

/// One `number unit` at the start of `text`: its nanoseconds and what follows it.
fn component(text: &str) -> Result<(u128, &str), ParseError> {
    let number_end = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, rest) = text.split_at(number_end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if fraction.contains('.') || (whole.is_empty() && fraction.is_empty()) {
        return Err(ParseError::BadNumber);
    }
    let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
    let (unit, rest) = rest.split_at(unit_end);
    if unit.is_empty() {
        return Err(ParseError::MissingUnit);
    }
    let Some(&(_, per_unit)) = UNITS.iter().find(|(name, _)| *name == unit) else {
        return Err(ParseError::UnknownUnit(unit.to_string()));
    };
    let mut nanos: u128 = 0;
    for digit in whole.bytes() {
        nanos =
            nanos.checked_mul(10).and_then(|n| n.checked_add(u128::from(digit - b'0'))).ok_or(ParseError::Overflow)?;
    }
    nanos = nanos.checked_mul(per_unit).ok_or(ParseError::Overflow)?;
    let (mut numerator, mut scale): (u128, u128) = (0, 1);
    for digit in fraction.bytes().take(MAX_FRACTION_DIGITS) {
        numerator = numerator * 10 + u128::from(digit - b'0');
        scale *= 10;
    }
    nanos = nanos.checked_add(numerator * per_unit / scale).ok_or(ParseError::Overflow)?;
    Ok((nanos, rest))
}

/// The shortest text [`parse`] reads back as exactly `d`: one number and the longest unit that
/// divides `d` (`4h`, `90m`, `95s`, `1500ms`, `0s`).
pub fn format(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_string();
    }
    let units =
        [("h", 3_600_000_000_000), ("m", 60_000_000_000), ("s", 1_000_000_000), ("ms", 1_000_000), ("us", 1_000)];
    for (name, per_unit) in units {
        if nanos.is_multiple_of(per_unit) {
            return format!("{}{name}", nanos / per_unit);
        }
    }
    format!("{nanos}ns")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_kubernetes_and_etcd_flags_take_them() {
        let cases = [
            ("500ms", Duration::from_millis(500)),
            ("10s", Duration::from_secs(10)),
            ("1m30s", Duration::from_secs(90)),
            ("1.5h", Duration::from_secs(5400)),
            ("2h45m", Duration::from_secs(2 * 3600 + 45 * 60)),
            ("0", Duration::ZERO),
            ("+0", Duration::ZERO),
            ("0s", Duration::ZERO),
            (" 30m ", Duration::from_secs(1800)),
            ("1ns", Duration::from_nanos(1)),
            ("3us", Duration::from_micros(3)),
            ("3µs", Duration::from_micros(3)),
            ("3μs", Duration::from_micros(3)),
            (".5s", Duration::from_millis(500)),
            ("1.s", Duration::from_secs(1)),
            ("1h1m1s1ms1us1ns", Duration::from_nanos(3_661_001_001_001)),
            ("0.3s", Duration::from_millis(300)),
            ("1.0000000009s", Duration::from_nanos(1_000_000_000)),
            ("0.000000001999h", Duration::from_nanos(7196)),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text), Ok(want), "{text:?}");
        }
    }

    #[test]
    fn anything_else_is_an_error_that_says_what_is_wrong() {
        let cases = [
            ("", ParseError::Empty),
            ("  ", ParseError::Empty),
            ("-1s", ParseError::Negative),
            ("+", ParseError::BadNumber),
            ("s", ParseError::BadNumber),
            (".s", ParseError::BadNumber),
            ("1..5s", ParseError::BadNumber),
            ("1.5.2s", ParseError::BadNumber),
            ("10", ParseError::MissingUnit),
            ("1m30", ParseError::MissingUnit),
            ("1d", ParseError::UnknownUnit("d".into())),
            ("5 minutes", ParseError::UnknownUnit(" minutes".into())),
            ("10S", ParseError::UnknownUnit("S".into())),
            ("1h 30m", ParseError::UnknownUnit("h ".into())),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text), Err(want), "{text:?}");
        }
        assert!(parse("1d").expect_err("days").to_string().contains("\"d\""));
    }

    #[test]
    fn durations_past_u64_nanoseconds_overflow_instead_of_wrapping() {
        assert_eq!(parse("5124095h"), Ok(Duration::from_secs(5_124_095 * 3600)));
        assert_eq!(parse("18446744073709551615ns"), Ok(Duration::from_nanos(u64::MAX)));
        assert_eq!(parse("18446744073709551616ns"), Err(ParseError::Overflow));
        assert_eq!(parse("5124096h"), Err(ParseError::Overflow));
        assert_eq!(parse("5124095h5124095h"), Err(ParseError::Overflow));
        assert_eq!(parse("99999999999999999999999999999999999999999h"), Err(ParseError::Overflow));
        assert_eq!(parse(&format!("1.{}s", "9".repeat(100))), Ok(Duration::from_nanos(1_999_999_999)));
    }

    #[test]
    fn formatting_uses_the_longest_exact_unit_and_reads_back() {
        let cases = [
            (Duration::from_secs(600), "10m"),
            (Duration::from_secs(14_400), "4h"),
            (Duration::from_secs(95), "95s"),
            (Duration::from_secs(5400), "90m"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_micros(7), "7us"),
            (Duration::from_nanos(1_000_000_001), "1000000001ns"),
            (Duration::ZERO, "0s"),
        ];
        for (d, want) in cases {
            assert_eq!(format(d), want);
            assert_eq!(parse(want), Ok(d), "{want:?} reads back");
        }
    }
}
