//! Reads served from a shard's tree snapshot (FinalRequestProcessor's read branch). Plain
//! functions of (tree, request, identities): no I/O, no locks.

use crate::core::acl::{self, perms};
use crate::core::path;
use crate::core::tree::DataTree;
use crate::core::watches::WatchKind;
use crate::error::{ZkError, ZkResult};
use crate::jute::Writer;
use crate::jute::records::{Id, Request, encode_acls, encode_multi_header, opcode};

/// The result of a read and the watch it asks to register (registered by the caller, which
/// owns the shard's watch table).
#[derive(Debug, PartialEq, Eq)]
pub struct ReadOutcome {
    pub result: ZkResult<Vec<u8>>,
    pub watch: Option<(WatchKind, String)>,
}

impl ReadOutcome {
    fn plain(result: ZkResult<Vec<u8>>) -> ReadOutcome {
        ReadOutcome {
            result,
            watch: None,
        }
    }
}

fn require(acl: &[crate::jute::records::Acl], perm: i32, auth: &[Id]) -> ZkResult<()> {
    if acl::check(acl, perm, auth) {
        Ok(())
    } else {
        Err(ZkError::NoAuth)
    }
}

/// Executes a read request. `session_id` is used by getEphemerals.
pub fn execute(tree: &DataTree, request: &Request, auth: &[Id], session_id: i64) -> ReadOutcome {
    match request {
        Request::Exists { path: p, watch } => {
            // As in ZooKeeper, reads do not validate paths: a malformed path does not exist.
            match tree.get(p) {
                Some(node) => {
                    if let Err(e) = require(&node.acl, perms::READ, auth) {
                        return ReadOutcome::plain(Err(e));
                    }
                    let mut body = Vec::new();
                    node.stat().encode(&mut body);
                    ReadOutcome {
                        result: Ok(body),
                        watch: watch.then(|| (WatchKind::Data, p.clone())),
                    }
                }
                // exists registers its watch even when the node is missing.
                None => ReadOutcome {
                    result: Err(ZkError::NoNode),
                    watch: watch.then(|| (WatchKind::Data, p.clone())),
                },
            }
        }
        Request::GetData { path: p, watch } => {
            let result = get_data(tree, p, auth);
            let watch = (*watch && result.is_ok()).then(|| (WatchKind::Data, p.clone()));
            ReadOutcome { result, watch }
        }
        Request::GetChildren {
            path: p,
            watch,
            with_stat,
        } => {
            let result = get_children(tree, p, *with_stat, auth);
            let watch = (*watch && result.is_ok()).then(|| (WatchKind::Child, p.clone()));
            ReadOutcome { result, watch }
        }
        Request::GetAcl { path: p } => ReadOutcome::plain(get_acl(tree, p, auth)),
        Request::GetAllChildrenNumber { path: p } => ReadOutcome::plain((|| {
            let node = tree.get(p).ok_or(ZkError::NoNode)?;
            require(&node.acl, perms::READ, auth)?;
            let mut body = Vec::new();
            body.put_i32(tree.descendant_count(p) as i32);
            Ok(body)
        })()),
        Request::GetEphemerals { prefix } => {
            let trimmed = prefix.trim();
            let all = trimmed.is_empty() || trimmed == "/";
            let list: Vec<String> = tree
                .ephemerals_of(session_id)
                .into_iter()
                .filter(|p| all || p.starts_with(prefix.as_str()))
                .map(|p| p.to_string())
                .collect();
            let mut body = Vec::new();
            body.put_string_vec(&list);
            ReadOutcome::plain(Ok(body))
        }
        Request::MultiRead(ops) => {
            let mut body = Vec::new();
            for op in ops {
                let (result_type, result) = match op {
                    Request::GetData { path: p, .. } => (opcode::GET_DATA, get_data(tree, p, auth)),
                    Request::GetChildren { path: p, .. } => {
                        (opcode::GET_CHILDREN, get_children(tree, p, false, auth))
                    }
                    _ => (opcode::ERROR, Err(ZkError::BadArguments)),
                };
                match result {
                    Ok(result_body) => {
                        encode_multi_header(result_type, false, 0, &mut body);
                        body.extend_from_slice(&result_body);
                    }
                    Err(e) => {
                        encode_multi_header(opcode::ERROR, false, e.code(), &mut body);
                        body.put_i32(e.code());
                    }
                }
            }
            encode_multi_header(-1, true, -1, &mut body);
            ReadOutcome::plain(Ok(body))
        }
        Request::WhoAmI => {
            let mut body = Vec::new();
            body.put_i32(auth.len() as i32);
            for id in auth {
                body.put_ustring(&id.scheme);
                body.put_ustring(&id.id);
            }
            ReadOutcome::plain(Ok(body))
        }
        _ => ReadOutcome::plain(Err(ZkError::BadArguments)),
    }
}

fn get_data(tree: &DataTree, p: &str, auth: &[Id]) -> ZkResult<Vec<u8>> {
    let node = tree.get(p).ok_or(ZkError::NoNode)?;
    require(&node.acl, perms::READ, auth)?;
    let mut body = Vec::with_capacity(node.data_len() + 72);
    match &node.data {
        Some(data) => body.put_buffer(data),
        None => body.put_null_buffer(),
    }
    node.stat().encode(&mut body);
    Ok(body)
}

fn get_children(tree: &DataTree, p: &str, with_stat: bool, auth: &[Id]) -> ZkResult<Vec<u8>> {
    let node = tree.get(p).ok_or(ZkError::NoNode)?;
    require(&node.acl, perms::READ, auth)?;
    let mut body = Vec::new();
    body.put_i32(node.children.len() as i32);
    for child in node.children.iter() {
        body.put_ustring(path::name(child));
    }
    if with_stat {
        node.stat().encode(&mut body);
    }
    Ok(body)
}

fn get_acl(tree: &DataTree, p: &str, auth: &[Id]) -> ZkResult<Vec<u8>> {
    let node = tree.get(p).ok_or(ZkError::NoNode)?;
    require(&node.acl, perms::READ | perms::ADMIN, auth)?;
    let mut body = Vec::new();
    if acl::check(&node.acl, perms::ADMIN, auth) {
        encode_acls(&node.acl, &mut body);
    } else {
        encode_acls(&acl::mask_digests(&node.acl), &mut body);
    }
    node.stat().encode(&mut body);
    Ok(body)
}
