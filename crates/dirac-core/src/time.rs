//! Timestamps as stored and shown: RFC 3339 in UTC with microseconds and a
//! fixed width, so that string order is time order in every database.

use chrono::{DateTime, SecondsFormat, Utc};

pub fn format(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub fn now() -> String {
    format(Utc::now())
}

/// `now - seconds`, formatted (the earliest representable time if that is
/// before it).
pub fn ago(seconds: u64) -> String {
    let delta = chrono::Duration::seconds(i64::try_from(seconds).unwrap_or(i64::MAX / 1_000_000))
        .min(chrono::Duration::days(365 * 1000));
    format(
        Utc::now()
            .checked_sub_signed(delta)
            .unwrap_or(DateTime::<Utc>::MIN_UTC),
    )
}

/// A protobuf timestamp, if it is a representable time.
pub fn from_proto(ts: &prost_types_compat::Timestamp) -> Option<String> {
    let nanos = u32::try_from(ts.nanos).ok()?;
    DateTime::<Utc>::from_timestamp(ts.seconds, nanos).map(format)
}

/// Re-export so callers name one type.
pub mod prost_types_compat {
    pub use prost_types::Timestamp;
}

#[cfg(test)]
mod tests {
    #[test]
    fn ago_never_overflows() {
        assert!(super::ago(u64::MAX) < super::now());
        assert!(super::ago(0) <= super::now());
    }

    #[test]
    fn fixed_width_and_ordered() {
        let a = super::format(chrono::DateTime::from_timestamp(1, 5_000).expect("t"));
        let b = super::format(chrono::DateTime::from_timestamp(10, 0).expect("t"));
        assert_eq!(a, "1970-01-01T00:00:01.000005Z");
        assert!(a < b);
        assert_eq!(a.len(), b.len());
    }
}
