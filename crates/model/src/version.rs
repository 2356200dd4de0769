//! resourceVersion ↔ store revision. An object's resourceVersion is the store's mod_revision of
//! its key; a list's is the revision it was read at. Both are decimal strings on the wire.

/// Why a resourceVersion was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid resource version {0:?}: must be a non-negative integer")]
pub struct BadVersion(pub String);

/// How a read names the state it wants (`resourceVersion` and `resourceVersionMatch`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReadAt {
    /// Unset: the most recent state, read linearizably.
    #[default]
    Latest,
    /// "0": any state this master has (served locally, no read barrier).
    Any,
    /// At least as new as this revision (or exactly, for `resourceVersionMatch=Exact`).
    Revision(i64),
}

/// Parses an object's or a request's resourceVersion.
pub fn parse(value: &str) -> Result<i64, BadVersion> {
    value.parse::<u64>().ok().and_then(|v| i64::try_from(v).ok()).ok_or_else(|| BadVersion(value.to_string()))
}

/// Formats a revision as a resourceVersion.
pub fn format(revision: i64) -> String {
    revision.to_string()
}

/// Interprets a read's `resourceVersion` parameter.
pub fn read_at(param: Option<&str>) -> Result<ReadAt, BadVersion> {
    match param {
        None | Some("") => Ok(ReadAt::Latest),
        Some("0") => Ok(ReadAt::Any),
        Some(v) => parse(v).map(ReadAt::Revision),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_versions_are_decimal_revisions_with_zero_meaning_any() {
        assert_eq!(read_at(None), Ok(ReadAt::Latest));
        assert_eq!(read_at(Some("0")), Ok(ReadAt::Any));
        assert_eq!(read_at(Some("42")), Ok(ReadAt::Revision(42)));
        assert!(read_at(Some("-1")).is_err());
        assert!(read_at(Some("abc")).is_err());
        assert_eq!(format(42), "42");
    }
}
