//! Checks of etcd watch streams. Pure: event sequences in, problems out.
//!
//! A watcher that resumes on another master from its last revision + 1 must see exactly what
//! one uninterrupted watch would: [`check_order`] checks a watcher's own sequence (revisions
//! never go back, no event twice), [`check_slice`] compares it with the canonical history
//! (one fresh watch from the first revision once the faults are over): the watcher's events
//! must be a contiguous slice of it, starting at the watcher's first revision — no gap, no
//! duplicate, same order, same values.

use serde::Deserialize;
use serde::Serialize;

/// One event as a watcher saw it: its revision and a digest of the rest (key, kind, value),
/// 16 bytes however long the values, so hours of events from several watchers fit in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WatchEvent {
    /// The event's `kv.mod_revision` (for a delete: the deletion's revision).
    pub revision: i64,
    /// FNV-1a of the key, whether it is a delete, and the value.
    pub digest: u64,
}

impl WatchEvent {
    /// The event at `revision` on `key`: a delete, or a put of `value`.
    pub fn new(revision: i64, key: &[u8], delete: bool, value: &[u8]) -> WatchEvent {
        let mut digest = 0xcbf2_9ce4_8422_2325u64;
        for byte in key.iter().chain(&[0, u8::from(delete), 0]).chain(value) {
            digest = (digest ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        WatchEvent { revision, digest }
    }
}

/// Problems with the order within one watcher's sequence (empty: none).
pub fn check_order(events: &[WatchEvent]) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, pair) in events.windows(2).enumerate() {
        let (a, b) = (&pair[0], &pair[1]);
        if b.revision < a.revision {
            problems.push(format!(
                "event {} (revision {}) after revision {}: revisions went back",
                i + 1,
                b.revision,
                a.revision
            ));
        } else if b == a {
            problems.push(format!("event {} (revision {}, {:016x}) delivered twice", i + 1, b.revision, b.digest));
        }
    }
    problems
}

/// Whether `events`, from a watcher that started at `start_revision`, is the contiguous slice
/// of `canonical` that begins at that revision. `Err` describes the first difference.
pub fn check_slice(canonical: &[WatchEvent], start_revision: i64, events: &[WatchEvent]) -> Result<(), String> {
    let from = canonical.partition_point(|e| e.revision < start_revision);
    for (i, event) in events.iter().enumerate() {
        let Some(expected) = canonical.get(from + i) else {
            return Err(format!(
                "event {i} (revision {}) is beyond the canonical history, which ends at revision {}",
                event.revision,
                canonical.last().map_or(0, |e| e.revision)
            ));
        };
        if event != expected {
            let what = if event.revision > expected.revision {
                "gap: missed"
            } else if canonical[..from + i].contains(event) {
                "duplicate: got again an event before"
            } else {
                "differs from"
            };
            return Err(format!(
                "event {i}: got revision {} ({:016x}); {what} canonical revision {} ({:016x})",
                event.revision, event.digest, expected.revision, expected.digest
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(revision: i64, key: &str, value: &str) -> WatchEvent {
        WatchEvent::new(revision, key.as_bytes(), false, value.as_bytes())
    }

    fn canonical() -> Vec<WatchEvent> {
        vec![put(2, "a", "1"), put(3, "b", "1"), put(5, "a", "2"), put(6, "c", "1"), put(9, "a", "3")]
    }

    #[test]
    fn a_watcher_that_started_late_and_stopped_early_is_a_slice() {
        let c = canonical();
        assert_eq!(check_slice(&c, 4, &c[2..4]), Ok(()));
        assert_eq!(check_slice(&c, 1, &c), Ok(()));
        assert_eq!(check_slice(&c, 10, &[]), Ok(()));
    }

    #[test]
    fn a_missed_event_is_a_gap() {
        let c = canonical();
        let seen = vec![c[0], c[2]];
        let err = check_slice(&c, 1, &seen).expect_err("not a slice");
        assert!(err.contains("gap"), "{err}");
    }

    #[test]
    fn an_event_seen_twice_after_a_resume_is_a_duplicate() {
        let c = canonical();
        let seen = vec![c[0], c[1], c[1], c[2]];
        let err = check_slice(&c, 1, &seen).expect_err("not a slice");
        assert!(err.contains("duplicate"), "{err}");
        assert_eq!(check_order(&seen).len(), 1);
    }

    #[test]
    fn a_different_value_at_the_same_revision_is_reported() {
        let c = canonical();
        let seen = vec![c[0], put(3, "b", "other")];
        let err = check_slice(&c, 1, &seen).expect_err("not a slice");
        assert!(err.contains("differs"), "{err}");
    }

    #[test]
    fn the_digest_tells_key_kind_and_value_apart() {
        let a = put(3, "a", "1");
        assert_ne!(a, put(3, "a", "2"));
        assert_ne!(a, put(3, "b", "1"));
        assert_ne!(a, WatchEvent::new(3, b"a", true, b"1"));
        assert_ne!(put(3, "ab", "c"), put(3, "a", "bc"));
        assert_eq!(a, put(3, "a", "1"));
    }

    #[test]
    fn revisions_going_back_are_reported() {
        let c = canonical();
        let seen = vec![c[2], c[0]];
        assert_eq!(check_order(&seen).len(), 1);
        assert!(check_slice(&c, 1, &seen).is_err());
    }

    #[test]
    fn a_watcher_starting_between_revisions_starts_at_the_next_event() {
        let c = canonical();
        assert_eq!(check_slice(&c, 7, &c[4..]), Ok(()));
        assert!(check_slice(&c, 7, &c[3..]).is_err());
    }
}
