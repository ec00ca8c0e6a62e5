//! Offline tools: `zoo snapshot inspect` and `zoo log dump` (the counterparts of ZooKeeper's
//! zkSnapShotToolkit and zkTxnLogToolkit), in text or JSON. They never modify the files.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::core::tree::{NodeKind, node_kind};
use crate::core::txn::{Txn, TxnHeader};
use crate::jute::records::Acl;
use crate::storage::log::{self, Repair};
use crate::storage::snapshot;

/// Escapes a string for a JSON string literal.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn acl_text(acl: &[Acl]) -> String {
    acl.iter()
        .map(|a| format!("{}:{}:{}", a.id.scheme, a.id.id, a.perms))
        .collect::<Vec<_>>()
        .join(",")
}

fn acl_json(acl: &[Acl]) -> String {
    let items: Vec<String> = acl
        .iter()
        .map(|a| {
            format!(
                "{{\"scheme\":{},\"id\":{},\"perms\":{}}}",
                json_string(&a.id.scheme),
                json_string(&a.id.id),
                a.perms
            )
        })
        .collect();
    format!("[{}]", items.join(","))
}

fn kind_text(owner: i64) -> String {
    match node_kind(owner) {
        NodeKind::Persistent => "persistent".into(),
        NodeKind::Ephemeral(s) => format!("ephemeral(0x{s:x})"),
        NodeKind::Container => "container".into(),
        NodeKind::Ttl(ttl) => format!("ttl({ttl}ms)"),
    }
}

/// `zoo snapshot inspect FILE [--json] [--data]`.
pub fn inspect_snapshot(
    path: &Path,
    json: bool,
    with_data: bool,
    out: &mut dyn Write,
) -> Result<(), String> {
    let loaded = snapshot::load_snapshot(path, |done, total| {
        eprintln!(
            "zoo: reading {}: {}%",
            path.display(),
            done * 100 / total.max(1)
        );
    })
    .map_err(|e| e.to_string())?;
    let h = loaded.header;
    let write = |out: &mut dyn Write, text: String| out.write_all(text.as_bytes());
    let result: io::Result<()> = (|| {
        if json {
            write(
                out,
                format!(
                    "{{\"file\":{},\"zxid\":{},\"node_count\":{},\"session_count\":{},\"sessions\":[",
                    json_string(&path.display().to_string()),
                    h.zxid,
                    h.node_count,
                    h.session_count
                ),
            )?;
            for (i, s) in loaded.sessions.iter().enumerate() {
                let sep = if i == 0 { "" } else { "," };
                write(
                    out,
                    format!("{sep}{{\"id\":{},\"timeout_ms\":{}}}", s.id, s.timeout_ms),
                )?;
            }
            write(out, "],\"nodes\":[".into())?;
            let mut first = true;
            let mut result = Ok(());
            loaded.tree.walk("/", &mut |p, node| {
                if result.is_err() {
                    return;
                }
                let stat = node.stat();
                let data = if with_data {
                    format!(",\"data_hex\":{}", node.data.as_ref().map_or("null".into(), |d| json_string(&hex(d))))
                } else {
                    String::new()
                };
                let sep = if first { "" } else { "," };
                first = false;
                result = write(
                    out,
                    format!(
                        "{sep}{{\"path\":{},\"kind\":{},\"czxid\":{},\"mzxid\":{},\"pzxid\":{},\"ctime\":{},\"mtime\":{},\"version\":{},\"cversion\":{},\"aversion\":{},\"ephemeral_owner\":{},\"data_length\":{},\"num_children\":{},\"acl\":{}{data}}}",
                        json_string(p),
                        json_string(&kind_text(node.ephemeral_owner)),
                        stat.czxid,
                        stat.mzxid,
                        stat.pzxid,
                        stat.ctime,
                        stat.mtime,
                        stat.version,
                        stat.cversion,
                        stat.aversion,
                        stat.ephemeral_owner,
                        stat.data_length,
                        stat.num_children,
                        acl_json(&node.acl)
                    ),
                );
            });
            result?;
            write(out, "]}\n".into())?;
        } else {
            write(
                out,
                format!(
                    "snapshot {}\nzxid 0x{:x}\nnodes {}\nsessions {}\n",
                    path.display(),
                    h.zxid,
                    h.node_count,
                    h.session_count
                ),
            )?;
            for s in &loaded.sessions {
                write(
                    out,
                    format!("session 0x{:x} timeout {}ms\n", s.id, s.timeout_ms),
                )?;
            }
            let mut result = Ok(());
            loaded.tree.walk("/", &mut |p, node| {
                if result.is_err() {
                    return;
                }
                let stat = node.stat();
                let mut line = format!(
                    "{p}\n  kind {} czxid 0x{:x} mzxid 0x{:x} pzxid 0x{:x} ctime {} mtime {} version {} cversion {} aversion {} dataLength {} numChildren {} acl {}\n",
                    kind_text(node.ephemeral_owner),
                    stat.czxid,
                    stat.mzxid,
                    stat.pzxid,
                    stat.ctime,
                    stat.mtime,
                    stat.version,
                    stat.cversion,
                    stat.aversion,
                    stat.data_length,
                    stat.num_children,
                    acl_text(&node.acl)
                );
                if with_data {
                    let data = node.data.as_ref().map_or("null".into(), |d| hex(d));
                    line.push_str(&format!("  data {data}\n"));
                }
                result = write(out, line);
            });
            result?;
        }
        Ok(())
    })();
    result.map_err(|e| format!("cannot write output: {e}"))
}

fn txn_text(t: &Txn) -> String {
    match t {
        Txn::CreateSession {
            session_id,
            timeout_ms,
            ..
        } => {
            format!("createSession 0x{session_id:x} timeout {timeout_ms}ms")
        }
        Txn::CloseSession { session_id } => format!("closeSession 0x{session_id:x}"),
        Txn::Create {
            path,
            data,
            acl,
            ephemeral_owner,
            parent_cversion,
        } => format!(
            "create {path} {} dataLength {} acl {} parentCversion {parent_cversion}",
            kind_text(*ephemeral_owner),
            data.as_ref().map_or(0, |d| d.len()),
            acl_text(acl)
        ),
        Txn::Delete { path } => format!("delete {path}"),
        Txn::SetData {
            path,
            data,
            version,
        } => {
            format!(
                "setData {path} dataLength {} version {version}",
                data.as_ref().map_or(0, |d| d.len())
            )
        }
        Txn::SetAcl { path, acl, version } => {
            format!("setACL {path} acl {} aversion {version}", acl_text(acl))
        }
        Txn::Check => "check".into(),
        Txn::Multi(txns) => {
            let parts: Vec<String> = txns.iter().map(txn_text).collect();
            format!("multi [{}]", parts.join("; "))
        }
    }
}

fn txn_json(t: &Txn) -> String {
    match t {
        Txn::CreateSession {
            session_id,
            timeout_ms,
            ..
        } => {
            format!(
                "{{\"type\":\"createSession\",\"session\":{session_id},\"timeout_ms\":{timeout_ms}}}"
            )
        }
        Txn::CloseSession { session_id } => {
            format!("{{\"type\":\"closeSession\",\"session\":{session_id}}}")
        }
        Txn::Create {
            path,
            data,
            acl,
            ephemeral_owner,
            parent_cversion,
        } => format!(
            "{{\"type\":\"create\",\"path\":{},\"kind\":{},\"data_length\":{},\"acl\":{},\"parent_cversion\":{parent_cversion}}}",
            json_string(path),
            json_string(&kind_text(*ephemeral_owner)),
            data.as_ref().map_or(0, |d| d.len()),
            acl_json(acl)
        ),
        Txn::Delete { path } => format!("{{\"type\":\"delete\",\"path\":{}}}", json_string(path)),
        Txn::SetData {
            path,
            data,
            version,
        } => format!(
            "{{\"type\":\"setData\",\"path\":{},\"data_length\":{},\"version\":{version}}}",
            json_string(path),
            data.as_ref().map_or(0, |d| d.len())
        ),
        Txn::SetAcl { path, acl, version } => format!(
            "{{\"type\":\"setACL\",\"path\":{},\"acl\":{},\"aversion\":{version}}}",
            json_string(path),
            acl_json(acl)
        ),
        Txn::Check => "{\"type\":\"check\"}".into(),
        Txn::Multi(txns) => {
            let parts: Vec<String> = txns.iter().map(txn_json).collect();
            format!("{{\"type\":\"multi\",\"txns\":[{}]}}", parts.join(","))
        }
    }
}

/// `zoo log dump PATH [--json]`: PATH is a segment file or a directory of segments.
pub fn dump_log(path: &Path, json: bool, out: &mut dyn Write) -> Result<(), String> {
    let segments: Vec<(i64, PathBuf)> = if path.is_dir() {
        log::list_segments(path).map_err(|e| e.to_string())?
    } else {
        vec![(0, path.to_owned())]
    };
    let mut write_error: Option<io::Error> = None;
    let mut count = 0u64;
    let stats = log::scan(&segments, 0, Repair::ReadOnly, |h: TxnHeader, t: Txn| {
        if write_error.is_some() {
            return;
        }
        count += 1;
        if count.is_multiple_of(1_000_000) {
            eprintln!("zoo: {count} records read");
        }
        let line = if json {
            format!(
                "{{\"zxid\":{},\"time_ms\":{},\"session\":{},\"xid\":{},\"txn\":{}}}\n",
                h.zxid,
                h.time_ms,
                h.session_id,
                h.xid,
                txn_json(&t)
            )
        } else {
            format!(
                "zxid 0x{:x} time {} session 0x{:x} cxid {} {}\n",
                h.zxid,
                h.time_ms,
                h.session_id,
                h.xid,
                txn_text(&t)
            )
        };
        if let Err(e) = out.write_all(line.as_bytes()) {
            write_error = Some(e);
        }
    })
    .map_err(|e| e.to_string())?;
    if let Some(e) = write_error {
        return Err(format!("cannot write output: {e}"));
    }
    eprintln!(
        "zoo: {} records in {} segment(s), last zxid 0x{:x}{}",
        stats.records,
        segments.len(),
        stats.last_zxid,
        if stats.torn_tail_truncated {
            "; the last segment ends in a torn record"
        } else {
            ""
        }
    );
    Ok(())
}
