//! The ensemble's membership as ZooKeeper stores it in `/zookeeper/config` (its dynamic
//! configuration text), and the rules for changing it with `reconfig`.
//!
//! The text is one `server.N=host:quorumPort:electionPort:role[;clientAddress]` line per
//! member, then `version=<hex>`, the zxid of the txn that wrote it (ZooKeeper's config id).
//! A committed change alters at most one voter (any number of observers): any majority of
//! the old voters then overlaps any majority of the new ones, which is what keeps one leader
//! per term while servers switch (Raft's single-server change; docs/ARCHITECTURE.md R13). A
//! second change waits until the first is committed. A request that changes more voters is
//! carried out by the leader as a sequence of such steps ([`Membership::steps_toward`]).

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

    /// The members after `reconfig(joining, leaving, new_members)` as one step: at most one
    /// voter may differ; errors as ZooKeeper's leader answers them.
    pub fn change(
        &self,
        joining: &str,
        leaving: &str,
        new_members: &str,
    ) -> Result<Vec<Member>, ZkError> {
        let next = self.target(joining, leaving, new_members)?;
        if self.voter_changes(&next) > 1 {
            return Err(ZkError::BadArguments);
        }
        Ok(next)
    }

    /// The members `reconfig(joining, leaving, new_members)` asks for, however many voters
    /// that changes; BADARGUMENTS for malformed input or a membership without a voter.
    pub fn target(
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
        if !next.iter().any(|m| !m.observer) {
            return Err(ZkError::BadArguments);
        }
        Ok(next)
    }

    /// The ids whose voter entry differs between this membership and `next`: voters added,
    /// removed, turned into or from observers, or given another address.
    fn changed_voters(&self, next: &[Member]) -> Vec<i64> {
        let voter = |list: &[Member], id: i64| -> Option<Member> {
            list.iter().find(|m| m.id == id && !m.observer).cloned()
        };
        self.members
            .iter()
            .chain(next.iter())
            .filter(|m| !m.observer)
            .map(|m| m.id)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .filter(|id| voter(&self.members, *id) != voter(next, *id))
            .collect()
    }

    pub fn voter_changes(&self, next: &[Member]) -> usize {
        self.changed_voters(next).len()
    }

    /// Single-voter memberships leading from this one to `target`, each to be committed
    /// before the next is proposed (R13). The first step makes every observer change and
    /// brings in each new voter as an observer, so that it can catch up before it counts;
    /// it changes no voter. Then voters that stay or arrive change one at a time, so the
    /// ensemble never shrinks before it has grown; removals follow, and `last` (the leader,
    /// when it is leaving) goes last, since a leader that is no longer a voter steps down.
    /// The last step equals `target`.
    pub fn steps_toward(&self, target: &[Member], last: i64) -> Vec<Vec<Member>> {
        let in_target = |id: i64| target.iter().find(|m| m.id == id).cloned();
        let is_voter = |list: &[Member], id: i64| list.iter().any(|m| m.id == id && !m.observer);
        let is_member = |id: i64| self.members.iter().any(|m| m.id == id);
        let mut changes = self.changed_voters(target);
        // Arrivals and address changes (a voter in the target), then departures, `last` last.
        changes.sort_by_key(|id| (!is_voter(target, *id), *id == last, *id));
        let mut current = self.members.clone();
        current.retain(|m| is_voter(&self.members, m.id) || in_target(m.id).is_some());
        for m in target.iter().filter(|m| !is_voter(&self.members, m.id)) {
            if m.observer || !is_member(m.id) {
                current.retain(|x| x.id != m.id);
                current.push(Member {
                    observer: true,
                    ..m.clone()
                });
            }
        }
        current.sort_by_key(|m| m.id);
        let mut steps = Vec::new();
        if current != self.members {
            steps.push(current.clone());
        }
        for id in changes {
            current.retain(|m| m.id != id);
            current.extend(in_target(id));
            current.sort_by_key(|m| m.id);
            steps.push(current.clone());
        }
        if steps.is_empty() {
            steps.push(current);
        }
        steps
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

    /// Every step is a membership a single reconfig could make (one voter differs from the
    /// one before) with a voter left, and the last step is the target.
    fn assert_single_voter_steps(from: &Membership, target: &[Member], leader: i64) {
        let steps = from.steps_toward(target, leader);
        let mut before = from.clone();
        for (i, step) in steps.iter().enumerate() {
            assert!(before.voter_changes(step) <= 1, "step {i}: {step:?}");
            assert!(step.iter().any(|m| !m.observer), "step {i} keeps a voter");
            if i + 1 < steps.len() {
                assert!(
                    step.iter().any(|m| m.id == leader && !m.observer),
                    "the leader leaves last: step {i}"
                );
            }
            before = Membership {
                members: step.clone(),
                version: 0,
            };
        }
        assert_eq!(steps.last().unwrap(), target);
    }

    #[test]
    fn a_change_of_many_voters_becomes_single_voter_steps_growing_before_shrinking() {
        let m = three();
        // Replace every voter, the leader (1) included, and add an observer.
        let target = m
            .target(
                "",
                "",
                "server.4=h:7:8:participant,server.5=h:9:10:participant,\
                 server.6=h:11:12:participant,server.7=h:13:14:observer",
            )
            .unwrap();
        assert_eq!(m.voter_changes(&target), 6);
        let steps = m.steps_toward(&target, 1);
        assert_eq!(steps.len(), 7);
        let ids = |s: &[Member], observer: bool| -> Vec<i64> {
            s.iter()
                .filter(|m| m.observer == observer)
                .map(|m| m.id)
                .collect()
        };
        assert_eq!(ids(&steps[0], false), vec![1, 2, 3]);
        assert_eq!(
            ids(&steps[0], true),
            vec![4, 5, 6, 7],
            "new voters join as observers first, with the observer"
        );
        assert_eq!(ids(&steps[1], false), vec![1, 2, 3, 4]);
        assert_eq!(ids(&steps[3], false), vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(
            ids(&steps[5], false),
            vec![1, 4, 5, 6],
            "the leader goes last"
        );
        assert_single_voter_steps(&m, &target, 1);
        // Demote a voter to observer, promote... and move another's address.
        let target = m
            .target(
                "server.2=h:3:4:observer,server.3=other:5:6:participant,server.9=h:1:1:participant",
                "",
                "",
            )
            .unwrap();
        assert_single_voter_steps(&m, &target, 3);
        // One voter change is one step, as a single reconfig makes it.
        let one = m.target("", "2", "").unwrap();
        assert_eq!(m.steps_toward(&one, 1), vec![one.clone()]);
        assert_eq!(m.change("", "2", "").unwrap(), one);
        // No voter left is refused whatever the number of steps.
        assert_eq!(
            m.target("server.5=h:1:1:observer", "1,2,3", ""),
            Err(ZkError::BadArguments)
        );
    }
}
