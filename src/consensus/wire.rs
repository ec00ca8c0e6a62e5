//! Byte layout of replication messages between servers (docs/FORMAT.md, "Peer messages").
//! Untrusted input: every length is checked before anything is allocated.

use std::sync::Arc;

use super::{Entry, Message};
use crate::jute::{DecodeError, DecodeResult, Reader, Writer};

const PRE_VOTE: u8 = 1;
const PRE_VOTE_REPLY: u8 = 2;
const VOTE: u8 = 3;
const VOTE_REPLY: u8 = 4;
const APPEND: u8 = 5;
const APPEND_REPLY: u8 = 6;
const SNAPSHOT: u8 = 7;

pub fn encode_message(message: &Message, out: &mut Vec<u8>) {
    match message {
        Message::PreVote { term, last_zxid } => {
            out.put_u8(PRE_VOTE);
            out.put_i64(*term as i64);
            out.put_i64(*last_zxid);
        }
        Message::PreVoteReply {
            term,
            granted,
            current_term,
        } => {
            out.put_u8(PRE_VOTE_REPLY);
            out.put_i64(*term as i64);
            out.put_bool(*granted);
            out.put_i64(*current_term as i64);
        }
        Message::Vote { term, last_zxid } => {
            out.put_u8(VOTE);
            out.put_i64(*term as i64);
            out.put_i64(*last_zxid);
        }
        Message::VoteReply { term, granted } => {
            out.put_u8(VOTE_REPLY);
            out.put_i64(*term as i64);
            out.put_bool(*granted);
        }
        Message::Append {
            term,
            prev_zxid,
            entries,
            commit,
        } => {
            out.put_u8(APPEND);
            out.put_i64(*term as i64);
            out.put_i64(*prev_zxid);
            out.put_i64(*commit);
            out.put_i32(entries.len() as i32);
            for e in entries {
                out.put_i64(e.zxid);
                out.put_buffer(&e.payload);
            }
        }
        Message::AppendReply {
            term,
            success,
            last_zxid,
        } => {
            out.put_u8(APPEND_REPLY);
            out.put_i64(*term as i64);
            out.put_bool(*success);
            out.put_i64(*last_zxid);
        }
        Message::Snapshot { term, zxid, data } => {
            out.put_u8(SNAPSHOT);
            out.put_i64(*term as i64);
            out.put_i64(*zxid);
            out.put_buffer(data);
        }
    }
}

fn term(r: &mut Reader<'_>) -> DecodeResult<u64> {
    let t = r.read_i64()?;
    if t < 0 {
        return Err(DecodeError::InvalidValue("negative term"));
    }
    Ok(t as u64)
}

/// Decodes one message; the reader must hold exactly one.
pub fn decode_message(r: &mut Reader<'_>) -> DecodeResult<Message> {
    let message = match r.read_u8()? {
        PRE_VOTE => Message::PreVote {
            term: term(r)?,
            last_zxid: r.read_i64()?,
        },
        PRE_VOTE_REPLY => {
            let asked = term(r)?;
            let granted = r.read_bool()?;
            // Servers of the previous version send no current term: 0, which moves no one.
            // (They cannot decode this longer reply themselves: see CONFORMANCE.md.)
            let current_term = if r.remaining() > 0 { term(r)? } else { 0 };
            Message::PreVoteReply {
                term: asked,
                granted,
                current_term,
            }
        }
        VOTE => Message::Vote {
            term: term(r)?,
            last_zxid: r.read_i64()?,
        },
        VOTE_REPLY => Message::VoteReply {
            term: term(r)?,
            granted: r.read_bool()?,
        },
        APPEND => {
            let term = term(r)?;
            let prev_zxid = r.read_i64()?;
            let commit = r.read_i64()?;
            let count = r.read_count(12)?;
            let mut entries = Vec::with_capacity(count);
            let mut last = prev_zxid;
            for _ in 0..count {
                let zxid = r.read_i64()?;
                if zxid <= last {
                    return Err(DecodeError::InvalidValue("entries out of zxid order"));
                }
                last = zxid;
                let payload: Arc<[u8]> = r.read_buffer()?.unwrap_or_default().into();
                entries.push(Entry { zxid, payload });
            }
            Message::Append {
                term,
                prev_zxid,
                entries,
                commit,
            }
        }
        APPEND_REPLY => Message::AppendReply {
            term: term(r)?,
            success: r.read_bool()?,
            last_zxid: r.read_i64()?,
        },
        SNAPSHOT => Message::Snapshot {
            term: term(r)?,
            zxid: r.read_i64()?,
            data: r.read_buffer()?.unwrap_or_default().into(),
        },
        _ => return Err(DecodeError::InvalidValue("unknown peer message type")),
    };
    if !r.is_empty() {
        return Err(DecodeError::InvalidValue("trailing bytes in peer message"));
    }
    Ok(message)
}
