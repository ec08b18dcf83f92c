//! Paging across workers: how the monitor turns the workers' bounded, sorted pieces into
//! one page, without asking any worker for more than the page needs.
//!
//! Owns: the k-way merge of `/connz`'s ranked pieces ([`merge_page`]) and the split of a
//! `/subsz` page over the shards' filter sequences ([`slices`]).
//!
//! Never: talks to a worker or allocates more than the page and one heap entry per piece.
//!
//! Contract: [`merge_page`] is exact when each piece holds its worker's first
//! `offset + limit` items in order (or all of them, when it has fewer): no item past
//! a piece's end can be in the page, since every item ahead of it in its own piece is
//! also ahead of it in the merged order. [`slices`] is exact when each count is the
//! shard's true count or at least `offset + limit`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Items `[offset, offset + limit)` of the merged order of `pieces` (each sorted, tagged
/// with its worker), each with its worker. O((offset + limit) × log(pieces)).
pub(crate) fn merge_page<T: Ord>(
    pieces: Vec<(usize, Vec<T>)>,
    offset: usize,
    limit: usize,
) -> Vec<(usize, T)> {
    let mut heads = BinaryHeap::with_capacity(pieces.len());
    let mut rests = Vec::with_capacity(pieces.len());
    for (i, (worker, items)) in pieces.into_iter().enumerate() {
        let mut items = items.into_iter();
        if let Some(first) = items.next() {
            heads.push(Reverse((first, i)));
        }
        rests.push((worker, items));
    }
    let mut page = Vec::with_capacity(limit.min(4096));
    let mut seen = 0;
    while page.len() < limit {
        let Some(Reverse((item, i))) = heads.pop() else {
            break;
        };
        let (worker, rest) = &mut rests[i];
        let worker = *worker;
        if let Some(next) = rest.next() {
            heads.push(Reverse((next, i)));
        }
        if seen >= offset {
            page.push((worker, item));
        }
        seen += 1;
    }
    page
}

/// One shard's part of a `/subsz` page: its filters `[skip, skip + take)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slice {
    pub worker: usize,
    pub skip: usize,
    pub take: usize,
}

/// Where the page `[offset, offset + limit)` of the shards' filters, one shard after the
/// other in the order given, lies in each shard, given each shard's `(worker, count)`.
/// Shards with nothing in the page are left out.
pub(crate) fn slices(counts: &[(usize, usize)], offset: usize, limit: usize) -> Vec<Slice> {
    let (start, end) = (offset, offset.saturating_add(limit));
    let mut at = 0usize;
    let mut out = Vec::new();
    for &(worker, count) in counts {
        let (from, to) = (at.max(start), (at + count).min(end));
        if from < to {
            out.push(Slice {
                worker,
                skip: from - at,
                take: to - from,
            });
        }
        at += count;
        if at >= end {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{smallest, ConnKeys, Ranked, SortKey};
    use proptest::prelude::*;

    /// What a page must be: the whole, sorted, then cut.
    fn reference<T: Ord + Clone>(
        pieces: &[(usize, Vec<T>)],
        offset: usize,
        limit: usize,
    ) -> Vec<T> {
        let mut all: Vec<T> = pieces.iter().flat_map(|(_, p)| p.clone()).collect();
        all.sort();
        all.into_iter().skip(offset).take(limit).collect()
    }

    #[test]
    fn merge_takes_the_page_from_sorted_pieces() {
        let pieces = vec![(0, vec![1, 4, 7, 10]), (1, vec![2, 3, 8]), (2, vec![])];
        let page = merge_page(pieces, 2, 3);
        assert_eq!(page, vec![(1, 3), (0, 4), (0, 7)]);
        assert!(merge_page(vec![(0, vec![1, 2])], 5, 3).is_empty());
        assert!(merge_page(vec![(0, vec![1, 2])], 0, 0).is_empty());
    }

    proptest! {
        /// Workers that each answer only their first offset + limit (the bounded pieces
        /// of `smallest`) still give exactly the page of the whole.
        #[test]
        fn merging_bounded_pieces_equals_paging_the_whole(
            workers in proptest::collection::vec(proptest::collection::vec(0u64..50, 0..40), 1..5),
            offset in 0usize..60,
            limit in 0usize..30,
        ) {
            let whole: Vec<(usize, Vec<u64>)> = workers.into_iter().enumerate().collect();
            let pieces: Vec<(usize, Vec<u64>)> = whole
                .iter()
                .map(|(w, items)| (*w, smallest(items.clone(), offset + limit)))
                .collect();
            let page: Vec<u64> = merge_page(pieces, offset, limit).into_iter().map(|(_, v)| v).collect();
            prop_assert_eq!(page, reference(&whole, offset, limit));
        }

        /// The same for every `/connz` order: connections spread over workers, each
        /// worker ranking only its first offset + limit.
        #[test]
        fn connz_pages_are_right_for_every_sort_key(
            conns in proptest::collection::vec((0u64..5, 0u64..5, 0usize..4, 0u64..1000), 1..40),
            workers in 1usize..4,
            offset in 0usize..40,
            limit in 1usize..10,
            key in 0usize..11,
        ) {
            let sort = SortKey::ALL[key];
            let ranked: Vec<(usize, Ranked)> = conns
                .iter()
                .enumerate()
                .map(|(cid, &(msgs, bytes, subs, start))| {
                    let keys = ConnKeys {
                        cid: cid as u64,
                        start_us: start,
                        last_activity_us: start + msgs,
                        in_msgs: msgs,
                        out_msgs: msgs,
                        in_bytes: bytes,
                        out_bytes: bytes,
                        subscriptions: subs,
                        pending_bytes: subs,
                        ..ConnKeys::default()
                    };
                    (cid % workers, sort.rank(&keys, 2000))
                })
                .collect();
            let whole: Vec<(usize, Vec<Ranked>)> = (0..workers)
                .map(|w| (w, ranked.iter().filter(|(o, _)| *o == w).map(|(_, r)| r.clone()).collect()))
                .collect();
            let pieces = whole
                .iter()
                .map(|(w, items)| (*w, smallest(items.clone(), offset + limit)))
                .collect();
            let page: Vec<u64> = merge_page(pieces, offset, limit).into_iter().map(|(_, r)| r.cid).collect();
            let want: Vec<u64> = reference(&whole, offset, limit).into_iter().map(|r| r.cid).collect();
            prop_assert_eq!(page, want);
        }

        /// Slicing the shards' sequences gives exactly the page of their concatenation.
        #[test]
        fn slices_cut_the_concatenation(
            counts in proptest::collection::vec(0usize..20, 1..5),
            offset in 0usize..80,
            limit in 0usize..30,
        ) {
            let whole: Vec<(usize, usize)> = counts
                .iter()
                .enumerate()
                .flat_map(|(w, n)| (0..*n).map(move |i| (w, i)))
                .collect();
            let want: Vec<(usize, usize)> = whole.into_iter().skip(offset).take(limit).collect();
            let tagged: Vec<(usize, usize)> = counts.iter().copied().enumerate().collect();
            let got: Vec<(usize, usize)> = slices(&tagged, offset, limit)
                .into_iter()
                .flat_map(|s| (s.skip..s.skip + s.take).map(move |i| (s.worker, i)))
                .collect();
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn counts_capped_at_offset_plus_limit_slice_the_same() {
        // A shard that stopped counting at the cap still covers the page alone.
        let exact = slices(&[(0, 500), (1, 300)], 10, 5);
        let capped = slices(&[(0, 16), (1, 16)], 10, 5);
        assert_eq!(exact, capped);
        assert_eq!(
            exact,
            vec![Slice {
                worker: 0,
                skip: 10,
                take: 5
            }]
        );
        assert_eq!(
            slices(&[(0, 3), (1, 5)], 2, 4),
            vec![
                Slice {
                    worker: 0,
                    skip: 2,
                    take: 1
                },
                Slice {
                    worker: 1,
                    skip: 0,
                    take: 3
                }
            ]
        );
    }
}
