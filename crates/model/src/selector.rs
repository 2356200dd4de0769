//! Label and field selectors: the one parser the API server, the watch cache and the
//! controllers use.
//!
//! Label selectors follow Kubernetes' syntax: comma-separated requirements, all of which must
//! hold — `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k` (exists), `!k` (does not
//! exist), `k>n`, `k<n` (integers). Field selectors are `f=v`, `f==v`, `f!=v`, with `\` escaping
//! `,`, `=` and `\` in values.

use std::collections::BTreeMap;
use std::collections::BTreeSet;

/// A selector that does not parse; the message says where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unable to parse requirement: {0}")]
pub struct SelectorError(pub String);

/// How a label requirement compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operator {
    In(BTreeSet<String>),
    NotIn(BTreeSet<String>),
    Exists,
    DoesNotExist,
    GreaterThan(i64),
    LessThan(i64),
}

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub op: Operator,
}

impl Requirement {
    /// Whether `labels` satisfy this requirement. `notin` and `!=` hold for a missing label, as
    /// in Kubernetes.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match &self.op {
            Operator::In(values) => value.is_some_and(|v| values.contains(v)),
            Operator::NotIn(values) => value.is_none_or(|v| !values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan(n) => value.and_then(|v| v.parse::<i64>().ok()).is_some_and(|v| v > *n),
            Operator::LessThan(n) => value.and_then(|v| v.parse::<i64>().ok()).is_some_and(|v| v < *n),
        }
    }
}

/// A parsed label selector; empty selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    pub requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Parses the `labelSelector` query parameter.
    pub fn parse(text: &str) -> Result<LabelSelector, SelectorError> {
        let mut requirements = Vec::new();
        for part in split_top_level(text)? {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            requirements.push(parse_requirement(part)?);
        }
        Ok(LabelSelector { requirements })
    }

    /// Whether every requirement holds for `labels`.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether this selects everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

/// Splits on commas outside parentheses.
fn split_top_level(text: &str) -> Result<Vec<&str>, SelectorError> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(SelectorError(format!("unbalanced ')' in {text:?}")));
                }
            }
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(SelectorError(format!("unbalanced '(' in {text:?}")));
    }
    parts.push(&text[start..]);
    Ok(parts)
}

fn parse_requirement(part: &str) -> Result<Requirement, SelectorError> {
    if let Some(key) = part.strip_prefix('!') {
        let key = key.trim();
        check_key(key)?;
        return Ok(Requirement { key: key.to_string(), op: Operator::DoesNotExist });
    }
    for (token, negate) in [("!=", true), ("==", false), ("=", false)] {
        if let Some((key, value)) = part.split_once(token) {
            let (key, value) = (key.trim(), value.trim());
            check_key(key)?;
            check_value(value)?;
            let values = BTreeSet::from([value.to_string()]);
            let op = if negate { Operator::NotIn(values) } else { Operator::In(values) };
            return Ok(Requirement { key: key.to_string(), op });
        }
    }
    for (token, greater) in [(">", true), ("<", false)] {
        if let Some((key, value)) = part.split_once(token) {
            let (key, value) = (key.trim(), value.trim());
            check_key(key)?;
            let n =
                value.parse::<i64>().map_err(|_| SelectorError(format!("{part:?}: {value:?} is not an integer")))?;
            let op = if greater { Operator::GreaterThan(n) } else { Operator::LessThan(n) };
            return Ok(Requirement { key: key.to_string(), op });
        }
    }
    let mut words = part.splitn(2, char::is_whitespace);
    let key = words.next().unwrap_or_default().trim();
    check_key(key)?;
    let Some(rest) = words.next().map(str::trim) else {
        return Ok(Requirement { key: key.to_string(), op: Operator::Exists });
    };
    let (negate, list) = if let Some(list) = rest.strip_prefix("notin") {
        (true, list)
    } else if let Some(list) = rest.strip_prefix("in") {
        (false, list)
    } else {
        return Err(SelectorError(format!("{part:?}: expected one of =, ==, !=, in, notin, >, <")));
    };
    let inner = list
        .trim()
        .strip_prefix('(')
        .and_then(|l| l.strip_suffix(')'))
        .ok_or_else(|| SelectorError(format!("{part:?}: values must be in parentheses")))?;
    let mut values = BTreeSet::new();
    for value in inner.split(',').map(str::trim) {
        check_value(value)?;
        values.insert(value.to_string());
    }
    let op = if negate { Operator::NotIn(values) } else { Operator::In(values) };
    Ok(Requirement { key: key.to_string(), op })
}

/// A label key: an optional DNS subdomain prefix and `/`, then a name of at most 63 characters.
fn check_key(key: &str) -> Result<(), SelectorError> {
    let name = match key.rsplit_once('/') {
        Some((prefix, name)) => {
            let valid_prefix = !prefix.is_empty()
                && prefix.len() <= 253
                && prefix.split('.').all(|l| {
                    !l.is_empty() && l.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                });
            if !valid_prefix {
                return Err(SelectorError(format!("invalid label key prefix in {key:?}")));
            }
            name
        }
        None => key,
    };
    if name.is_empty() || !is_label_value(name) {
        return Err(SelectorError(format!("invalid label key {key:?}")));
    }
    Ok(())
}

fn check_value(value: &str) -> Result<(), SelectorError> {
    if value.is_empty() || is_label_value(value) {
        Ok(())
    } else {
        Err(SelectorError(format!("invalid label value {value:?}")))
    }
}

/// At most 63 characters, alphanumeric at both ends, `-`, `_`, `.` inside.
fn is_label_value(v: &str) -> bool {
    let bytes = v.as_bytes();
    v.len() <= 63
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// One requirement of a field selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    pub field: String,
    pub value: String,
    pub negate: bool,
}

/// A parsed field selector; empty selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    pub requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// Parses the `fieldSelector` query parameter.
    pub fn parse(text: &str) -> Result<FieldSelector, SelectorError> {
        let mut requirements = Vec::new();
        for part in split_unescaped(text, ',') {
            if part.trim().is_empty() {
                continue;
            }
            let (field, value, negate) = if let Some((f, v)) = split_once_unescaped(&part, "!=") {
                (f, v, true)
            } else if let Some((f, v)) = split_once_unescaped(&part, "==") {
                (f, v, false)
            } else if let Some((f, v)) = split_once_unescaped(&part, "=") {
                (f, v, false)
            } else {
                return Err(SelectorError(format!("{part:?}: field selectors support =, == and != only")));
            };
            let field = field.trim().to_string();
            if field.is_empty() {
                return Err(SelectorError(format!("{part:?}: missing field name")));
            }
            requirements.push(FieldRequirement { field, value: unescape(&value), negate });
        }
        Ok(FieldSelector { requirements })
    }

    /// Whether every requirement holds, looking fields up with `get` (a missing field compares
    /// as the empty string, as in Kubernetes).
    pub fn matches(&self, get: impl Fn(&str) -> Option<String>) -> bool {
        self.requirements.iter().all(|r| {
            let actual = get(&r.field).unwrap_or_default();
            (actual == r.value) != r.negate
        })
    }

    /// The value a requirement `field=value` pins, if there is one (for indexed lookups such as
    /// `spec.nodeName=<node>`).
    pub fn exact(&self, field: &str) -> Option<&str> {
        self.requirements.iter().find(|r| r.field == field && !r.negate).map(|r| r.value.as_str())
    }

    /// Whether this selects everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

/// Splits on `sep` where it is not escaped with `\`; escapes are kept for [`unescape`].
fn split_unescaped(text: &str, sep: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut escaped = false;
    for c in text.chars() {
        if !escaped && c == sep {
            parts.push(String::new());
            continue;
        }
        escaped = !escaped && c == '\\';
        if let Some(last) = parts.last_mut() {
            last.push(c);
        }
    }
    parts
}

fn split_once_unescaped(text: &str, token: &str) -> Option<(String, String)> {
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if !escaped && text[i..].starts_with(token) {
            return Some((text[..i].to_string(), text[i + token.len()..].to_string()));
        }
        escaped = !escaped && c == '\\';
    }
    None
}

fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn label_selectors_parse_every_operator_and_match_like_kubernetes() -> Result<(), SelectorError> {
        let l = labels(&[("app", "web"), ("tier", "front"), ("gen", "3"), ("example.com/team", "a")]);
        for (text, expected) in [
            ("", true),
            ("app=web", true),
            ("app==web,tier=front", true),
            ("app!=web", false),
            ("missing!=x", true),
            ("app in (web, api)", true),
            ("tier notin (front)", false),
            ("missing notin (x)", true),
            ("app", true),
            ("!app", false),
            ("!missing", true),
            ("gen>2,gen<4", true),
            ("gen>3", false),
            ("example.com/team=a", true),
        ] {
            assert_eq!(LabelSelector::parse(text)?.matches(&l), expected, "{text}");
        }
        Ok(())
    }

    #[test]
    fn malformed_label_selectors_are_errors() {
        for text in ["app in web", "app in (a", "=x", "app=-bad", "app foo (a)", "gen>x", "Bad_Prefix/x=y"] {
            assert!(LabelSelector::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn field_selectors_match_exact_values_with_escapes() -> Result<(), SelectorError> {
        let sel = FieldSelector::parse("spec.nodeName=n1,metadata.name!=a\\,b")?;
        assert_eq!(sel.exact("spec.nodeName"), Some("n1"));
        assert_eq!(sel.requirements[1].value, "a,b");
        let fields = |name: &'static str| {
            move |f: &str| match f {
                "spec.nodeName" => Some("n1".to_string()),
                "metadata.name" => Some(name.to_string()),
                _ => None,
            }
        };
        assert!(sel.matches(fields("web")));
        assert!(!sel.matches(fields("a,b")));
        assert!(FieldSelector::parse("spec.nodeName>3").is_err());
        assert!(FieldSelector::parse("status.phase=")?.matches(|_| None), "missing compares as empty");
        Ok(())
    }
}
