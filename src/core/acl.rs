//! ACL checks: the schemes world, auth, digest, ip and super (`ZooDefs.Perms`,
//! `PrepRequestProcessor.checkACL/fixupACL`, the built-in authentication providers).

use std::net::IpAddr;
use std::sync::Arc;

use base64::Engine;
use sha1::{Digest, Sha1};

use crate::error::{ZkError, ZkResult};
use crate::jute::records::{Acl, Id};

pub mod perms {
    pub const READ: i32 = 1;
    pub const WRITE: i32 = 2;
    pub const CREATE: i32 = 4;
    pub const DELETE: i32 = 8;
    pub const ADMIN: i32 = 16;
    pub const ALL: i32 = 31;
}

/// `world:anyone` with every permission (`ZooDefs.Ids.OPEN_ACL_UNSAFE`), as an owned list;
/// the shared copy is `jute::records::open_acl_unsafe_shared`.
pub fn open_acl_unsafe() -> Vec<Acl> {
    crate::jute::records::open_acl_unsafe_shared()
        .as_ref()
        .clone()
}

/// The ACL as a shared allocation: the common lists (world:anyone ALL or READ) are one
/// allocation for the whole tree, as ZooKeeper's ACL cache makes them.
pub fn shared(acl: &[Acl]) -> Arc<Vec<Acl>> {
    let open = crate::jute::records::open_acl_unsafe_shared();
    if acl == open.as_slice() {
        return open;
    }
    let read = crate::jute::records::read_acl_unsafe_shared();
    if acl == read.as_slice() {
        return read;
    }
    Arc::new(acl.to_vec())
}

/// `world:anyone` read-only (`ZooDefs.Ids.READ_ACL_UNSAFE`), as an owned list; the shared
/// copy is `jute::records::read_acl_unsafe_shared`.
pub fn read_acl_unsafe() -> Vec<Acl> {
    crate::jute::records::read_acl_unsafe_shared()
        .as_ref()
        .clone()
}

/// The digest id for "user:password": `user:base64(sha1("user:password"))`.
pub fn digest_id(user_password: &str) -> String {
    let user = user_password.split(':').next().unwrap_or("");
    let hash = Sha1::digest(user_password.as_bytes());
    format!(
        "{user}:{}",
        base64::engine::general_purpose::STANDARD.encode(hash)
    )
}

/// True if the identities `ids` hold `perm` under `acl`. `ids` are the connection's
/// authenticated identities; an `Id{scheme:"super"}` among them passes every check.
pub fn check(acl: &[Acl], perm: i32, ids: &[Id]) -> bool {
    if ids.iter().any(|id| id.scheme == "super") {
        return true;
    }
    for entry in acl {
        if entry.perms & perm == 0 {
            continue;
        }
        let id = &entry.id;
        match id.scheme.as_str() {
            "world" if id.id == "anyone" => return true,
            "ip" => {
                for own in ids.iter().filter(|own| own.scheme == "ip") {
                    if ip_matches(&id.id, &own.id) {
                        return true;
                    }
                }
            }
            _ => {
                if ids
                    .iter()
                    .any(|own| own.scheme == id.scheme && own.id == id.id)
                {
                    return true;
                }
            }
        }
    }
    false
}

/// [`fixup`] as a shared allocation; the open list (the one almost every create carries)
/// needs no fixing and is the process-wide copy, with no allocation.
pub fn fixup_shared(acl: &Arc<Vec<Acl>>, ids: &[Id]) -> ZkResult<Arc<Vec<Acl>>> {
    let open = crate::jute::records::open_acl_unsafe_shared();
    if Arc::ptr_eq(acl, &open) || **acl == *open {
        return Ok(open);
    }
    Ok(shared(&fixup(acl, ids)?))
}

/// Validates a create/setACL ACL list, expands `auth` into the session's authenticated ids and
/// removes duplicates. Empty or invalid lists are INVALIDACL.
pub fn fixup(acl: &[Acl], ids: &[Id]) -> ZkResult<Vec<Acl>> {
    if acl.is_empty() {
        return Err(ZkError::InvalidAcl);
    }
    let mut out: Vec<Acl> = Vec::with_capacity(acl.len());
    let mut push = |a: Acl| {
        if !out.contains(&a) {
            out.push(a);
        }
    };
    for entry in acl {
        match entry.id.scheme.as_str() {
            "world" => {
                if entry.id.id != "anyone" {
                    return Err(ZkError::InvalidAcl);
                }
                push(entry.clone());
            }
            "auth" => {
                let mut any = false;
                for own in ids
                    .iter()
                    .filter(|own| is_authenticated_scheme(&own.scheme))
                {
                    any = true;
                    push(Acl {
                        perms: entry.perms,
                        id: own.clone(),
                    });
                }
                if !any {
                    return Err(ZkError::InvalidAcl);
                }
            }
            "digest" => {
                // Java's split(":") must give exactly two parts: "user:hash".
                let parts: Vec<&str> = entry.id.id.split(':').collect();
                if parts.len() != 2 || parts[0].is_empty() || parts[1].is_empty() {
                    return Err(ZkError::InvalidAcl);
                }
                push(entry.clone());
            }
            "ip" => {
                if parse_ip_pattern(&entry.id.id).is_none() {
                    return Err(ZkError::InvalidAcl);
                }
                push(entry.clone());
            }
            "sasl" | "x509" => push(entry.clone()),
            _ => return Err(ZkError::InvalidAcl),
        }
    }
    Ok(out)
}

/// Schemes whose ids count as "authenticated" for the `auth` ACL scheme (the ip provider's
/// `isAuthenticated()` is false in ZooKeeper).
fn is_authenticated_scheme(scheme: &str) -> bool {
    matches!(scheme, "digest" | "sasl" | "x509")
}

/// Hides digest hashes from a client without ADMIN (`getACL` masking): `user:x`.
pub fn mask_digests(acl: &[Acl]) -> Vec<Acl> {
    acl.iter()
        .map(|a| {
            if a.id.scheme == "digest" {
                let user = a.id.id.split(':').next().unwrap_or("");
                Acl {
                    perms: a.perms,
                    id: Id::new("digest", &format!("{user}:x")),
                }
            } else {
                a.clone()
            }
        })
        .collect()
}

fn parse_ip_pattern(pattern: &str) -> Option<(IpAddr, u32)> {
    let (addr, bits) = match pattern.split_once('/') {
        Some((a, b)) => (a, Some(b.parse::<u32>().ok()?)),
        None => (pattern, None),
    };
    let addr: IpAddr = addr.parse().ok()?;
    let width = if addr.is_ipv4() { 32 } else { 128 };
    let bits = bits.unwrap_or(width);
    if bits > width {
        return None;
    }
    Some((addr, bits))
}

fn ip_matches(pattern: &str, client: &str) -> bool {
    let Some((net, bits)) = parse_ip_pattern(pattern) else {
        return false;
    };
    let Ok(client) = client.parse::<IpAddr>() else {
        return false;
    };
    let client = match (net, client) {
        (IpAddr::V4(_), IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => return false,
        },
        (_, c) => c,
    };
    match (net, client) {
        (IpAddr::V4(n), IpAddr::V4(c)) => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(n) & mask == u32::from(c) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(c)) => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(n) & mask == u128::from(c) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[(&str, &str)]) -> Vec<Id> {
        list.iter().map(|(s, i)| Id::new(s, i)).collect()
    }

    #[test]
    fn digest_matches_zookeeper_digest_provider() {
        // DigestAuthenticationProvider.generateDigest("super:test").
        assert_eq!(
            digest_id("super:test"),
            "super:D/InIHSb7yEEbrWz8b9l71RjZJU="
        );
    }

    #[test]
    fn world_anyone_grants_listed_perms_only() {
        let acl = read_acl_unsafe();
        assert!(check(&acl, perms::READ, &[]));
        assert!(!check(&acl, perms::WRITE, &[]));
    }

    #[test]
    fn digest_acl_requires_matching_identity() {
        let acl = vec![Acl {
            perms: perms::ALL,
            id: Id::new("digest", &digest_id("u:p")),
        }];
        assert!(!check(&acl, perms::READ, &ids(&[("ip", "127.0.0.1")])));
        assert!(check(
            &acl,
            perms::READ,
            &[Id::new("digest", &digest_id("u:p"))]
        ));
    }

    #[test]
    fn super_passes_everything() {
        let acl = vec![Acl {
            perms: 0,
            id: Id::new("digest", "a:b"),
        }];
        assert!(check(&acl, perms::ADMIN, &ids(&[("super", "")])));
    }

    #[test]
    fn ip_acl_matches_cidr_and_mapped_ipv6() {
        let acl = vec![Acl {
            perms: perms::READ,
            id: Id::new("ip", "10.1.0.0/16"),
        }];
        assert!(check(&acl, perms::READ, &ids(&[("ip", "10.1.2.3")])));
        assert!(!check(&acl, perms::READ, &ids(&[("ip", "10.2.2.3")])));
        assert!(check(&acl, perms::READ, &ids(&[("ip", "::ffff:10.1.9.9")])));
        let v6 = vec![Acl {
            perms: perms::READ,
            id: Id::new("ip", "fe80::/16"),
        }];
        assert!(check(&v6, perms::READ, &ids(&[("ip", "fe80::1")])));
    }

    #[test]
    fn auth_scheme_expands_to_authenticated_ids() {
        let acl = vec![Acl {
            perms: perms::ALL,
            id: Id::new("auth", ""),
        }];
        let mine = ids(&[("ip", "127.0.0.1"), ("digest", "u:h")]);
        assert_eq!(
            fixup(&acl, &mine).unwrap(),
            vec![Acl {
                perms: perms::ALL,
                id: Id::new("digest", "u:h")
            }]
        );
        assert_eq!(
            fixup(&acl, &ids(&[("ip", "127.0.0.1")])),
            Err(ZkError::InvalidAcl)
        );
    }

    #[test]
    fn invalid_acls_are_rejected() {
        assert_eq!(fixup(&[], &[]), Err(ZkError::InvalidAcl));
        let bad = |s: &str, i: &str| {
            vec![Acl {
                perms: 1,
                id: Id::new(s, i),
            }]
        };
        assert_eq!(
            fixup(&bad("world", "someone"), &[]),
            Err(ZkError::InvalidAcl)
        );
        assert_eq!(
            fixup(&bad("digest", "nocolon"), &[]),
            Err(ZkError::InvalidAcl)
        );
        assert_eq!(
            fixup(&bad("ip", "300.1.1.1"), &[]),
            Err(ZkError::InvalidAcl)
        );
        assert_eq!(fixup(&bad("nosuch", "x"), &[]), Err(ZkError::InvalidAcl));
    }

    #[test]
    fn duplicates_are_removed() {
        let acl = vec![open_acl_unsafe()[0].clone(), open_acl_unsafe()[0].clone()];
        assert_eq!(fixup(&acl, &[]).unwrap().len(), 1);
    }

    #[test]
    fn digests_are_masked() {
        let acl = vec![Acl {
            perms: 31,
            id: Id::new("digest", "bob:secret"),
        }];
        assert_eq!(mask_digests(&acl)[0].id.id, "bob:x");
    }
}
