//! A node's children, held as their full paths: the same `Arc<str>` allocation as the tree's
//! key, so a child costs one pointer here. Within one parent, ordering by full path is
//! ordering by name. Most znodes have no children and many have a few, so the set is
//! empty (no allocation), a small sorted vector, or, past `FEW_CHILDREN_MAX`, a persistent
//! ordered set whose clone is O(1) (a node is copied on every change under the persistent tree).
//!
//! A node decoded from a frozen snapshot keeps its children in the file
//! ([`FrozenChildren`]); the first change turns the set into `Layered`: the frozen list plus
//! the names added and removed since, so a parent with a million frozen children is never
//! copied into memory to add one more.

use std::sync::Arc;

use crate::core::frozen::{FrozenChildren, FrozenTree};

/// Above this many children the set switches to a persistent B-tree.
pub const FEW_CHILDREN_MAX: usize = 32;

#[derive(Debug, Clone, Default)]
pub enum Children {
    #[default]
    Empty,
    /// Sorted, at most `FEW_CHILDREN_MAX` names.
    Few(Vec<Arc<str>>),
    Many(im::OrdSet<Arc<str>>),
    /// Unchanged since the snapshot this node was decoded from.
    Frozen(FrozenChildren),
    Layered(Box<Layered>),
}

/// A frozen child list with changes on top. Invariants: every name in `added` is absent from
/// `frozen`; every name in `removed` is present in `frozen`.
#[derive(Debug, Clone)]
pub struct Layered {
    frozen: FrozenChildren,
    added: im::OrdSet<Arc<str>>,
    removed: im::OrdSet<Arc<str>>,
}

impl Children {
    /// A set from paths in any order; duplicates are an error (the input is untrusted).
    pub fn from_paths(mut paths: Vec<Arc<str>>) -> Result<Children, &'static str> {
        paths.sort_unstable();
        if paths.windows(2).any(|w| w[0] == w[1]) {
            return Err("a duplicate child");
        }
        Ok(match paths.len() {
            0 => Children::Empty,
            n if n <= FEW_CHILDREN_MAX => Children::Few(paths),
            _ => Children::Many(paths.into_iter().collect()),
        })
    }

    pub fn len(&self) -> usize {
        match self {
            Children::Empty => 0,
            Children::Few(v) => v.len(),
            Children::Many(s) => s.len(),
            Children::Frozen(f) => f.len(),
            Children::Layered(l) => l.frozen.len() + l.added.len() - l.removed.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds `name`; false if it was already there. A frozen list (in the snapshot file) is
    /// not searched: the tree adds only names it has checked are new, and reading the file
    /// to check again would cost page faults on every create under a large frozen parent.
    pub fn insert(&mut self, name: Arc<str>) -> bool {
        match self {
            Children::Empty => {
                *self = Children::Few(vec![name]);
                true
            }
            Children::Few(v) => match v.binary_search(&name) {
                Ok(_) => false,
                Err(at) => {
                    if v.len() < FEW_CHILDREN_MAX {
                        v.insert(at, name);
                    } else {
                        let mut set: im::OrdSet<Arc<str>> = v.drain(..).collect();
                        set.insert(name);
                        *self = Children::Many(set);
                    }
                    true
                }
            },
            Children::Many(s) => s.insert(name).is_none(),
            Children::Frozen(f) => {
                debug_assert!(!f.contains(&name), "the tree adds only new names");
                let mut layered = Layered {
                    frozen: f.clone(),
                    added: im::OrdSet::new(),
                    removed: im::OrdSet::new(),
                };
                layered.added.insert(name);
                *self = Children::Layered(Box::new(layered));
                true
            }
            Children::Layered(l) => {
                if l.removed.remove(&name).is_some() {
                    true
                } else {
                    debug_assert!(!l.frozen.contains(&name), "the tree adds only new names");
                    l.added.insert(name).is_none()
                }
            }
        }
    }

    /// Removes `name`; false if it was not there (for a frozen list the tree's word is taken,
    /// as for `insert`).
    pub fn remove(&mut self, name: &str) -> bool {
        let removed = match self {
            Children::Empty => false,
            Children::Few(v) => match v.binary_search_by(|c| (**c).cmp(name)) {
                Ok(at) => {
                    v.remove(at);
                    true
                }
                Err(_) => false,
            },
            Children::Many(s) => s.remove(name).is_some(),
            Children::Frozen(f) => {
                debug_assert!(f.contains(name), "the tree removes only present names");
                let mut layered = Layered {
                    frozen: f.clone(),
                    added: im::OrdSet::new(),
                    removed: im::OrdSet::new(),
                };
                layered.removed.insert(Arc::from(name));
                *self = Children::Layered(Box::new(layered));
                true
            }
            Children::Layered(l) => {
                if l.added.remove(name).is_some() {
                    true
                } else {
                    debug_assert!(
                        l.frozen.contains(name),
                        "the tree removes only present names"
                    );
                    l.removed.insert(Arc::from(name)).is_none()
                }
            }
        };
        if removed && self.is_empty() {
            *self = Children::Empty;
        }
        removed
    }

    /// The children in path order, as a snapshot writer finds them: a child still listed in
    /// `frozen` by its record offset (no path copied, no lookup), any other by its path.
    pub fn sources(&self, frozen: Option<&Arc<FrozenTree>>) -> Vec<ChildSource> {
        let in_file = |f: &FrozenChildren| frozen.is_some_and(|t| f.is_in(t));
        match self {
            Children::Few(v) => v.iter().cloned().map(ChildSource::Named).collect(),
            Children::Many(s) => s.iter().cloned().map(ChildSource::Named).collect(),
            Children::Frozen(f) if in_file(f) => (0..f.len())
                .map(|i| ChildSource::Record(f.offset(i)))
                .collect(),
            Children::Layered(l) if in_file(&l.frozen) => {
                let mut out = Vec::with_capacity(self.len());
                let mut added = l.added.iter().peekable();
                let mut removed = l.removed.iter().peekable();
                for i in 0..l.frozen.len() {
                    if added.peek().is_none() && removed.peek().is_none() {
                        out.extend(
                            (i..l.frozen.len()).map(|i| ChildSource::Record(l.frozen.offset(i))),
                        );
                        break;
                    }
                    let p = l.frozen.path_bytes(i);
                    while let Some(a) = added.next_if(|a| a.as_bytes() < p) {
                        out.push(ChildSource::Named(a.clone()));
                    }
                    if removed.next_if(|r| r.as_bytes() == p).is_none() {
                        out.push(ChildSource::Record(l.frozen.offset(i)));
                    }
                }
                out.extend(added.cloned().map(ChildSource::Named));
                out
            }
            _ => self
                .iter()
                .map(|p| ChildSource::Named(Arc::from(p)))
                .collect(),
        }
    }

    /// The children's full paths, in path order.
    pub fn iter(&self) -> ChildrenIter<'_> {
        match self {
            Children::Empty => ChildrenIter::Few([].iter()),
            Children::Few(v) => ChildrenIter::Few(v.iter()),
            Children::Many(s) => ChildrenIter::Many(s.iter()),
            Children::Frozen(f) => ChildrenIter::Frozen(f, 0),
            Children::Layered(l) => ChildrenIter::Layered {
                frozen: &l.frozen,
                frozen_next: 0,
                added: l.added.iter().peekable(),
                removed: l.removed.iter().peekable(),
            },
        }
    }
}

/// One child as [`Children::sources`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildSource {
    /// Known by its full path (in the overlay, or looked up).
    Named(Arc<str>),
    /// Still listed by its frozen parent: the record offset in the frozen file.
    Record(usize),
}

pub enum ChildrenIter<'a> {
    Few(std::slice::Iter<'a, Arc<str>>),
    Many(im::ordset::Iter<'a, Arc<str>>),
    Frozen(&'a FrozenChildren, usize),
    /// A merge of the frozen list (less the removed names) with the added names.
    Layered {
        frozen: &'a FrozenChildren,
        frozen_next: usize,
        added: std::iter::Peekable<im::ordset::Iter<'a, Arc<str>>>,
        /// Walked alongside the frozen list (every removed name is in it, in the same order),
        /// so skipping the removed names costs no search.
        removed: std::iter::Peekable<im::ordset::Iter<'a, Arc<str>>>,
    },
}

impl<'a> Iterator for ChildrenIter<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            ChildrenIter::Few(i) => i.next().map(|s| &**s),
            ChildrenIter::Many(i) => i.next().map(|s| &**s),
            ChildrenIter::Frozen(f, next) => {
                if *next == f.len() {
                    return None;
                }
                *next += 1;
                Some(f.path(*next - 1))
            }
            ChildrenIter::Layered {
                frozen,
                frozen_next,
                added,
                removed,
            } => {
                while *frozen_next < frozen.len()
                    && removed
                        .next_if(|r| ***r == *frozen.path(*frozen_next))
                        .is_some()
                {
                    *frozen_next += 1;
                }
                let from_frozen = (*frozen_next < frozen.len()).then(|| frozen.path(*frozen_next));
                match (from_frozen, added.peek()) {
                    (Some(f), Some(a)) if &***a < f => added.next().map(|s| &**s),
                    (Some(f), _) => {
                        *frozen_next += 1;
                        Some(f)
                    }
                    (None, _) => added.next().map(|s| &**s),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_from_empty_to_many_and_back() {
        let mut c = Children::default();
        for i in 0..100 {
            assert!(c.insert(Arc::from(format!("n{i:03}"))));
        }
        assert!(matches!(c, Children::Many(_)));
        assert!(!c.insert(Arc::from("n005")));
        assert_eq!(c.len(), 100);
        let names: Vec<String> = c.iter().map(|s| s.to_string()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        for i in 0..100 {
            assert!(c.remove(&format!("n{i:03}")));
        }
        assert!(matches!(c, Children::Empty));
        assert!(!c.remove("n000"));
    }

    #[test]
    fn few_children_stay_sorted() {
        let mut c = Children::default();
        for name in ["b", "a", "c"] {
            c.insert(Arc::from(name));
        }
        let names: Vec<&str> = c.iter().collect();
        assert_eq!(names, vec!["a", "b", "c"]);
        assert!(matches!(c, Children::Few(_)));
    }
}
