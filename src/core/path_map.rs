//! The tree's overlay map: a persistent hash map from path to value whose branches hold only
//! the slots in use.
//!
//! It is a hash array mapped trie (Bagwell, "Ideal Hash Trees"), like `im::HashMap`, with the
//! same O(1) clone and copy-on-write of the branches on the way to a change. The difference is
//! the size of a branch. `im` keeps every branch as a fixed array of 32 slots. The overlay holds
//! a snapshot cycle of changed znodes (up to ~100k), so most of its bottom branches hold three
//! or four entries: at 40 bytes a slot, a fixed branch then costs ~1.3 KiB for ~150 bytes of
//! entries, ~350 bytes per znode in all, which was most of the overlay's memory. Here a branch
//! is a bitmap and one shared allocation of the occupied slots, so a znode costs its slot and
//! a share of its branch (~60 bytes), and copying a branch for a change copies (and counts
//! references of) only the slots in use.
//!
//! The bitmap is kept in the parent's slot, beside the pointer to the slots, so a lookup
//! loads one cache line per level. A slot is added or removed by building the branch's new
//! allocation in one go: moving the slots when the branch is not shared, cloning them when it
//! is. So the first change to a branch after a clone (a snapshot or a publication to the
//! shards) copies it once, where a copy followed by a grow copied it twice.
//!
//! Shape: a branch at depth d indexes its slots by bits `5d..5d+5` of the key's 64-bit hash.
//! A slot is an entry (hash, key, value), a deeper branch, or a collision list (keys whose
//! whole hashes are equal, at the depth where they met). Invariants, kept by every change
//! and checked by the tests: a branch other than the root never holds a single entry or a
//! single collision list alone (a removal folds it into its parent), no branch is empty but
//! the root, and a collision list holds at least two keys, all with its hash.

use std::hash::BuildHasher;
use std::sync::Arc;

use crate::core::prefetch::prefetch;

const CHUNK_BITS: u32 = 5;
const CHUNK_MASK: u64 = (1 << CHUNK_BITS) - 1;

pub struct PathMap<V: DropHint, S = ahash::RandomState> {
    root: Branch<V>,
    len: usize,
    hasher: S,
}

/// A branch: which chunk values are present, and their slots in one shared allocation. The
/// bitmap sits in the parent's slot, next to the pointer, so a lookup touches one new cache
/// line per level (the slot it follows) instead of two (a branch header, then its slots).
struct Branch<V: DropHint> {
    /// Bit i set: the slot for chunk value i is present, at index popcount(bits below i).
    bitmap: u32,
    slots: Arc<[Slot<V>]>,
}

/// What a map's values let it know before they are dropped: freeing a large map is a walk
/// over memory no one has touched for a while, one cache miss after another, unless the
/// next misses are started early.
pub trait DropHint {
    /// Starts loading what dropping this value will touch first.
    fn prefetch_for_drop(&self) {}
    /// Called after `prefetch_for_drop` on the other values of the same branch (so this
    /// value's own memory has had time to arrive): starts loading what it points to.
    fn prefetch_deeper(&self) {}
}

impl<V: DropHint> Drop for Branch<V> {
    /// The last owner of a branch's slots frees them and what they own: start loading all
    /// of it first, so that the misses overlap instead of coming one after another. Each
    /// deeper branch does the same for its own slots when its turn comes.
    fn drop(&mut self) {
        let Some(slots) = Arc::get_mut(&mut self.slots) else {
            return;
        };
        for slot in slots.iter() {
            match slot {
                Slot::Entry(e) => {
                    prefetch(Arc::as_ptr(&e.key));
                    e.value.prefetch_for_drop();
                }
                Slot::Branch(b) => prefetch(Arc::as_ptr(&b.slots)),
                Slot::Collision(c) => prefetch(Arc::as_ptr(c)),
                Slot::Vacant => {}
            }
        }
        for slot in slots.iter() {
            if let Slot::Entry(e) = slot {
                e.value.prefetch_deeper();
            }
        }
    }
}

impl<V: DropHint> Clone for Branch<V> {
    /// Shares the slots (copy-on-write).
    fn clone(&self) -> Self {
        Branch {
            bitmap: self.bitmap,
            slots: self.slots.clone(),
        }
    }
}

#[derive(Clone)]
enum Slot<V: DropHint> {
    Entry(Entry<V>),
    Branch(Branch<V>),
    Collision(Arc<Collision<V>>),
    /// Only ever seen inside a change: what a slot holds between having its content moved
    /// out and being refilled or freed. No branch reachable from a map holds one.
    Vacant,
}

#[derive(Clone)]
struct Entry<V> {
    hash: u64,
    key: Arc<str>,
    value: V,
}

#[derive(Clone)]
struct Collision<V> {
    hash: u64,
    entries: Vec<(Arc<str>, V)>,
}

fn chunk(hash: u64, shift: u32) -> u32 {
    ((hash >> shift) & CHUNK_MASK) as u32
}

fn vacate<V: DropHint>(slot: &mut Slot<V>) -> Slot<V> {
    std::mem::replace(slot, Slot::Vacant)
}

const NOT_IN_A_MAP: &str = "a vacant slot is only seen inside a change";

/// `slots` with `slot` inserted at `at`, in one new allocation. When no other map shares
/// `slots`, their content is moved over; otherwise it is cloned (copy-on-write fused with the
/// insertion, so a shared branch is copied once, not copied and then grown).
fn inserted<V: Clone + DropHint>(slots: &mut Arc<[Slot<V>]>, at: usize, slot: Slot<V>) {
    let fresh = match Arc::get_mut(slots) {
        Some(own) => spliced(own.len(), at, slot, |j| vacate(&mut own[j])),
        None => {
            let shared = &*slots;
            spliced(shared.len(), at, slot, |j| shared[j].clone())
        }
    };
    *slots = fresh;
}

/// The `n + 1` slots `old(0..at)`, `slot`, `old(at..n)`. A map over a range has an exact
/// length, so the collection allocates once.
fn spliced<V: DropHint>(
    n: usize,
    at: usize,
    slot: Slot<V>,
    mut old: impl FnMut(usize) -> Slot<V>,
) -> Arc<[Slot<V>]> {
    let mut slot = Some(slot);
    (0..=n)
        .map(|i| match i.cmp(&at) {
            std::cmp::Ordering::Less => old(i),
            std::cmp::Ordering::Equal => slot.take().expect("inserted once"),
            std::cmp::Ordering::Greater => old(i - 1),
        })
        .collect()
}

/// `slots` without the slot at `at`, which is returned (moved out, or cloned if shared).
fn removed<V: Clone + DropHint>(slots: &mut Arc<[Slot<V>]>, at: usize) -> Slot<V> {
    let n = slots.len();
    let skip = |i: usize| if i < at { i } else { i + 1 };
    let (gone, fresh): (Slot<V>, Arc<[Slot<V>]>) = match Arc::get_mut(slots) {
        Some(own) => (
            vacate(&mut own[at]),
            (0..n - 1).map(|i| vacate(&mut own[skip(i)])).collect(),
        ),
        None => (
            slots[at].clone(),
            (0..n - 1).map(|i| slots[skip(i)].clone()).collect(),
        ),
    };
    *slots = fresh;
    gone
}

impl<V: Clone + DropHint> Branch<V> {
    fn empty() -> Branch<V> {
        Branch {
            bitmap: 0,
            slots: Arc::from([]),
        }
    }

    /// (bit, index) of `hash`'s slot at `shift`.
    fn position(&self, hash: u64, shift: u32) -> (u32, usize) {
        let bit = 1u32 << chunk(hash, shift);
        (bit, (self.bitmap & (bit - 1)).count_ones() as usize)
    }

    fn add(&mut self, bit: u32, at: usize, slot: Slot<V>) {
        self.bitmap |= bit;
        inserted(&mut self.slots, at, slot);
    }

    fn take(&mut self, bit: u32, at: usize) -> Slot<V> {
        self.bitmap &= !bit;
        removed(&mut self.slots, at)
    }

    /// The slots, made unique to this map (copied if shared).
    fn slots_mut(&mut self) -> &mut [Slot<V>] {
        Arc::make_mut(&mut self.slots)
    }

    /// A branch at `shift` holding two slots whose hashes differ (`a` is an entry or a
    /// collision list with hash `a_hash`).
    fn pair(shift: u32, a: Slot<V>, a_hash: u64, b: Entry<V>) -> Branch<V> {
        debug_assert_ne!(a_hash, b.hash);
        let (ca, cb) = (chunk(a_hash, shift), chunk(b.hash, shift));
        if ca == cb {
            let deeper = Branch::pair(shift + CHUNK_BITS, a, a_hash, b);
            return Branch {
                bitmap: 1 << ca,
                slots: Arc::from([Slot::Branch(deeper)]),
            };
        }
        let b = Slot::Entry(b);
        Branch {
            bitmap: (1 << ca) | (1 << cb),
            slots: Arc::from(if ca < cb { [a, b] } else { [b, a] }),
        }
    }
}

impl<V: Clone + DropHint, S: BuildHasher> PathMap<V, S> {
    pub fn with_hasher(hasher: S) -> PathMap<V, S> {
        PathMap {
            root: Branch::empty(),
            len: 0,
            hasher,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, key: &str) -> Option<&V> {
        let hash = self.hasher.hash_one(key);
        let mut branch = &self.root;
        let mut shift = 0;
        loop {
            let (bit, at) = branch.position(hash, shift);
            if branch.bitmap & bit == 0 {
                return None;
            }
            match &branch.slots[at] {
                Slot::Entry(e) => return (e.hash == hash && *e.key == *key).then_some(&e.value),
                Slot::Branch(b) => {
                    branch = b;
                    shift += CHUNK_BITS;
                }
                Slot::Collision(c) => {
                    return c
                        .entries
                        .iter()
                        .find(|(k, _)| c.hash == hash && **k == *key)
                        .map(|(_, v)| v);
                }
                Slot::Vacant => unreachable!("{NOT_IN_A_MAP}"),
            }
        }
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The value at `key`, made unique to this map (its branches copied if shared).
    pub fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        if !self.contains_key(key) {
            return None; // no copying on a miss
        }
        let hash = self.hasher.hash_one(key);
        get_mut_at(&mut self.root, 0, hash, key).map(|(_, v)| v)
    }

    /// The map's key and the value at `key`, made unique to this map, for a key the caller
    /// knows is present (a miss still copies the shared branches on the way).
    pub fn get_entry_mut(&mut self, key: &str) -> Option<(&Arc<str>, &mut V)> {
        let hash = self.hasher.hash_one(key);
        get_mut_at(&mut self.root, 0, hash, key)
    }

    /// Inserts or replaces; returns the value replaced.
    pub fn insert(&mut self, key: Arc<str>, value: V) -> Option<V> {
        let hash = self.hasher.hash_one(&*key);
        let entry = Entry { hash, key, value };
        let replaced = insert_at(&mut self.root, 0, entry);
        if replaced.is_none() {
            self.len += 1;
        }
        replaced
    }

    pub fn remove(&mut self, key: &str) -> Option<V> {
        if !self.contains_key(key) {
            return None; // no copying on a miss
        }
        let hash = self.hasher.hash_one(key);
        let removed = remove_at(&mut self.root, 0, hash, key).expect("present");
        self.len -= 1;
        Some(removed)
    }

    pub fn iter(&self) -> Iter<'_, V> {
        Iter {
            stack: vec![(&self.root, 0)],
            collision: None,
        }
    }

    pub fn keys(&self) -> impl Iterator<Item = &Arc<str>> {
        self.iter().map(|(k, _)| k)
    }
}

fn get_mut_at<'a, V: Clone + DropHint>(
    branch: &'a mut Branch<V>,
    shift: u32,
    hash: u64,
    key: &str,
) -> Option<(&'a Arc<str>, &'a mut V)> {
    let (bit, at) = branch.position(hash, shift);
    if branch.bitmap & bit == 0 {
        return None;
    }
    match &mut branch.slots_mut()[at] {
        Slot::Entry(e) => (e.hash == hash && *e.key == *key).then_some((&e.key, &mut e.value)),
        Slot::Branch(b) => get_mut_at(b, shift + CHUNK_BITS, hash, key),
        Slot::Collision(c) if c.hash == hash => Arc::make_mut(c)
            .entries
            .iter_mut()
            .find(|(k, _)| **k == *key)
            .map(|(k, v)| (&*k, v)),
        Slot::Collision(_) => None,
        Slot::Vacant => unreachable!("{NOT_IN_A_MAP}"),
    }
}

fn insert_at<V: Clone + DropHint>(
    branch: &mut Branch<V>,
    shift: u32,
    entry: Entry<V>,
) -> Option<V> {
    let (bit, at) = branch.position(entry.hash, shift);
    if branch.bitmap & bit == 0 {
        branch.add(bit, at, Slot::Entry(entry));
        return None;
    }
    let slot = &mut branch.slots_mut()[at];
    match slot {
        Slot::Entry(e) if e.hash == entry.hash && e.key == entry.key => {
            return Some(std::mem::replace(&mut e.value, entry.value));
        }
        Slot::Branch(b) => return insert_at(b, shift + CHUNK_BITS, entry),
        Slot::Collision(c) if c.hash == entry.hash => {
            let c = Arc::make_mut(c);
            if let Some((_, v)) = c.entries.iter_mut().find(|(k, _)| *k == entry.key) {
                return Some(std::mem::replace(v, entry.value));
            }
            c.entries.push((entry.key, entry.value));
            return None;
        }
        _ => {}
    }
    // The slot holds another key: an entry with the same whole hash becomes a collision
    // list; anything else moves one level down, next to the new entry.
    *slot = match vacate(slot) {
        Slot::Entry(e) if e.hash == entry.hash => Slot::Collision(Arc::new(Collision {
            hash: e.hash,
            entries: vec![(e.key, e.value), (entry.key, entry.value)],
        })),
        Slot::Entry(e) => {
            let hash = e.hash;
            Slot::Branch(Branch::pair(
                shift + CHUNK_BITS,
                Slot::Entry(e),
                hash,
                entry,
            ))
        }
        Slot::Collision(c) => {
            let hash = c.hash;
            Slot::Branch(Branch::pair(
                shift + CHUNK_BITS,
                Slot::Collision(c),
                hash,
                entry,
            ))
        }
        Slot::Branch(_) => unreachable!("a branch slot was followed above"),
        Slot::Vacant => unreachable!("{NOT_IN_A_MAP}"),
    };
    None
}

/// Removes a key known to be present below `branch`.
fn remove_at<V: Clone + DropHint>(
    branch: &mut Branch<V>,
    shift: u32,
    hash: u64,
    key: &str,
) -> Option<V> {
    let (bit, at) = branch.position(hash, shift);
    if branch.bitmap & bit == 0 {
        return None;
    }
    match &branch.slots[at] {
        Slot::Entry(e) if e.hash == hash && *e.key == *key => {
            return match branch.take(bit, at) {
                Slot::Entry(e) => Some(e.value),
                _ => unreachable!("matched an entry"),
            };
        }
        Slot::Entry(_) => return None,
        _ => {}
    }
    let slot = &mut branch.slots_mut()[at];
    match slot {
        Slot::Branch(b) => {
            let removed = remove_at(b, shift + CHUNK_BITS, hash, key)?;
            // Fold a branch left with one entry or one collision list into this one.
            if b.slots.len() == 1 && !matches!(b.slots[0], Slot::Branch(_)) {
                let only = vacate(&mut b.slots_mut()[0]);
                *slot = only;
            }
            Some(removed)
        }
        Slot::Collision(c) if c.hash == hash => {
            let list = Arc::make_mut(c);
            let i = list.entries.iter().position(|(k, _)| **k == *key)?;
            let (_, value) = list.entries.swap_remove(i);
            if list.entries.len() == 1 {
                let (key, last) = list.entries.pop().expect("one left");
                *slot = Slot::Entry(Entry {
                    hash,
                    key,
                    value: last,
                });
            }
            Some(value)
        }
        Slot::Collision(_) => None,
        Slot::Entry(_) => unreachable!("entries were handled above"),
        Slot::Vacant => unreachable!("{NOT_IN_A_MAP}"),
    }
}

impl<V: DropHint, S: Clone> Clone for PathMap<V, S> {
    /// O(1): the clone shares every branch until one side changes it.
    fn clone(&self) -> Self {
        PathMap {
            root: self.root.clone(),
            len: self.len,
            hasher: self.hasher.clone(),
        }
    }
}

impl<V: DropHint, S> std::fmt::Debug for PathMap<V, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PathMap({} entries)", self.len)
    }
}

/// Every (key, value), in no particular order.
pub struct Iter<'a, V: DropHint> {
    stack: Vec<(&'a Branch<V>, usize)>,
    collision: Option<std::slice::Iter<'a, (Arc<str>, V)>>,
}

impl<'a, V: DropHint> Iterator for Iter<'a, V> {
    type Item = (&'a Arc<str>, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(list) = &mut self.collision {
                if let Some((k, v)) = list.next() {
                    return Some((k, v));
                }
                self.collision = None;
            }
            let (branch, next) = self.stack.last_mut()?;
            let Some(slot) = branch.slots.get(*next) else {
                self.stack.pop();
                continue;
            };
            *next += 1;
            match slot {
                Slot::Entry(e) => return Some((&e.key, &e.value)),
                Slot::Branch(b) => self.stack.push((b, 0)),
                Slot::Collision(c) => self.collision = Some(c.entries.iter()),
                Slot::Vacant => unreachable!("{NOT_IN_A_MAP}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::hash::{BuildHasherDefault, Hasher};

    impl DropHint for u64 {}
    impl DropHint for u32 {}

    /// A hasher that keeps only what the test lets through, to force collisions and deep
    /// branches.
    #[derive(Default, Clone)]
    struct Squeezed<const KEEP: u64, const SHIFT: u32>(u64);

    impl<const KEEP: u64, const SHIFT: u32> Hasher for Squeezed<KEEP, SHIFT> {
        fn finish(&self) -> u64 {
            (self.0 % KEEP) << SHIFT
        }
        fn write(&mut self, bytes: &[u8]) {
            for b in bytes {
                self.0 = self.0.wrapping_mul(131).wrapping_add(u64::from(*b));
            }
        }
    }

    struct Lcg(u64);
    impl Lcg {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
    }

    /// Checks the shape invariants stated in the module comment; returns the entry count.
    fn check_shape<V: DropHint>(branch: &Branch<V>, shift: u32, is_root: bool) -> usize {
        assert_eq!(branch.bitmap.count_ones() as usize, branch.slots.len());
        if !is_root {
            assert!(!branch.slots.is_empty(), "an empty inner branch");
            if branch.slots.len() == 1 {
                assert!(
                    matches!(branch.slots[0], Slot::Branch(_)),
                    "an inner branch with one entry or list"
                );
            }
        }
        let mut count = 0;
        let mut bits = branch.bitmap;
        for slot in branch.slots.iter() {
            let c = bits.trailing_zeros();
            bits &= bits - 1;
            match slot {
                Slot::Entry(e) => {
                    assert_eq!(chunk(e.hash, shift), c);
                    count += 1;
                }
                Slot::Branch(b) => count += check_shape(b, shift + CHUNK_BITS, false),
                Slot::Collision(l) => {
                    assert_eq!(chunk(l.hash, shift), c);
                    assert!(l.entries.len() >= 2, "a collision list of one");
                    count += l.entries.len();
                }
                Slot::Vacant => panic!("a vacant slot in a map"),
            }
        }
        count
    }

    /// Random inserts, replacements, removals and in-place changes agree with a HashMap, and
    /// clones taken along the way never change (persistence), whatever the hash spread.
    fn model_check<S: BuildHasher + Clone>(hasher: S, seed: u64, keys: u64) {
        let mut rng = Lcg(seed);
        let mut map: PathMap<u64, S> = PathMap::with_hasher(hasher);
        let mut model: HashMap<String, u64> = HashMap::new();
        let mut saved: Vec<(PathMap<u64, S>, HashMap<String, u64>)> = Vec::new();
        for step in 0..6_000u64 {
            let key = format!("/k/{}", rng.below(keys));
            match rng.below(10) {
                0..=4 => {
                    assert_eq!(
                        map.insert(Arc::from(key.as_str()), step),
                        model.insert(key, step)
                    );
                }
                5..=7 => assert_eq!(map.remove(&key), model.remove(&key), "{key}"),
                _ => {
                    if let Some(v) = map.get_mut(&key) {
                        *v += 1_000_000;
                    }
                    if let Some(v) = model.get_mut(&key) {
                        *v += 1_000_000;
                    }
                }
            }
            assert_eq!(map.len(), model.len());
            if step % 500 == 0 {
                saved.push((map.clone(), model.clone()));
            }
        }
        saved.push((map, model));
        for (map, model) in &saved {
            assert_eq!(check_shape(&map.root, 0, true), model.len());
            for (k, v) in model {
                assert_eq!(map.get(k), Some(v), "{k}");
            }
            for i in 0..keys {
                let k = format!("/k/{i}");
                assert_eq!(map.contains_key(&k), model.contains_key(&k));
            }
            let mut seen: Vec<(String, u64)> =
                map.iter().map(|(k, v)| (k.to_string(), *v)).collect();
            seen.sort();
            let mut expected: Vec<(String, u64)> =
                model.iter().map(|(k, v)| (k.clone(), *v)).collect();
            expected.sort();
            assert_eq!(seen, expected);
        }
    }

    #[test]
    fn agrees_with_a_hash_map_and_clones_never_change() {
        for seed in 1..=4 {
            model_check(ahash::RandomState::new(), seed, 3_000);
        }
    }

    #[test]
    fn whole_hash_collisions_are_kept_apart() {
        // Seven distinct hashes for 400 keys: long collision lists, split and folded.
        model_check(BuildHasherDefault::<Squeezed<7, 0>>::default(), 5, 400);
    }

    #[test]
    fn hashes_that_differ_only_in_the_top_bits_branch_to_the_last_level() {
        // Hashes k << 60 share every chunk but the last (4 bits): 13 levels deep.
        model_check(BuildHasherDefault::<Squeezed<16, 60>>::default(), 6, 200);
        model_check(
            BuildHasherDefault::<Squeezed<1024, 54>>::default(),
            7,
            3_000,
        );
    }

    #[test]
    fn a_miss_copies_nothing() {
        let mut map: PathMap<u32> = PathMap::with_hasher(ahash::RandomState::new());
        for i in 0..100 {
            map.insert(Arc::from(format!("/n{i}")), i);
        }
        let published = map.clone();
        assert_eq!(map.remove("/absent"), None);
        assert!(map.get_mut("/absent").is_none());
        assert!(Arc::ptr_eq(&map.root.slots, &published.root.slots));
        *map.get_mut("/n5").unwrap() = 500;
        assert!(!Arc::ptr_eq(&map.root.slots, &published.root.slots));
        assert_eq!(published.get("/n5"), Some(&5));
        assert_eq!(map.get("/n5"), Some(&500));
    }
}
