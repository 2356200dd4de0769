//! Kubernetes resource quantities (`100m`, `1.5Gi`, `2e3`): the one parser of them the workspace
//! has, for validation, defaulting, the scheduler's resource counts and the kubelet's limits.

const NANO_PER_MILLI: i128 = 1_000_000;
const NANO_PER_UNIT: i128 = 1_000_000_000;

/// A quantity in nano-units (10⁻⁹), rounded away from zero; `None`
/// when it does not follow `^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$` with a valid
/// suffix. Huge values saturate.
pub fn parse(text: &str) -> Option<i128> {
    let (negative, rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let split = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(split);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if fraction.contains('.') || (whole.is_empty() && fraction.is_empty()) {
        return None;
    }
    let (binary, exponent): (u32, i32) = match suffix {
        "" => (0, 0),
        "Ki" => (10, 0),
        "Mi" => (20, 0),
        "Gi" => (30, 0),
        "Ti" => (40, 0),
        "Pi" => (50, 0),
        "Ei" => (60, 0),
        "n" => (0, -9),
        "u" => (0, -6),
        "m" => (0, -3),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        other => {
            let exp = other.strip_prefix(['e', 'E'])?;
            let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            (0, exp.parse().ok()?)
        }
    };
    let mut mantissa: i128 = 0;
    for b in whole.bytes().chain(fraction.bytes()) {
        mantissa = mantissa.checked_mul(10)?.checked_add(i128::from(b - b'0'))?;
    }
    mantissa = mantissa.saturating_mul(1i128 << binary);
    let scale = i64::from(exponent) + 9 - i64::try_from(fraction.len()).ok()?;
    let value = if scale >= 0 {
        let factor = u32::try_from(scale).ok().and_then(|s| 10i128.checked_pow(s)).unwrap_or(i128::MAX);
        mantissa.saturating_mul(factor)
    } else {
        match u32::try_from(-scale).ok().and_then(|s| 10i128.checked_pow(s)) {
            Some(divisor) => mantissa / divisor + i128::from(mantissa % divisor != 0),
            None => i128::from(mantissa != 0),
        }
    };
    Some(if negative { -value } else { value })
}

/// A quantity in thousandths (millicores for cpu), rounded up away from zero like Kubernetes'
/// `MilliValue()`; `None` when it does not parse. Values beyond `i64` saturate.
pub fn milli_value(text: &str) -> Option<i64> {
    parse(text).map(|nano| scaled(nano, NANO_PER_MILLI))
}

/// A quantity in whole units (bytes for memory), rounded up away from zero like Kubernetes'
/// `Value()`; `None` when it does not parse. Values beyond `i64` saturate.
pub fn value(text: &str) -> Option<i64> {
    parse(text).map(|nano| scaled(nano, NANO_PER_UNIT))
}

fn scaled(nano: i128, per: i128) -> i64 {
    let rounded = nano / per + (nano % per).signum();
    i64::try_from(rounded).unwrap_or(if rounded < 0 { i64::MIN } else { i64::MAX })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_like_kubernetes() {
        assert_eq!(parse("100m"), Some(100_000_000));
        assert_eq!(parse("0.1"), Some(100_000_000));
        assert_eq!(parse("1Ki"), Some(1024 * 1_000_000_000));
        assert_eq!(parse("1e3"), Some(1000 * 1_000_000_000));
        assert_eq!(parse("1E"), Some(1_000_000_000_000_000_000 * 1_000_000_000));
        assert_eq!(parse("-2"), Some(-2_000_000_000));
        assert_eq!(parse("1n"), Some(1));
        assert_eq!(parse("0.1n"), Some(1), "rounded up");
        for bad in ["", ".", "1.2.3", "abc", "1Xi", "1e", "m"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn milli_values_and_values_round_up_like_kubernetes() {
        assert_eq!(milli_value("100m"), Some(100));
        assert_eq!(milli_value("1"), Some(1000));
        assert_eq!(milli_value("0.3"), Some(300), "exact, not 0.3 × 1000 in floating point");
        assert_eq!(milli_value("1u"), Some(1), "a sliver of a core rounds up to 1m");
        assert_eq!(milli_value("-1u"), Some(-1), "away from zero");
        assert_eq!(value("128Mi"), Some(128 * 1024 * 1024));
        assert_eq!(value("1.5Gi"), Some(3 << 29));
        assert_eq!(value("1e9"), Some(1_000_000_000));
        assert_eq!(value("1500m"), Some(2));
        assert_eq!(value("0"), Some(0));
        assert_eq!(value("16E"), Some(i64::MAX), "saturates");
        assert_eq!(value("-16E"), Some(i64::MIN), "saturates");
        assert_eq!(value("nonsense"), None);
    }
}
