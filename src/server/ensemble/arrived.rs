//! Entries from the leader, decoded once (see [`Arrived`]).

use std::collections::VecDeque;
use std::sync::Arc;

use crate::consensus::Entry;
use crate::core::txn::{Txn, TxnHeader};
use crate::server::limits::DECODED_AHEAD_MAX;

/// Entries from the leader, decoded once: on arrival, to refuse a damaged one before it
/// reaches the log, and kept so that applying the entry once it commits does not decode it
/// again. A kept entry is used only for the very payload it was decoded from (a replaced or
/// re-sent entry is decoded afresh); at most `DECODED_AHEAD_MAX` wait.
#[derive(Default)]
pub(super) struct Arrived {
    decoded: VecDeque<(Arc<[u8]>, TxnHeader, Txn)>,
}

impl Arrived {
    /// Whether `entry` is a whole, checksummed, decodable log record for its zxid (what
    /// `decode_record` and the log then rely on); keeps what it decoded.
    pub(super) fn check(&mut self, entry: &Entry) -> bool {
        match crate::storage::log::decode_record(&entry.payload) {
            Ok((header, txn)) if header.zxid == entry.zxid => {
                if self.decoded.len() < DECODED_AHEAD_MAX {
                    self.decoded.push_back((entry.payload.clone(), header, txn));
                }
                true
            }
            _ => false,
        }
    }

    /// The decoded record of `payload`, from what arrived if it is there.
    pub(super) fn take(&mut self, payload: &Arc<[u8]>) -> (TxnHeader, Txn) {
        let zxid = crate::storage::log::record_zxid(payload);
        while let Some((kept, _, _)) = self.decoded.front() {
            if Arc::ptr_eq(kept, payload) {
                let (_, header, txn) = self.decoded.pop_front().expect("checked");
                return (header, txn);
            }
            if zxid.is_some_and(|z| crate::storage::log::record_zxid(kept) > Some(z)) {
                break;
            }
            // Older than the entry applied now, or an entry since replaced: never applied.
            self.decoded.pop_front();
        }
        super::decode_record(payload)
    }

    pub(super) fn clear(&mut self) {
        self.decoded.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::log::encode_record;

    fn entry(zxid: i64, path: &str) -> Entry {
        let header = TxnHeader {
            session_id: 1,
            xid: 1,
            zxid,
            time_ms: 0,
        };
        let txn = Txn::Delete { path: path.into() };
        let mut bytes = Vec::new();
        encode_record(&header, &txn, &mut bytes);
        Entry {
            zxid,
            payload: bytes.into(),
        }
    }

    fn path_of(txn: &Txn) -> &str {
        match txn {
            Txn::Delete { path } => path,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn an_applied_entry_is_the_one_checked_on_arrival() {
        let mut arrived = Arrived::default();
        let (a, b) = (entry(1, "/a"), entry(2, "/b"));
        assert!(arrived.check(&a) && arrived.check(&b));
        assert_eq!(path_of(&arrived.take(&a.payload).1), "/a");
        assert_eq!(path_of(&arrived.take(&b.payload).1), "/b");
        assert!(arrived.decoded.is_empty());
    }

    #[test]
    fn a_replaced_entry_is_decoded_from_the_payload_applied() {
        let mut arrived = Arrived::default();
        let (old, later) = (entry(2, "/old"), entry(3, "/later"));
        assert!(arrived.check(&old) && arrived.check(&later));
        // A new leader replaced zxid 2: the log holds another payload for it.
        let new = entry(2, "/new");
        assert_eq!(path_of(&arrived.take(&new.payload).1), "/new");
        // The entry after it is still kept.
        assert_eq!(path_of(&arrived.take(&later.payload).1), "/later");
    }

    #[test]
    fn an_entry_never_seen_leaves_newer_kept_entries_alone() {
        let mut arrived = Arrived::default();
        let later = entry(5, "/later");
        assert!(arrived.check(&later));
        assert_eq!(path_of(&arrived.take(&entry(4, "/x").payload).1), "/x");
        assert_eq!(arrived.decoded.len(), 1);
    }

    #[test]
    fn a_damaged_or_misplaced_record_is_refused() {
        let mut arrived = Arrived::default();
        let mut damaged = entry(1, "/a");
        let mut bytes = damaged.payload.to_vec();
        *bytes.last_mut().unwrap() ^= 1;
        damaged.payload = bytes.into();
        assert!(!arrived.check(&damaged));
        let mut misplaced = entry(1, "/a");
        misplaced.zxid = 2;
        assert!(!arrived.check(&misplaced));
        assert!(arrived.decoded.is_empty());
    }
}
