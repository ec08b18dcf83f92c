//! The subscription index of one shard: which subscriptions match a subject.
//!
//! Owns: literal filters (an exact-match hash map, for the subjects this shard owns) and
//! wildcard filters (a token trie, present in every shard), plus the interning of queue
//! group names into small integers.
//!
//! Matching walks the trie once per publish and calls back with each matching list; it
//! allocates nothing. Subscribing and unsubscribing are rare and may allocate.
//!
//! Never: decides who gets a message (that is the shard's job: echo, queue groups), and
//! never touches a connection.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::ops::ControlFlow;

use bytes::Bytes;
use tern_protocol::subject;

use crate::mesh::SubRef;

/// A fast, deterministic hasher for subjects: FNV-1a, then the MurmurHash3 64-bit
/// finaliser. Plain FNV-1a's low bits are weak (its lowest bit is the parity of the bytes'
/// lowest bits), and both the shard choice (`% N`) and hash-map buckets use the low bits;
/// the finaliser spreads every input bit over all of them. The index is keyed by subjects a
/// client chose, but a shard holds them only for its own clients, and a collision attack
/// costs the attacker's own shard; speed on the publish path wins.
#[derive(Default, Clone, Copy)]
pub(crate) struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

pub(crate) type FnvMap<K, V> = HashMap<K, V, BuildHasherDefault<Fnv>>;

/// Which shard owns a literal subject: the [`Fnv`] hash of its bytes (FNV-1a, finalised),
/// modulo the shard count.
/// Stable across runs and releases, so tests and tools can compute it.
pub fn shard_for(subject: &[u8], shards: usize) -> usize {
    use std::hash::Hasher;
    let mut h = Fnv::default();
    h.write(subject);
    (h.finish() % shards as u64) as usize
}

/// An interned queue group name.
pub(crate) type QueueId = u32;

/// The subscriptions of one filter.
#[derive(Debug, Default)]
pub(crate) struct SubList {
    pub plain: Vec<SubRef>,
    pub queued: Vec<(QueueId, SubRef)>,
}

impl SubList {
    fn is_empty(&self) -> bool {
        self.plain.is_empty() && self.queued.is_empty()
    }

    fn insert(&mut self, queue: Option<QueueId>, sub: SubRef) {
        match queue {
            None => self.plain.push(sub),
            Some(q) => self.queued.push((q, sub)),
        }
    }

    /// Removes `sub`. `None` when it was not there, else its queue group, if any.
    fn remove(&mut self, sub: &SubRef) -> Option<Option<QueueId>> {
        if let Some(i) = self.plain.iter().position(|s| s == sub) {
            self.plain.swap_remove(i);
            return Some(None);
        }
        if let Some(i) = self.queued.iter().position(|(_, s)| s == sub) {
            let (q, _) = self.queued.swap_remove(i);
            return Some(Some(q));
        }
        None
    }
}

/// A trie node: one token of a wildcard filter.
#[derive(Debug, Default)]
struct Node {
    children: FnvMap<Bytes, Node>,
    star: Option<Box<Node>>,
    /// Filters that end at this node.
    here: SubList,
    /// Filters that end with `>` after this node.
    tail: SubList,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.star.is_none()
            && self.here.is_empty()
            && self.tail.is_empty()
    }
}

/// The index of one shard.
#[derive(Debug, Default)]
pub(crate) struct Index {
    literal: FnvMap<Bytes, SubList>,
    wild: Node,
    /// Queue group names in use, and by id: the name and how many subscriptions use it.
    /// An id is freed (and reused) when its last subscription goes, so distinct names
    /// over a long run do not grow the index.
    queue_ids: FnvMap<Bytes, QueueId>,
    queue_slots: Vec<Option<(Bytes, u32)>>,
    free_queue_ids: Vec<QueueId>,
    subscriptions: usize,
}

impl Index {
    /// Number of subscriptions held (wildcards count once per shard).
    pub fn len(&self) -> usize {
        self.subscriptions
    }

    /// Number of literal filters with at least one subscription.
    pub fn literal_subjects(&self) -> usize {
        self.literal.len()
    }

    /// Queue group names, indexed by their id. Allocates: for monitoring only.
    pub fn queue_names(&self) -> Vec<Bytes> {
        self.queue_slots
            .iter()
            .map(|slot| {
                slot.as_ref()
                    .map(|(name, _)| name.clone())
                    .unwrap_or_default()
            })
            .collect()
    }

    /// Calls `f` with every filter held and its subscriptions: literal filters first,
    /// then the trie's. Allocates: for monitoring only, never on the publish path.
    /// (The monitor now pages with [`Index::visit_filters`]; only tests walk everything.)
    #[cfg(test)]
    pub fn for_each_filter(&self, mut f: impl FnMut(&[u8], &SubList)) {
        for (filter, list) in &self.literal {
            f(filter, list);
        }
        let mut path = Vec::new();
        each_wild(&self.wild, &mut path, &mut f);
    }

    /// Calls `f` with the filters held, one at a time, until `f` breaks or none is left.
    ///
    /// Contract: the order depends only on what the index holds (two walks with no change
    /// in between see the same sequence), literal filters first, then the trie's; each
    /// filter is seen once. The walk is iterative (an explicit stack as deep as the longest
    /// filter, no recursion) and stops as soon as `f` breaks, so finding the `n`th filter
    /// costs about `n` visits (times the filters' depth), never a walk of the whole index.
    /// Allocates only the path buffer and the stack: for monitoring, never on the publish
    /// path.
    pub fn visit_filters(&self, mut f: impl FnMut(&[u8], &SubList) -> ControlFlow<()>) {
        for (filter, list) in &self.literal {
            if f(filter, list).is_break() {
                return;
            }
        }
        /// A trie node being walked: its children not yet visited, whether its `*` child
        /// is still to come, and where its own path ends in `path`.
        struct Frame<'a> {
            children: std::collections::hash_map::Iter<'a, Bytes, Node>,
            star: Option<&'a Node>,
            len: usize,
        }
        /// Reports a node's own lists (`here` at its path, `tail` at its path + `.>`).
        fn lists(
            node: &Node,
            path: &mut Vec<u8>,
            f: &mut impl FnMut(&[u8], &SubList) -> ControlFlow<()>,
        ) -> ControlFlow<()> {
            if !node.here.is_empty() {
                f(path, &node.here)?;
            }
            if !node.tail.is_empty() {
                let len = push_token(path, b">");
                f(path, &node.tail)?;
                path.truncate(len);
            }
            ControlFlow::Continue(())
        }
        let mut path = Vec::new();
        if lists(&self.wild, &mut path, &mut f).is_break() {
            return;
        }
        let mut stack = vec![Frame {
            children: self.wild.children.iter(),
            star: self.wild.star.as_deref(),
            len: 0,
        }];
        while let Some(top) = stack.last_mut() {
            let next = match top.children.next() {
                Some((tok, child)) => Some((tok.as_ref(), child)),
                None => top.star.take().map(|star| (&b"*"[..], star)),
            };
            let Some((tok, child)) = next else {
                stack.pop();
                continue;
            };
            path.truncate(top.len);
            push_token(&mut path, tok);
            if lists(child, &mut path, &mut f).is_break() {
                return;
            }
            stack.push(Frame {
                children: child.children.iter(),
                star: child.star.as_deref(),
                len: path.len(),
            });
        }
    }

    /// The id of a queue group name for one more subscription, interning it on first use.
    fn acquire_queue(&mut self, name: &Bytes) -> QueueId {
        if let Some(&id) = self.queue_ids.get(name) {
            if let Some((_, refs)) = &mut self.queue_slots[id as usize] {
                *refs += 1;
            }
            return id;
        }
        let id = match self.free_queue_ids.pop() {
            Some(id) => id,
            None => {
                self.queue_slots.push(None);
                (self.queue_slots.len() - 1) as QueueId
            }
        };
        self.queue_slots[id as usize] = Some((name.clone(), 1));
        self.queue_ids.insert(name.clone(), id);
        id
    }

    /// One subscription of queue group `id` is gone; frees the id with the last one.
    fn release_queue(&mut self, id: QueueId) {
        let slot = &mut self.queue_slots[id as usize];
        if let Some((name, refs)) = slot {
            *refs -= 1;
            if *refs == 0 {
                self.queue_ids.remove(name);
                *slot = None;
                self.free_queue_ids.push(id);
            }
        }
    }

    /// One more than the largest queue group id in use (ids are reused, so this stays
    /// at the most groups ever in use at once).
    pub fn queue_count(&self) -> usize {
        self.queue_slots.len()
    }

    /// Adds a subscription. `filter` is valid (checked by the codec).
    pub fn insert(&mut self, filter: &Bytes, queue: Option<&Bytes>, sub: SubRef) {
        let queue = queue.map(|q| self.acquire_queue(q));
        self.subscriptions += 1;
        if subject::is_literal(filter) {
            self.literal
                .entry(filter.clone())
                .or_default()
                .insert(queue, sub);
            return;
        }
        let mut node = &mut self.wild;
        let mut tokens = subject::tokens(filter).peekable();
        while let Some(tok) = tokens.next() {
            if tok == b">" && tokens.peek().is_none() {
                node.tail.insert(queue, sub);
                return;
            }
            node = if tok == b"*" {
                node.star.get_or_insert_with(Default::default)
            } else {
                node.children.entry(filter.slice_ref(tok)).or_default()
            };
        }
        node.here.insert(queue, sub);
    }

    /// Removes a subscription; true when it was there.
    pub fn remove(&mut self, filter: &[u8], sub: &SubRef) -> bool {
        let removed = if subject::is_literal(filter) {
            match self.literal.get_mut(filter) {
                Some(list) => {
                    let removed = list.remove(sub);
                    if list.is_empty() {
                        self.literal.remove(filter);
                    }
                    removed
                }
                None => None,
            }
        } else {
            let tokens: Vec<&[u8]> = subject::tokens(filter).collect();
            remove_wild(&mut self.wild, &tokens, sub)
        };
        match removed {
            Some(queue) => {
                self.subscriptions -= 1;
                if let Some(q) = queue {
                    self.release_queue(q);
                }
                true
            }
            None => false,
        }
    }

    /// Calls `f` with every list whose filter matches the literal `subject`.
    pub fn for_each_match(&self, subject: &[u8], mut f: impl FnMut(&SubList)) {
        if let Some(list) = self.literal.get(subject) {
            f(list);
        }
        walk(&self.wild, Some(subject), &mut f);
    }
}

/// Splits off the first token: (token, rest), rest `None` when it was the last.
fn split_token(subject: &[u8]) -> (&[u8], Option<&[u8]>) {
    match subject.iter().position(|b| *b == b'.') {
        Some(i) => (&subject[..i], Some(&subject[i + 1..])),
        None => (subject, None),
    }
}

fn walk(node: &Node, rest: Option<&[u8]>, f: &mut impl FnMut(&SubList)) {
    let Some(rest) = rest else {
        if !node.here.is_empty() {
            f(&node.here);
        }
        return;
    };
    if !node.tail.is_empty() {
        f(&node.tail);
    }
    let (tok, next) = split_token(rest);
    if let Some(child) = node.children.get(tok) {
        walk(child, next, f);
    }
    if let Some(star) = &node.star {
        walk(star, next, f);
    }
}

/// Appends `tok` to a filter path (with a `.` unless it is the first token); returns the
/// length before, to truncate back to.
fn push_token(path: &mut Vec<u8>, tok: &[u8]) -> usize {
    let len = path.len();
    if len > 0 {
        path.push(b'.');
    }
    path.extend_from_slice(tok);
    len
}

/// Visits every list below `node`; `path` is the filter so far (tokens joined by `.`).
#[cfg(test)]
fn each_wild(node: &Node, path: &mut Vec<u8>, f: &mut impl FnMut(&[u8], &SubList)) {
    let with = |path: &mut Vec<u8>, tok: &[u8]| {
        let len = path.len();
        if len > 0 {
            path.push(b'.');
        }
        path.extend_from_slice(tok);
        len
    };
    if !node.here.is_empty() {
        f(path, &node.here);
    }
    if !node.tail.is_empty() {
        let len = with(path, b">");
        f(path, &node.tail);
        path.truncate(len);
    }
    for (tok, child) in &node.children {
        let len = with(path, tok);
        each_wild(child, path, f);
        path.truncate(len);
    }
    if let Some(star) = &node.star {
        let len = with(path, b"*");
        each_wild(star, path, f);
        path.truncate(len);
    }
}

/// Removes `sub` below `node` along `tokens`, pruning nodes left empty.
fn remove_wild(node: &mut Node, tokens: &[&[u8]], sub: &SubRef) -> Option<Option<QueueId>> {
    let Some((tok, rest)) = tokens.split_first() else {
        return node.here.remove(sub);
    };
    if *tok == b">" && rest.is_empty() {
        return node.tail.remove(sub);
    }
    if *tok == b"*" {
        let star = node.star.as_mut()?;
        let removed = remove_wild(star, rest, sub);
        if star.is_empty() {
            node.star = None;
        }
        return removed;
    }
    let child = node.children.get_mut(*tok)?;
    let removed = remove_wild(child, rest, sub);
    if child.is_empty() {
        node.children.remove(*tok);
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::ConnId;

    fn sub(id: u64) -> SubRef {
        SubRef {
            conn: ConnId {
                worker: 0,
                slot: 0,
                gen: 0,
            },
            key: 0,
            id,
        }
    }

    fn matching(index: &Index, subject: &str) -> Vec<u64> {
        let mut ids = Vec::new();
        index.for_each_match(subject.as_bytes(), |l| {
            ids.extend(l.plain.iter().map(|s| s.id));
            ids.extend(l.queued.iter().map(|(_, s)| s.id));
        });
        ids.sort();
        ids
    }

    #[test]
    fn literal_and_wildcards() {
        let mut ix = Index::default();
        let filters = ["a.b.c", "a.*.c", "a.>", "*.b.*", ">", "a.b", "a.*.*.>"];
        for (i, f) in filters.iter().enumerate() {
            ix.insert(&Bytes::from(*f), None, sub(i as u64));
        }
        assert_eq!(matching(&ix, "a.b.c"), vec![0, 1, 2, 3, 4]);
        assert_eq!(matching(&ix, "a.b"), vec![2, 4, 5]);
        assert_eq!(matching(&ix, "a"), vec![4]);
        assert_eq!(matching(&ix, "a.b.c.d"), vec![2, 4, 6]);
        assert_eq!(matching(&ix, "x.b.y"), vec![3, 4]);
        assert_eq!(ix.len(), 7);
    }

    #[test]
    fn remove_prunes() {
        let mut ix = Index::default();
        let f = Bytes::from_static(b"a.*.c.>");
        ix.insert(&f, Some(&Bytes::from_static(b"q")), sub(1));
        assert_eq!(matching(&ix, "a.x.c.d"), vec![1]);
        assert!(!ix.remove(b"a.*.c.>", &sub(2)));
        assert!(ix.remove(b"a.*.c.>", &sub(1)));
        assert!(ix.wild.is_empty());
        assert!(!ix.remove(b"x", &sub(1)));
        ix.insert(&Bytes::from_static(b"x"), None, sub(3));
        assert!(ix.remove(b"x", &sub(3)));
        assert!(ix.literal.is_empty());
        assert_eq!(ix.len(), 0);
    }

    #[test]
    fn for_each_filter_lists_every_filter_once() {
        let mut ix = Index::default();
        let q = Bytes::from_static(b"workers");
        for (i, f) in [">", "a", "a.>", "a.*", "a.*.c", "a.b.c", "a.b.c"]
            .into_iter()
            .enumerate()
        {
            ix.insert(&Bytes::from_static(f.as_bytes()), None, sub(i as u64));
        }
        ix.insert(&Bytes::from_static(b"a.*"), Some(&q), sub(9));
        let mut seen = Vec::new();
        ix.for_each_filter(|f, list| {
            seen.push((
                String::from_utf8(f.to_vec()).unwrap(),
                list.plain.len(),
                list.queued.len(),
            ))
        });
        seen.sort();
        let want: Vec<(String, usize, usize)> = [
            ("a", 1, 0),
            ("a.*", 1, 1),
            ("a.*.c", 1, 0),
            ("a.>", 1, 0),
            ("a.b.c", 2, 0),
            (">", 1, 0),
        ]
        .into_iter()
        .map(|(f, p, q)| (f.to_string(), p, q))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
        assert_eq!(seen, want);
        assert_eq!(ix.queue_names(), vec![q]);
        assert_eq!(ix.literal_subjects(), 2);
    }

    #[test]
    fn visit_filters_sees_what_for_each_filter_sees_and_stops_when_told() {
        let mut ix = Index::default();
        let filters = [
            ">", "a", "a.>", "a.*", "a.*.c", "a.b.c", "*.*", "*.b.>", "x.y.z.*", "x.y",
        ];
        for (i, f) in filters.into_iter().enumerate() {
            ix.insert(&Bytes::from_static(f.as_bytes()), None, sub(i as u64));
        }
        let mut all = Vec::new();
        ix.for_each_filter(|f, _| all.push(f.to_vec()));
        let mut seen = Vec::new();
        ix.visit_filters(|f, _| {
            seen.push(f.to_vec());
            ControlFlow::Continue(())
        });
        let (mut a, mut b) = (all.clone(), seen.clone());
        a.sort();
        b.sort();
        assert_eq!(a, b, "the same filters, each once");
        assert_eq!(b.len(), filters.len());
        let mut again = Vec::new();
        ix.visit_filters(|f, _| {
            again.push(f.to_vec());
            ControlFlow::Continue(())
        });
        assert_eq!(again, seen, "the same order without a change in between");
        for stop in 0..seen.len() {
            let mut prefix = Vec::new();
            ix.visit_filters(|f, _| {
                prefix.push(f.to_vec());
                if prefix.len() > stop {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            });
            assert_eq!(
                prefix,
                seen[..=stop],
                "stops right after the filter that broke"
            );
        }
    }

    #[test]
    fn queue_ids_are_freed_with_their_last_subscription() {
        let mut ix = Index::default();
        let f = Bytes::from_static(b"work.*");
        for round in 0..100u64 {
            let name = Bytes::from(format!("group-{round}"));
            ix.insert(&f, Some(&name), sub(round));
            ix.insert(
                &Bytes::from_static(b"work.x"),
                Some(&name),
                sub(1000 + round),
            );
            assert!(ix.remove(b"work.*", &sub(round)));
            assert!(ix.remove(b"work.x", &sub(1000 + round)));
        }
        assert_eq!(ix.queue_count(), 1, "one id, reused by every round");
        assert!(ix.queue_ids.is_empty());
        let a = Bytes::from_static(b"a");
        ix.insert(&f, Some(&a), sub(1));
        ix.insert(&f, Some(&a), sub(2));
        assert!(ix.remove(b"work.*", &sub(1)));
        assert_eq!(ix.queue_names(), vec![a.clone()], "still used by sub 2");
    }

    #[test]
    fn shard_for_is_stable() {
        // FNV-1a 64 of "foo" is 0xdcb27518fed9d577; finalised, 0xaf85ea5569581d4c.
        assert_eq!(shard_for(b"foo", 1 << 16), 0x1d4c);
        for n in 1..8 {
            assert!(shard_for(b"anything", n) < n);
        }
        // Subjects that differ only in bytes of equal parity still spread over 2 shards
        // (plain FNV-1a would put them all on one).
        let on_zero = (0..64)
            .filter(|i| shard_for(format!("wc.m{i}.m{i}.z").as_bytes(), 2) == 0)
            .count();
        assert!((16..=48).contains(&on_zero), "{on_zero} of 64 on shard 0");
    }
}
