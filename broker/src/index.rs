//! The subscription index of one shard: which subscriptions match a subject.
//!
//! Owns: literal filters (an exact-match hash map) and wildcard filters (a token trie),
//! every subscription on the broker (each shard holds all of them), plus the interning of
//! queue group names into small integers.
//!
//! Contract:
//! - Matching walks the trie once per publish and calls back with each matching list; it
//!   allocates nothing (its stack is kept from one publish to the next). Subscribing and
//!   unsubscribing are rare and may allocate.
//! - No walk recurses: matching, inserting, removing, listing and dropping take the same
//!   stack space for a filter of 100,000 tokens as for one of three. The decoders cap
//!   tokens per subject (`max_subject_tokens`), but the index does not rely on it.
//! - Memory is linear in what is held, with small constants: a trie node is 48 bytes in
//!   one arena (its literal children inline while it has one, in a list up to
//!   [`LIST_MAX`], in a map beyond), its token is copied inline when short (up to
//!   [`INLINE_TOKEN`] bytes), and only a node where filters end boxes their lists. A
//!   wildcard filter's tokens are copied into the trie; the caller's `Bytes` is kept only
//!   as a literal filter's key (the connection hands over a copy of its own, never a slice
//!   of its read buffer, which would keep the whole buffer alive).
//! - Removing a subscription costs O(1) whatever the length of its filter's list, which
//!   stays one contiguous slice for the publish path to iterate ([`Roster`]).
//!
//! Never: decides who gets a message (that is the shard's job: echo, queue groups), and
//! never touches a connection.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash};
use std::ops::ControlFlow;

use bytes::Bytes;
use slab::Slab;
use tern_protocol::subject;

use crate::mesh::SubRef;
/// A fast, deterministic hasher for subjects (and the broker's other in-process maps):
/// sixteen bytes at a time, each pair of words folded in by one 64×64→128-bit multiply
/// (the high half xored onto the low: every input bit reaches every output bit), the
/// length added first, one more fold at the end. A 20-byte subject costs three multiplies,
/// where the word-at-a-time hash it replaced (a multiply and a rotation per eight bytes,
/// one more for the length, then the MurmurHash3 finaliser's two) cost six in a dependent
/// chain: the index's lookup was 4 % of a 16-byte publish. (Before that it was FNV-1a, a
/// byte at a time.) The index is keyed by subject tokens a client chose and is not seeded,
/// so tokens crafted to collide would slow the lookups of every shard (each holds every
/// subscription); the bounds on tokens per filter, subscriptions per connection and in all
/// keep what one client can add small, and speed on the publish path wins. Nothing
/// persisted depends on it.
#[derive(Default, Clone, Copy)]
pub(crate) struct FastHasher(u64);

/// Constants xored into the multiplicands (the digits of pi): arbitrary, odd-looking bits
/// so that short or zero inputs do not multiply by zero.
const HASH_K0: u64 = 0x243f_6a88_85a3_08d3;
const HASH_K1: u64 = 0x1319_8a2e_0370_7344;
const HASH_K2: u64 = 0xa409_3822_299f_31d0;

/// The folded multiply: the 128-bit product's two halves xored.
#[inline]
fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

#[inline]
fn word(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[..8]);
    u64::from_le_bytes(w)
}

#[inline]
fn half(b: &[u8]) -> u64 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[..4]);
    u64::from(u32::from_le_bytes(w))
}

impl std::hash::Hasher for FastHasher {
    #[inline]
    fn finish(&self) -> u64 {
        fold(self.0 ^ HASH_K0, HASH_K2)
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut h = self.0.wrapping_add(bytes.len() as u64);
        let mut rest = bytes;
        while rest.len() > 16 {
            h = fold(word(rest) ^ h ^ HASH_K1, word(&rest[8..]) ^ HASH_K2);
            rest = &rest[16..];
        }
        // The last 1 to 16 bytes as two words, overlapping when fewer than 16 (the length,
        // added above, tells apart inputs whose words would then be equal).
        let n = rest.len();
        let (a, b) = if n >= 8 {
            (word(rest), word(&rest[n - 8..]))
        } else if n >= 4 {
            (half(rest), half(&rest[n - 4..]))
        } else if n > 0 {
            let (x, y, z) = (rest[0], rest[n / 2], rest[n - 1]);
            (u64::from(x) << 16 | u64::from(y) << 8 | u64::from(z), 0)
        } else {
            (0, 0)
        };
        self.0 = fold(a ^ h ^ HASH_K1, b ^ HASH_K2);
    }

    /// A slice's length prefix: `write` adds the length itself.
    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.0 = self.0.wrapping_add((n as u64).rotate_left(32));
    }
}

pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;
pub(crate) type FastSet<K> = std::collections::HashSet<K, BuildHasherDefault<FastHasher>>;

/// An interned queue group name.
pub(crate) type QueueId = u32;

/// Lists up to this long find an entry by scanning it; longer ones also keep a map from
/// each entry's key to its position.
const SCAN_MAX: usize = 16;

/// An entry of a [`Roster`], found by its key.
pub(crate) trait Keyed {
    type Key: Copy + Eq + Hash + std::fmt::Debug;
    fn key(&self) -> Self::Key;
}

impl Keyed for SubRef {
    type Key = SubRef;
    fn key(&self) -> SubRef {
        *self
    }
}

/// A list the publish path iterates as one contiguous slice, whose entries are removed in
/// O(1) whatever its length: a removal moves the last entry into the gap (order is not
/// kept), and a list longer than [`SCAN_MAX`] keeps each key's position in a map rather
/// than scanning for it.
#[derive(Debug)]
pub(crate) struct Roster<T: Keyed> {
    items: Vec<T>,
    positions: Option<Box<FastMap<T::Key, u32>>>,
}

impl<T: Keyed> Default for Roster<T> {
    fn default() -> Self {
        Roster {
            items: Vec::new(),
            positions: None,
        }
    }
}

impl<T: Keyed> Roster<T> {
    pub fn as_slice(&self) -> &[T] {
        &self.items
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn position(&self, key: T::Key) -> Option<usize> {
        match &self.positions {
            Some(map) => map.get(&key).map(|&i| i as usize),
            None => self.items.iter().position(|t| t.key() == key),
        }
    }

    fn get_mut(&mut self, key: T::Key) -> Option<&mut T> {
        let i = self.position(key)?;
        self.items.get_mut(i)
    }

    /// Adds `item`; its key must not be in the list already.
    fn push(&mut self, item: T) {
        if self.items.capacity() == 0 {
            // Most lists hold one entry: no room for three more.
            self.items.reserve_exact(1);
        }
        let key = item.key();
        self.items.push(item);
        let last = self.items.len() - 1;
        match &mut self.positions {
            Some(map) => {
                map.insert(key, last as u32);
            }
            None if self.items.len() > SCAN_MAX => {
                let map = self
                    .items
                    .iter()
                    .enumerate()
                    .map(|(i, t)| (t.key(), i as u32))
                    .collect();
                self.positions = Some(Box::new(map));
            }
            None => {}
        }
    }

    /// Removes the entry with `key`, if there is one.
    fn remove(&mut self, key: T::Key) -> Option<T> {
        let i = self.position(key)?;
        let item = self.items.swap_remove(i);
        if let Some(map) = &mut self.positions {
            map.remove(&key);
            if let Some(moved) = self.items.get(i) {
                map.insert(moved.key(), i as u32);
            }
        }
        let len = self.items.len();
        // Hysteresis: a list hovering around SCAN_MAX does not rebuild its map each time.
        if len <= SCAN_MAX / 2 {
            self.positions = None;
        }
        // A list that was long and is now short gives most of its room back.
        if self.items.capacity() > 4 * len.max(4) {
            self.items.shrink_to(2 * len);
        }
        Some(item)
    }
}

/// The members of one queue group among the subscriptions of one filter.
#[derive(Debug)]
pub(crate) struct Group {
    id: QueueId,
    members: Roster<SubRef>,
}

impl Group {
    pub fn id(&self) -> QueueId {
        self.id
    }

    pub fn members(&self) -> &[SubRef] {
        self.members.as_slice()
    }
}

impl Keyed for Group {
    type Key = QueueId;
    fn key(&self) -> QueueId {
        self.id
    }
}

/// The subscriptions of one filter: the plain ones, and the queue subscriptions by group
/// (a group appears once per list).
#[derive(Debug, Default)]
pub(crate) struct SubList {
    plain: Roster<SubRef>,
    groups: Roster<Group>,
}

impl SubList {
    /// The plain (not queue group) subscriptions.
    pub fn plain(&self) -> &[SubRef] {
        self.plain.as_slice()
    }

    /// The queue groups with members among these subscriptions.
    pub fn groups(&self) -> &[Group] {
        self.groups.as_slice()
    }

    fn is_empty(&self) -> bool {
        self.plain.is_empty() && self.groups.is_empty()
    }

    fn insert(&mut self, queue: Option<QueueId>, sub: SubRef) {
        let Some(q) = queue else {
            self.plain.push(sub);
            return;
        };
        match self.groups.get_mut(q) {
            Some(group) => group.members.push(sub),
            None => {
                let mut members = Roster::default();
                members.push(sub);
                self.groups.push(Group { id: q, members });
            }
        }
    }

    /// Removes `sub` (a member of `queue`, or plain); false when it was not there.
    fn remove(&mut self, queue: Option<QueueId>, sub: &SubRef) -> bool {
        let Some(q) = queue else {
            return self.plain.remove(*sub).is_some();
        };
        let Some(group) = self.groups.get_mut(q) else {
            return false;
        };
        let removed = group.members.remove(*sub).is_some();
        if group.members.is_empty() {
            self.groups.remove(q);
        }
        removed
    }
}

/// Bytes of a token kept inside the trie itself; a longer token gets an allocation of its
/// own.
const INLINE_TOKEN: usize = 22;

/// One literal token of a wildcard filter, owned by the trie (never a slice of the filter,
/// which would keep the filter's buffer alive): short ones, which is nearly all of them,
/// inline in 24 bytes.
#[derive(Clone)]
enum Token {
    Inline { len: u8, bytes: [u8; INLINE_TOKEN] },
    Heap(Box<[u8]>),
}

impl Token {
    fn new(token: &[u8]) -> Token {
        match u8::try_from(token.len()) {
            Ok(len) if token.len() <= INLINE_TOKEN => {
                let mut bytes = [0; INLINE_TOKEN];
                bytes[..token.len()].copy_from_slice(token);
                Token::Inline { len, bytes }
            }
            _ => Token::Heap(token.into()),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            Token::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Token::Heap(bytes) => bytes,
        }
    }
}

impl PartialEq for Token {
    fn eq(&self, other: &Token) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Token {}

/// Hashes as its bytes do, so that a map keyed by tokens is searched with a `&[u8]`.
impl Hash for Token {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl Borrow<[u8]> for Token {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

/// A trie node's place in the arena.
type NodeId = u32;

/// The root of the trie; never removed, and nobody's child, so 0 also means "no child".
const ROOT: NodeId = 0;
const NONE: NodeId = 0;

/// Past this many literal children a node finds them in a hash map rather than a list.
const LIST_MAX: usize = 8;

/// The literal children of a trie node, by token.
#[derive(Debug, Default)]
enum Children {
    #[default]
    None,
    /// The common case along a filter: one child, no allocation.
    One(Token, NodeId),
    /// Two to [`LIST_MAX`], searched in order.
    List(Vec<(Token, NodeId)>),
    /// More.
    Map(Box<FastMap<Token, NodeId>>),
}

impl Children {
    fn get(&self, token: &[u8]) -> Option<NodeId> {
        match self {
            Children::None => None,
            Children::One(t, id) => (t.as_bytes() == token).then_some(*id),
            Children::List(list) => list
                .iter()
                .find(|(t, _)| t.as_bytes() == token)
                .map(|&(_, id)| id),
            Children::Map(map) => map.get(token).copied(),
        }
    }

    /// Adds a child; `token` must not have one yet.
    fn insert(&mut self, token: &[u8], id: NodeId) {
        let token = Token::new(token);
        match std::mem::take(self) {
            Children::None => *self = Children::One(token, id),
            Children::One(t, i) => *self = Children::List(vec![(t, i), (token, id)]),
            Children::List(mut list) if list.len() < LIST_MAX => {
                list.push((token, id));
                *self = Children::List(list);
            }
            Children::List(list) => {
                let mut map: FastMap<Token, NodeId> = list.into_iter().collect();
                map.insert(token, id);
                *self = Children::Map(Box::new(map));
            }
            Children::Map(mut map) => {
                map.insert(token, id);
                *self = Children::Map(map);
            }
        }
    }

    fn remove(&mut self, token: &[u8]) {
        match std::mem::take(self) {
            Children::None => {}
            Children::One(t, id) => {
                if t.as_bytes() != token {
                    *self = Children::One(t, id);
                }
            }
            Children::List(mut list) => {
                list.retain(|(t, _)| t.as_bytes() != token);
                *self = match list.len() {
                    0 => Children::None,
                    1 => {
                        let (t, id) = list.remove(0);
                        Children::One(t, id)
                    }
                    _ => Children::List(list),
                };
            }
            Children::Map(mut map) => {
                map.remove(token);
                *self = if map.len() <= LIST_MAX / 2 {
                    Children::List(map.into_iter().collect())
                } else {
                    Children::Map(map)
                };
            }
        }
    }

    fn is_empty(&self) -> bool {
        matches!(self, Children::None)
    }

    /// Calls `f` with each child and its token.
    fn for_each<'a>(&'a self, mut f: impl FnMut(&'a [u8], NodeId)) {
        match self {
            Children::None => {}
            Children::One(t, id) => f(t.as_bytes(), *id),
            Children::List(list) => list.iter().for_each(|(t, id)| f(t.as_bytes(), *id)),
            Children::Map(map) => map.iter().for_each(|(t, id)| f(t.as_bytes(), *id)),
        }
    }
}

/// The subscriptions of the filters that end at a node.
#[derive(Debug, Default)]
struct Ends {
    /// Filters that end at this node.
    here: SubList,
    /// Filters that end with `>` right after this node.
    tail: SubList,
}

/// A trie node: one token of a wildcard filter.
#[derive(Debug, Default)]
struct Node {
    children: Children,
    /// The `*` child, or [`NONE`].
    star: NodeId,
    /// Boxed: on the path of a long filter only its last node has any.
    ends: Option<Box<Ends>>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.star == NONE && self.ends.is_none()
    }

    fn ends_mut(&mut self) -> &mut Ends {
        self.ends.get_or_insert_with(Default::default)
    }
}

/// One step of the match walk: a node, and where the subject's next token starts (past
/// the subject's end when no token is left).
type Step = (NodeId, usize);

/// The index of one shard.
#[derive(Debug)]
pub(crate) struct Index {
    literal: FastMap<Bytes, SubList>,
    /// The wildcard trie, its nodes in one arena: a node refers to its children by id, so
    /// no walk (dropping included) recurses.
    nodes: Slab<Node>,
    /// The match walk's stack, kept from one publish to the next.
    stack: Vec<Step>,
    /// Queue group names in use, and by id: the name and how many subscriptions use it.
    /// An id is freed (and reused) when its last subscription goes, so distinct names
    /// over a long run do not grow the index.
    queue_ids: FastMap<Bytes, QueueId>,
    queue_slots: Vec<Option<(Bytes, u32)>>,
    free_queue_ids: Vec<QueueId>,
    subscriptions: usize,
}

impl Default for Index {
    fn default() -> Self {
        let mut nodes = Slab::new();
        nodes.insert(Node::default());
        Index {
            literal: FastMap::default(),
            nodes,
            stack: Vec::new(),
            queue_ids: FastMap::default(),
            queue_slots: Vec::new(),
            free_queue_ids: Vec::new(),
            subscriptions: 0,
        }
    }
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

    /// The id of queue group `name`, if it has a member.
    pub fn queue_id(&self, name: &[u8]) -> Option<QueueId> {
        self.queue_ids.get(name).copied()
    }

    /// One more than the largest queue group id in use (ids are reused, so this stays
    /// at the most groups ever in use at once).
    pub fn queue_count(&self) -> usize {
        self.queue_slots.len()
    }

    fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id as usize]
    }

    fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.nodes[id as usize]
    }

    /// Adds a subscription. `filter` is valid (checked by the codec); the index keeps a
    /// clone of it (the caller's copy, not a slice of a read buffer) only for a literal
    /// filter, and copies a wildcard filter's tokens into the trie.
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
        let mut node = ROOT;
        let mut tokens = subject::tokens(filter).peekable();
        while let Some(token) = tokens.next() {
            if token == b">" && tokens.peek().is_none() {
                self.node_mut(node).ends_mut().tail.insert(queue, sub);
                return;
            }
            let next = if token == b"*" {
                self.node(node).star
            } else {
                self.node(node).children.get(token).unwrap_or(NONE)
            };
            node = if next != NONE {
                next
            } else {
                let child = self.nodes.insert(Node::default()) as NodeId;
                let parent = self.node_mut(node);
                if token == b"*" {
                    parent.star = child;
                } else {
                    parent.children.insert(token, child);
                }
                child
            };
        }
        self.node_mut(node).ends_mut().here.insert(queue, sub);
    }

    /// Removes a subscription made with this filter and queue group; true when it was
    /// there.
    pub fn remove(&mut self, filter: &[u8], queue: Option<&[u8]>, sub: &SubRef) -> bool {
        let queue = match queue {
            None => None,
            Some(name) => match self.queue_ids.get(name) {
                Some(&id) => Some(id),
                None => return false,
            },
        };
        let removed = if subject::is_literal(filter) {
            match self.literal.get_mut(filter) {
                Some(list) => {
                    let removed = list.remove(queue, sub);
                    if list.is_empty() {
                        self.literal.remove(filter);
                    }
                    removed
                }
                None => false,
            }
        } else {
            self.remove_wild(filter, queue, sub)
        };
        if removed {
            self.subscriptions -= 1;
            if let Some(q) = queue {
                self.release_queue(q);
            }
        }
        removed
    }

    /// Removes `sub` from the trie along `filter`'s tokens, then prunes the nodes left
    /// empty, from the bottom up.
    fn remove_wild(&mut self, filter: &[u8], queue: Option<QueueId>, sub: &SubRef) -> bool {
        // Going down: each node passed, with the token that leads from it to the next.
        let mut path: Vec<(NodeId, &[u8])> = Vec::new();
        let mut node = ROOT;
        let mut tail = false;
        let mut tokens = subject::tokens(filter).peekable();
        while let Some(token) = tokens.next() {
            if token == b">" && tokens.peek().is_none() {
                tail = true;
                break;
            }
            let next = if token == b"*" {
                self.node(node).star
            } else {
                self.node(node).children.get(token).unwrap_or(NONE)
            };
            if next == NONE {
                return false;
            }
            path.push((node, token));
            node = next;
        }
        let here = self.node_mut(node);
        let Some(ends) = here.ends.as_mut() else {
            return false;
        };
        let list = if tail { &mut ends.tail } else { &mut ends.here };
        if !list.remove(queue, sub) {
            return false;
        }
        if ends.here.is_empty() && ends.tail.is_empty() {
            here.ends = None;
        }
        // Going up: drop each node left with nothing, until one still holds something.
        while let Some((parent, token)) = path.pop() {
            if !self.node(node).is_empty() {
                break;
            }
            self.nodes.remove(node as usize);
            let parent_node = self.node_mut(parent);
            if token == b"*" {
                parent_node.star = NONE;
            } else {
                parent_node.children.remove(token);
            }
            node = parent;
        }
        if self.nodes.len() == 1 && self.nodes.capacity() > 64 {
            // Only the root is left: give back the room a large trie took.
            let mut nodes = Slab::new();
            nodes.insert(Node::default());
            self.nodes = nodes;
        }
        true
    }

    /// Calls `f` with every list whose filter matches the literal `subject`. Allocates
    /// nothing once the stack has grown to the depth of the deepest match walk so far.
    pub fn for_each_match(&mut self, subject: &[u8], mut f: impl FnMut(&SubList)) {
        if let Some(list) = self.literal.get(subject) {
            f(list);
        }
        let Index { nodes, stack, .. } = self;
        if nodes[ROOT as usize].is_empty() {
            return;
        }
        stack.clear();
        stack.push((ROOT, 0));
        while let Some((id, at)) = stack.pop() {
            let node = &nodes[id as usize];
            let ends = node.ends.as_deref();
            if at > subject.len() {
                // No token left: filters that end here match.
                if let Some(ends) = ends.filter(|e| !e.here.is_empty()) {
                    f(&ends.here);
                }
                continue;
            }
            // At least one token left: `>` after this node matches it.
            if let Some(ends) = ends.filter(|e| !e.tail.is_empty()) {
                f(&ends.tail);
            }
            let rest = &subject[at..];
            let end = rest.iter().position(|&b| b == b'.').unwrap_or(rest.len());
            let next = at + end + 1;
            if node.star != NONE {
                stack.push((node.star, next));
            }
            if let Some(child) = node.children.get(&rest[..end]) {
                stack.push((child, next));
            }
        }
    }

    /// Calls `f` with every filter held and its subscriptions: literal filters first,
    /// then the trie's. Allocates: for monitoring only, never on the publish path.
    #[cfg(test)]
    pub fn for_each_filter(&self, mut f: impl FnMut(&[u8], &SubList)) {
        self.visit_filters(|filter, list| {
            f(filter, list);
            ControlFlow::Continue(())
        });
    }

    /// Calls `f` with the filters held, one at a time, until `f` breaks or none is left.
    ///
    /// Contract: the order depends only on what the index holds (two walks with no change
    /// in between see the same sequence), literal filters first, then the trie's; each
    /// filter is seen once. The walk is iterative (an explicit stack, no recursion) and
    /// stops as soon as `f` breaks, so finding the `n`th filter costs about `n` visits
    /// (times the filters' depth), never a walk of the whole index. Allocates only the
    /// path buffer and the stack: for monitoring, never on the publish path.
    pub fn visit_filters(&self, mut f: impl FnMut(&[u8], &SubList) -> ControlFlow<()>) {
        for (filter, list) in &self.literal {
            if f(filter, list).is_break() {
                return;
            }
        }
        // The filter so far, tokens joined by `.`.
        let mut path: Vec<u8> = Vec::new();
        // A node to visit, the length of its parent's path, and its own token.
        let mut stack: Vec<(NodeId, usize, &[u8])> = vec![(ROOT, 0, b"")];
        while let Some((id, parent_len, token)) = stack.pop() {
            path.truncate(parent_len);
            if !token.is_empty() {
                if !path.is_empty() {
                    path.push(b'.');
                }
                path.extend_from_slice(token);
            }
            let node = self.node(id);
            if let Some(ends) = &node.ends {
                if !ends.here.is_empty() && f(&path, &ends.here).is_break() {
                    return;
                }
                if !ends.tail.is_empty() {
                    let len = path.len();
                    if len > 0 {
                        path.push(b'.');
                    }
                    path.push(b'>');
                    if f(&path, &ends.tail).is_break() {
                        return;
                    }
                    path.truncate(len);
                }
            }
            let len = path.len();
            node.children
                .for_each(|token, child| stack.push((child, len, token)));
            if node.star != NONE {
                stack.push((node.star, len, b"*"));
            }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Subjects that differ only a little (a counter, a length, trailing zero bytes) hash
    /// apart, and spread evenly over the low bits buckets use.
    #[test]
    fn the_subject_hash_tells_near_subjects_apart_and_spreads_them() {
        use std::hash::BuildHasher;
        let hash = |s: &[u8]| BuildHasherDefault::<FastHasher>::default().hash_one(s);
        let mut seen = std::collections::HashSet::new();
        let mut buckets = [0u32; 256];
        for i in 0..20_000u32 {
            let subject = format!("room.{i}");
            let h = hash(subject.as_bytes());
            assert!(seen.insert(h), "{subject} collides");
            buckets[(h & 0xff) as usize] += 1;
        }
        // 20,000 into 256 buckets: about 78 each.
        assert!(
            buckets.iter().all(|&n| (40..=120).contains(&n)),
            "{buckets:?}"
        );
        for len in 0..24 {
            let zeros = vec![0u8; len];
            assert!(seen.insert(hash(&zeros)), "{len} zero bytes collide");
        }
    }
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

    fn matching(index: &mut Index, subject: &str) -> Vec<u64> {
        let mut ids = Vec::new();
        index.for_each_match(subject.as_bytes(), |l| {
            ids.extend(l.plain().iter().map(|s| s.id));
            for g in l.groups() {
                ids.extend(g.members().iter().map(|s| s.id));
            }
        });
        ids.sort();
        ids
    }

    /// Only the root is left, with nothing in it.
    fn trie_is_empty(ix: &Index) -> bool {
        ix.nodes.len() == 1 && ix.node(ROOT).is_empty()
    }

    #[test]
    fn literal_and_wildcards() {
        let mut ix = Index::default();
        let filters = ["a.b.c", "a.*.c", "a.>", "*.b.*", ">", "a.b", "a.*.*.>"];
        for (i, f) in filters.iter().enumerate() {
            ix.insert(&Bytes::from(*f), None, sub(i as u64));
        }
        assert_eq!(matching(&mut ix, "a.b.c"), vec![0, 1, 2, 3, 4]);
        assert_eq!(matching(&mut ix, "a.b"), vec![2, 4, 5]);
        assert_eq!(matching(&mut ix, "a"), vec![4]);
        assert_eq!(matching(&mut ix, "a.b.c.d"), vec![2, 4, 6]);
        assert_eq!(matching(&mut ix, "x.b.y"), vec![3, 4]);
        assert_eq!(ix.len(), 7);
    }

    #[test]
    fn remove_prunes() {
        let mut ix = Index::default();
        let f = Bytes::from_static(b"a.*.c.>");
        let q = Bytes::from_static(b"q");
        ix.insert(&f, Some(&q), sub(1));
        assert_eq!(matching(&mut ix, "a.x.c.d"), vec![1]);
        assert!(!ix.remove(b"a.*.c.>", Some(b"q"), &sub(2)));
        assert!(!ix.remove(b"a.*.c.>", None, &sub(1)), "not a plain one");
        assert!(
            !ix.remove(b"a.*.c.>", Some(b"other"), &sub(1)),
            "not in that group"
        );
        assert!(ix.remove(b"a.*.c.>", Some(b"q"), &sub(1)));
        assert!(trie_is_empty(&ix));
        assert!(!ix.remove(b"x", None, &sub(1)));
        ix.insert(&Bytes::from_static(b"x"), None, sub(3));
        assert!(ix.remove(b"x", None, &sub(3)));
        assert!(ix.literal.is_empty());
        assert_eq!(ix.len(), 0);
    }

    #[test]
    fn removal_keeps_the_nodes_other_filters_use() {
        let mut ix = Index::default();
        let filters = ["a.*", "a.*.c", "a.b.>", "a.b.*", "a.b", "*.*"];
        for (i, f) in filters.iter().enumerate() {
            ix.insert(&Bytes::from(*f), None, sub(i as u64));
        }
        assert!(ix.remove(b"a.*.c", None, &sub(1)));
        assert_eq!(matching(&mut ix, "a.x"), vec![0, 5]);
        assert_eq!(matching(&mut ix, "a.x.c"), Vec::<u64>::new());
        assert!(ix.remove(b"a.b.*", None, &sub(3)));
        assert_eq!(matching(&mut ix, "a.b.c"), vec![2]);
        assert!(ix.remove(b"a.b.>", None, &sub(2)));
        assert_eq!(matching(&mut ix, "a.b.c"), Vec::<u64>::new());
        assert_eq!(matching(&mut ix, "a.b"), vec![0, 4, 5]);
        for (i, f) in [(0, "a.*"), (5, "*.*")] {
            assert!(ix.remove(f.as_bytes(), None, &sub(i)));
        }
        assert!(trie_is_empty(&ix));
        assert_eq!(matching(&mut ix, "a.b"), vec![4]);
    }

    #[test]
    fn wide_nodes_switch_to_a_map_and_back() {
        let mut ix = Index::default();
        let filter = |i: u64| Bytes::from(format!("t{i}.*"));
        for i in 0..100 {
            ix.insert(&filter(i), None, sub(i));
        }
        assert!(matches!(ix.node(ROOT).children, Children::Map(_)));
        for i in 0..100 {
            assert_eq!(matching(&mut ix, &format!("t{i}.x")), vec![i]);
        }
        for i in 0..98 {
            assert!(ix.remove(&filter(i), None, &sub(i)));
        }
        assert!(matches!(ix.node(ROOT).children, Children::List(_)));
        assert!(ix.remove(&filter(98), None, &sub(98)));
        assert!(matches!(ix.node(ROOT).children, Children::One(..)));
        assert_eq!(matching(&mut ix, "t99.x"), vec![99]);
        assert!(ix.remove(&filter(99), None, &sub(99)));
        assert!(trie_is_empty(&ix));
    }

    #[test]
    fn long_tokens_are_kept_whole() {
        let mut ix = Index::default();
        let long = "x".repeat(300);
        let near = format!("{}y", "x".repeat(299));
        let f = Bytes::from(format!("{long}.*.{}", "z".repeat(INLINE_TOKEN)));
        ix.insert(&f, None, sub(1));
        let hit = format!("{long}.a.{}", "z".repeat(INLINE_TOKEN));
        assert_eq!(matching(&mut ix, &hit), vec![1]);
        assert!(matching(&mut ix, &format!("{near}.a.{}", "z".repeat(INLINE_TOKEN))).is_empty());
        assert!(matching(
            &mut ix,
            &format!("{long}.a.{}", "z".repeat(INLINE_TOKEN - 1))
        )
        .is_empty());
        assert!(ix.remove(&f, None, &sub(1)));
        assert!(trie_is_empty(&ix));
    }

    /// The index never recurses: a filter of 100,000 tokens (far past any decoder's cap)
    /// is inserted, matched, listed, removed and dropped on a thread with a 256 KiB stack.
    /// A recursive walk needs a frame per token and overflows that stack.
    #[test]
    fn a_filter_of_100_000_tokens_needs_no_recursion() {
        const TOKENS: usize = 100_000;
        let worker = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(|| {
                let mut ix = Index::default();
                let stars = Bytes::from(vec!["*"; TOKENS].join("."));
                let mixed = Bytes::from(
                    (0..TOKENS)
                        .map(|i| if i % 2 == 0 { "a" } else { "*" })
                        .collect::<Vec<_>>()
                        .join("."),
                );
                let tail = Bytes::from(format!("{}.>", vec!["a"; TOKENS - 1].join(".")));
                ix.insert(&stars, None, sub(1));
                ix.insert(&mixed, Some(&Bytes::from_static(b"q")), sub(2));
                ix.insert(&tail, None, sub(3));
                let subject = vec!["a"; TOKENS].join(".");
                assert_eq!(matching(&mut ix, &subject), vec![1, 2, 3]);
                let shorter = vec!["a"; TOKENS - 1].join(".");
                assert!(matching(&mut ix, &shorter).is_empty());
                let mut listed = Vec::new();
                ix.for_each_filter(|f, _| listed.push(f.len()));
                listed.sort();
                assert_eq!(listed, vec![stars.len(), stars.len(), tail.len()]);
                assert!(ix.remove(&stars, None, &sub(1)));
                assert!(ix.remove(&mixed, Some(b"q"), &sub(2)));
                assert_eq!(matching(&mut ix, &subject), vec![3]);
                // Dropped with the tail filter still in: dropping does not recurse either.
                drop(ix);
            })
            .expect("spawn");
        worker.join().expect("the deep-filter thread failed");
    }

    /// What the index holds for one subscription is linear in its filter's length, with a
    /// small constant: measured with the counting allocator (live bytes this thread asked
    /// for and has not given back).
    #[test]
    fn memory_per_subscription_is_linear_in_the_filter() {
        use crate::test_alloc::live_bytes;
        // 2,000 one-character tokens: a 4 KiB filter (3,999 bytes).
        let stars = Bytes::from(vec!["*"; 2000].join("."));
        let mixed = Bytes::from(
            (0..2000)
                .map(|i| if i % 2 == 0 { "a" } else { "*" })
                .collect::<Vec<_>>()
                .join("."),
        );
        let literal = Bytes::from(vec!["a"; 2000].join("."));
        let short = Bytes::from_static(b"chat.*.room");
        for filter in [&stars, &mixed, &literal, &short] {
            // The caller's copy is shared, not the index's cost: a first clone turns a
            // `Bytes` made from a `Vec` into a shared one, which allocates its counter.
            let shared = filter.clone();
            let before = live_bytes();
            let mut ix = Index::default();
            ix.insert(filter, None, sub(1));
            let cost = (live_bytes() - before) as usize;
            let bound = 32 * filter.len() + 1024;
            assert!(
                cost <= bound,
                "{} bytes of index for a {}-byte filter (bound {bound})",
                cost,
                filter.len()
            );
            assert!(ix.remove(filter, None, &sub(1)));
            drop(ix);
            assert_eq!(live_bytes(), before, "everything given back");
            drop(shared);
        }
    }

    #[test]
    fn long_lists_remove_in_place_and_stay_contiguous() {
        let mut ix = Index::default();
        let f = Bytes::from_static(b"busy.subject");
        let w = Bytes::from_static(b"busy.*");
        let q = Bytes::from_static(b"workers");
        const N: u64 = 10_000;
        for i in 0..N {
            ix.insert(&f, None, sub(i));
            ix.insert(&f, Some(&q), sub(N + i));
            ix.insert(&w, Some(&q), sub(2 * N + i));
        }
        // Remove every third, in an order unlike the insertion order.
        let gone: Vec<u64> = (0..N).rev().filter(|i| i % 3 == 0).collect();
        for &i in &gone {
            assert!(ix.remove(&f, None, &sub(i)));
            assert!(ix.remove(&f, Some(&q), &sub(N + i)));
            assert!(ix.remove(&w, Some(&q), &sub(2 * N + i)));
            assert!(!ix.remove(&f, None, &sub(i)), "removed once only");
        }
        let mut want: Vec<u64> = (0..N)
            .filter(|i| i % 3 != 0)
            .flat_map(|i| [i, N + i, 2 * N + i])
            .collect();
        want.sort();
        assert_eq!(matching(&mut ix, "busy.subject"), want);
        assert_eq!(ix.len(), want.len());
        let list = &ix.literal[&f];
        assert_eq!(list.groups().len(), 1, "one group entry per list");
        // Every key is at the position its map says.
        for (i, s) in list.plain().iter().enumerate() {
            assert_eq!(list.plain.position(*s), Some(i));
        }
        for i in (0..N).filter(|i| i % 3 != 0) {
            assert!(ix.remove(&f, None, &sub(i)));
            assert!(ix.remove(&f, Some(&q), &sub(N + i)));
            assert!(ix.remove(&w, Some(&q), &sub(2 * N + i)));
        }
        assert_eq!(ix.len(), 0);
        assert!(ix.literal.is_empty());
        assert!(trie_is_empty(&ix));
        assert_eq!(ix.queue_ids.len(), 0);
    }

    #[test]
    fn roster_positions_follow_every_swap() {
        let mut r: Roster<SubRef> = Roster::default();
        for i in 0..100 {
            r.push(sub(i));
        }
        assert!(r.positions.is_some());
        let mut x = 12345u64;
        let mut left: Vec<u64> = (0..100).collect();
        while !left.is_empty() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let id = left.swap_remove((x % left.len() as u64) as usize);
            assert_eq!(r.remove(sub(id)), Some(sub(id)));
            assert_eq!(r.as_slice().len(), left.len());
            for (i, s) in r.as_slice().iter().enumerate() {
                assert_eq!(r.position(*s), Some(i));
            }
        }
        assert!(r.positions.is_none());
        assert_eq!(r.remove(sub(1)), None);
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
                list.plain().len(),
                list.groups()
                    .iter()
                    .map(|g| g.members().len())
                    .sum::<usize>(),
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
            assert!(ix.remove(b"work.*", Some(&name), &sub(round)));
            assert!(ix.remove(b"work.x", Some(&name), &sub(1000 + round)));
        }
        assert_eq!(ix.queue_count(), 1, "one id, reused by every round");
        assert!(ix.queue_ids.is_empty());
        let a = Bytes::from_static(b"a");
        ix.insert(&f, Some(&a), sub(1));
        ix.insert(&f, Some(&a), sub(2));
        assert!(ix.remove(b"work.*", Some(b"a"), &sub(1)));
        assert_eq!(ix.queue_names(), vec![a.clone()], "still used by sub 2");
    }

    #[test]
    fn token_is_compact() {
        assert_eq!(std::mem::size_of::<Token>(), 24);
        assert_eq!(std::mem::size_of::<Node>(), 48);
        for len in [0, 1, INLINE_TOKEN, INLINE_TOKEN + 1, 300] {
            let bytes = vec![b'k'; len];
            let t = Token::new(&bytes);
            assert_eq!(t.as_bytes(), &bytes[..]);
            assert_eq!(matches!(t, Token::Inline { .. }), len <= INLINE_TOKEN);
        }
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
        let mut seen = Vec::new();
        ix.visit_filters(|f, _| {
            seen.push(f.to_vec());
            ControlFlow::Continue(())
        });
        let mut sorted = seen.clone();
        sorted.sort();
        let mut want: Vec<Vec<u8>> = filters.iter().map(|f| f.as_bytes().to_vec()).collect();
        want.sort();
        assert_eq!(sorted, want, "every filter, each once");
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
            assert_eq!(prefix, seen[..=stop], "stops right after the {stop}th");
        }
    }
}
