//! On-disk record layout of the log: a small header in front of the
//! event's JSON, so the log can be filtered, deduplicated and expired without
//! parsing events.
//!
//! `[appended_ms: u64 BE][type_len: u16 BE][type][key_len: u16 BE][key][event JSON]`

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordRef<'a> {
    /// When the bus appended it, in unix milliseconds.
    pub appended_ms: u64,
    /// The event's type, for subscription filters.
    pub ty: &'a str,
    /// The dedup key (source and id).
    pub key: &'a str,
    pub json: &'a [u8],
}

pub(crate) fn encode(appended_ms: u64, ty: &str, key: &str, json: &[u8]) -> Vec<u8> {
    let ty = truncate(ty);
    let key = truncate(key);
    let mut out = Vec::with_capacity(12 + ty.len() + key.len() + json.len());
    out.extend_from_slice(&appended_ms.to_be_bytes());
    out.extend_from_slice(&(ty.len() as u16).to_be_bytes());
    out.extend_from_slice(ty.as_bytes());
    out.extend_from_slice(&(key.len() as u16).to_be_bytes());
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(json);
    out
}

pub(crate) fn truncate(s: &str) -> &str {
    let mut end = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

pub(crate) fn decode(bytes: &[u8]) -> Option<RecordRef<'_>> {
    let appended_ms = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
    let (ty, rest) = take_str(&bytes[8..])?;
    let (key, json) = take_str(rest)?;
    Some(RecordRef { appended_ms, ty, key, json })
}

pub(crate) fn take_str(bytes: &[u8]) -> Option<(&str, &[u8])> {
    let len = u16::from_be_bytes(bytes.get(..2)?.try_into().ok()?) as usize;
    let s = std::str::from_utf8(bytes.get(2..2 + len)?).ok()?;
    Some((s, &bytes[2 + len..]))
}

/// A scheduled retry: the attempt it will be, then the record.
pub(crate) fn encode_delayed(attempt: u32, record: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + record.len());
    out.extend_from_slice(&attempt.to_be_bytes());
    out.extend_from_slice(record);
    out
}

pub(crate) fn decode_delayed(bytes: &[u8]) -> Option<(u32, &[u8])> {
    Some((u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?), &bytes[4..]))
}

/// A dead letter: the failure as JSON, when it happened, then the record.
pub(crate) fn encode_dead_letter(failure: &crate::Failure, dead_ms: u64, record: &[u8]) -> Vec<u8> {
    let failure = serde_json::to_vec(failure).expect("failure serializes");
    let mut out = Vec::with_capacity(12 + failure.len() + record.len());
    out.extend_from_slice(&(failure.len() as u32).to_be_bytes());
    out.extend_from_slice(&failure);
    out.extend_from_slice(&dead_ms.to_be_bytes());
    out.extend_from_slice(record);
    out
}

pub(crate) fn decode_dead_letter(bytes: &[u8]) -> Option<(crate::Failure, u64, &[u8])> {
    let len = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let failure = serde_json::from_slice(bytes.get(4..4 + len)?).ok()?;
    let dead_ms = u64::from_be_bytes(bytes.get(4 + len..12 + len)?.try_into().ok()?);
    Some((failure, dead_ms, bytes.get(12 + len..)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let bytes = encode(42, "email.delivered", "src\nid", b"{\"a\":1}");
        assert_eq!(
            decode(&bytes),
            Some(RecordRef { appended_ms: 42, ty: "email.delivered", key: "src\nid", json: b"{\"a\":1}" })
        );
        assert_eq!(decode(&bytes[..9]), None);
        let delayed = encode_delayed(3, &bytes);
        assert_eq!(decode_delayed(&delayed), Some((3, &bytes[..])));
    }
}
