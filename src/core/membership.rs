//! The ensemble's membership as ZooKeeper stores it in `/zookeeper/config` (its dynamic
//! configuration text), and the rules for changing it with `reconfig`.
//!
//! The text is one `server.N=host:quorumPort:electionPort:role[;clientAddress]` line per
//! member, then `version=<hex>`, the zxid of the txn that wrote it (ZooKeeper's config id).
//! A change may add, remove or alter at most one voter at a time (any number of observers):
//! any majority of the old voters then overlaps any majority of the new ones, which is what
//! keeps one leader per term while servers switch (Raft's single-server change;
//! docs/ARCHITECTURE.md R13). A second change waits until the first is committed.

use crate::config::Member;
use crate::error::ZkError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub members: Vec<Member>,
    /// The config id (`version=` line); 0 before any was written.
    pub version: i64,
}

impl Membership {
    /// Parses `/zookeeper/config` data. Unknown lines are ignored, as ZooKeeper does.
    pub fn parse(text: &str) -> Result<Membership, String> {
        let mut members: Vec<Member> = Vec::new();
        let mut version = 0;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if let Some(v) = line.strip_prefix("version=") {
                version = i64::from_str_radix(v.trim(), 16)
                    .map_err(|_| format!("bad version line '{line}'"))?;
            } else if let Some((key, value)) = line.split_once('=')
                && let Some(id) = key.trim().strip_prefix("server.")
            {
                let id: i64 = id
                    .parse()
                    .map_err(|_| format!("bad server id in '{line}'"))?;
                let member = Member::parse(id, value)?;
                members.retain(|m| m.id != id);
                members.push(member);
            }
        }
        members.sort_by_key(|m| m.id);
        Ok(Membership { members, version })
    }

    /// The `/zookeeper/config` text for this membership at config id `version`.
    pub fn render(members: &[Member], version: i64) -> String {
        let mut out = String::new();
        for m in members {
            out.push_str(&format!("server.{}={}\n", m.id, m.spec()));
        }
        out.push_str(&format!("version={version:x}"));
        out
    }

    pub fn voters(&self) -> Vec<i64> {
        self.members
            .iter()
            .filter(|m| !m.observer)
            .map(|m| m.id)
            .collect()
    }

    pub fn observers(&self) -> Vec<i64> {
        self.members
            .iter()
            .filter(|m| m.observer)
            .map(|m| m.id)
            .collect()
    }

    /// The members after `reconfig(joining, leaving, new_members)`; errors as ZooKeeper's
    /// leader answers them.
    pub fn change(
        &self,
        joining: &str,
        leaving: &str,
        new_members: &str,
    ) -> Result<Vec<Member>, ZkError> {
        let parse_list = |list: &str| -> Result<Vec<Member>, ZkError> {
            list.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|entry| {
                    let (key, value) = entry.split_once('=').ok_or(ZkError::BadArguments)?;
                    let id = key
                        .trim()
                        .strip_prefix("server.")
                        .and_then(|i| i.parse::<i64>().ok())
                        .ok_or(ZkError::BadArguments)?;
                    Member::parse(id, value).map_err(|_| ZkError::BadArguments)
                })
                .collect()
        };
        let mut next: Vec<Member> = if !new_members.trim().is_empty() {
            if !joining.trim().is_empty() || !leaving.trim().is_empty() {
                return Err(ZkError::BadArguments);
            }
            parse_list(new_members)?
        } else {
            let mut next = self.members.clone();
            for id in leaving.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let id: i64 = id.parse().map_err(|_| ZkError::BadArguments)?;
                next.retain(|m| m.id != id);
            }
            for m in parse_list(joining)? {
                next.retain(|x| x.id != m.id);
                next.push(m);
            }
            next
        };
        next.sort_by_key(|m| m.id);
        let voter_changes = self
            .members
            .iter()
            .chain(next.iter())
            .filter(|m| !m.observer)
            .map(|m| m.id)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .filter(|id| {
                let before = self.members.iter().find(|m| m.id == *id && !m.observer);
                let after = next.iter().find(|m| m.id == *id && !m.observer);
                before != after
            })
            .count();
        if voter_changes > 1 || !next.iter().any(|m| !m.observer) {
            return Err(ZkError::BadArguments);
        }
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Membership {
        Membership::parse(
            "server.1=h:1:2:participant\nserver.2=h:3:4:participant\nserver.3=h:5:6:participant\nversion=100000000",
        )
        .unwrap()
    }

    #[test]
    fn config_text_round_trips() {
        let m = three();
        assert_eq!(m.version, 0x1_0000_0000);
        assert_eq!(m.voters(), vec![1, 2, 3]);
        let text = Membership::render(&m.members, m.version);
        assert_eq!(Membership::parse(&text).unwrap(), m);
        assert!(text.ends_with("version=100000000"));
    }

    #[test]
    fn observers_come_and_go_freely_voters_one_at_a_time() {
        let m = three();
        let joined = m
            .change("server.100=0.0.0.0:7:8:observer;0.0.0.0:9", "", "")
            .unwrap();
        assert_eq!(joined.len(), 4);
        assert!(joined.iter().any(|x| x.id == 100 && x.observer));
        assert_eq!(m.change("", "3", "").unwrap().len(), 2);
        assert_eq!(
            m.change("server.4=h:7:8:participant,server.5=h:9:10", "", ""),
            Err(ZkError::BadArguments),
            "two voters at once"
        );
        assert_eq!(m.change("", "1,2", ""), Err(ZkError::BadArguments));
        assert_eq!(m.change("some thing", "", ""), Err(ZkError::BadArguments));
        assert_eq!(
            m.change(
                "",
                "",
                "server.1=h:1:2:participant,server.2=h:3:4:participant"
            )
            .unwrap()
            .len(),
            2
        );
    }
}
