//! Rooms: who is in which room, and what size class each room is in.
//!
//! Owns: the [`Zipf`] sampler, the assignment of users to rooms ([`assign`]) and the size
//! classes latency is reported by ([`SizeClass`]).
//!
//! The shape: one *viral* room holds a fixed fraction of the users (rounded, at least one
//! user when the fraction is above zero); every other user picks one of `rooms` ordinary
//! rooms with probability ∝ 1 / rank^exponent (Zipf), so a few rooms are large and most
//! are small. Exponent 0 is uniform. Rooms nobody picked are left out. Membership is fixed
//! for the run: a user who leaves (churn) or drops (storm) comes back to the same room.
//!
//! Never: touches the network; this is pure arithmetic on a seeded generator.

use serde::Serialize;

use super::random::Rng;

/// Rooms of fewer members than this are small.
pub const SMALL_BELOW: usize = 10;
/// Rooms of fewer members than this (and at least [`SMALL_BELOW`]) are medium; the rest
/// (but the viral room) are large.
pub const MEDIUM_BELOW: usize = 100;

/// A room's size class, by its member count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SizeClass {
    /// Fewer than [`SMALL_BELOW`] members.
    Small,
    /// Fewer than [`MEDIUM_BELOW`] members.
    Medium,
    /// [`MEDIUM_BELOW`] members or more.
    Large,
    /// The viral room, whatever its size.
    Viral,
}

impl SizeClass {
    /// Every class, in report order.
    pub const ALL: [SizeClass; 4] = [
        SizeClass::Small,
        SizeClass::Medium,
        SizeClass::Large,
        SizeClass::Viral,
    ];

    /// The class of an ordinary room with `members` members.
    pub fn of(members: usize) -> SizeClass {
        if members < SMALL_BELOW {
            SizeClass::Small
        } else if members < MEDIUM_BELOW {
            SizeClass::Medium
        } else {
            SizeClass::Large
        }
    }

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            SizeClass::Small => "small",
            SizeClass::Medium => "medium",
            SizeClass::Large => "large",
            SizeClass::Viral => "viral",
        }
    }

    /// Its index in [`SizeClass::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A Zipf distribution over ranks `0..n`: rank `k` (0-based) has probability
/// ∝ 1 / (k + 1)^exponent.
#[derive(Debug, Clone)]
pub struct Zipf {
    /// Cumulative probabilities; the last is 1.
    cdf: Vec<f64>,
}

impl Zipf {
    /// The distribution over `n` ranks (at least 1) with `exponent` (at least 0).
    pub fn new(n: usize, exponent: f64) -> Zipf {
        let n = n.max(1);
        let exponent = if exponent.is_finite() {
            exponent.max(0.0)
        } else {
            0.0
        };
        let weights: Vec<f64> = (1..=n).map(|k| (k as f64).powf(-exponent)).collect();
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = weights
            .iter()
            .map(|w| {
                acc += w / total;
                acc
            })
            .collect();
        // Rounding must not leave a gap at the top.
        if let Some(last) = cdf.last_mut() {
            *last = 1.0;
        }
        Zipf { cdf }
    }

    /// The number of ranks.
    pub fn len(&self) -> usize {
        self.cdf.len()
    }

    /// Always false: there is at least one rank.
    pub fn is_empty(&self) -> bool {
        self.cdf.is_empty()
    }

    /// The probability of rank `k`.
    pub fn probability(&self, k: usize) -> f64 {
        match k {
            0 => self.cdf.first().copied().unwrap_or(0.0),
            _ if k < self.cdf.len() => self.cdf[k] - self.cdf[k - 1],
            _ => 0.0,
        }
    }

    /// The rank for a uniform draw `u` in `[0, 1)`.
    pub fn rank(&self, u: f64) -> usize {
        self.cdf
            .partition_point(|&c| c <= u)
            .min(self.cdf.len() - 1)
    }

    /// Draws a rank.
    pub fn sample(&self, rng: &mut Rng) -> usize {
        self.rank(rng.unit())
    }
}

/// One room.
#[derive(Debug, Clone, Serialize)]
pub struct Room {
    /// Its subject.
    pub subject: String,
    /// Its size class.
    pub class: SizeClass,
    /// Its members' user ids, ascending.
    pub members: Vec<u32>,
}

/// Users spread over rooms.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The rooms that have members; the viral room (if any) first.
    pub rooms: Vec<Room>,
    /// For each user id, its index in `rooms`.
    pub room_of: Vec<usize>,
}

/// Puts `users` users in rooms: `round(users × viral_fraction)` (at least 1 when the
/// fraction is above 0) in the viral room `<prefix>.viral`, the others in
/// `<prefix>.room.<rank>` by a Zipf draw over `rooms` ranks.
pub fn assign(
    users: usize,
    rooms: usize,
    exponent: f64,
    viral_fraction: f64,
    prefix: &str,
    rng: &mut Rng,
) -> Layout {
    let fraction = if viral_fraction.is_finite() {
        viral_fraction.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let mut viral = (users as f64 * fraction).round() as usize;
    if fraction > 0.0 && users > 0 {
        viral = viral.max(1);
    }
    // With no ordinary rooms, everyone is in the viral room.
    if rooms == 0 {
        viral = users;
    }
    let zipf = Zipf::new(rooms, exponent);
    // Which users go viral: every k-th, so they are spread over ids (and threads).
    let mut pick: Vec<Option<usize>> = vec![None; users];
    let mut viral_members = Vec::with_capacity(viral);
    for i in 0..viral {
        let id = i * users / viral.max(1);
        viral_members.push(id as u32);
    }
    let mut members: Vec<Vec<u32>> = vec![Vec::new(); rooms];
    let mut next_viral = viral_members.iter().peekable();
    for (id, slot) in pick.iter_mut().enumerate() {
        if next_viral.peek().is_some_and(|&&v| v as usize == id) {
            next_viral.next();
            continue;
        }
        let rank = zipf.sample(rng);
        members[rank].push(id as u32);
        *slot = Some(rank);
    }

    let mut out = Vec::new();
    let mut room_of = vec![0; users];
    if !viral_members.is_empty() {
        for &id in &viral_members {
            room_of[id as usize] = 0;
        }
        out.push(Room {
            subject: format!("{prefix}.viral"),
            class: SizeClass::Viral,
            members: viral_members,
        });
    }
    let mut index_of_rank = vec![usize::MAX; rooms];
    for (rank, m) in members.into_iter().enumerate() {
        if m.is_empty() {
            continue;
        }
        index_of_rank[rank] = out.len();
        out.push(Room {
            subject: format!("{prefix}.room.{}", rank + 1),
            class: SizeClass::of(m.len()),
            members: m,
        });
    }
    for (id, slot) in pick.iter().enumerate() {
        if let Some(rank) = slot {
            room_of[id] = index_of_rank[*rank];
        }
    }
    Layout {
        rooms: out,
        room_of,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_probabilities_follow_the_power_law() {
        let z = Zipf::new(10, 1.0);
        let harmonic: f64 = (1..=10).map(|k| 1.0 / k as f64).sum();
        for k in 0..10 {
            let want = 1.0 / ((k + 1) as f64 * harmonic);
            assert!((z.probability(k) - want).abs() < 1e-12, "{k}");
        }
        assert_eq!(z.probability(10), 0.0);
        let total: f64 = (0..10).map(|k| z.probability(k)).sum();
        assert!((total - 1.0).abs() < 1e-12);
    }

    #[test]
    fn zipf_exponent_zero_is_uniform() {
        let z = Zipf::new(4, 0.0);
        for k in 0..4 {
            assert!((z.probability(k) - 0.25).abs() < 1e-12);
        }
        assert_eq!(z.rank(0.0), 0);
        assert_eq!(z.rank(0.26), 1);
        assert_eq!(z.rank(0.999_999), 3);
    }

    #[test]
    fn zipf_samples_match_the_probabilities() {
        let z = Zipf::new(20, 1.2);
        let mut rng = Rng::new(42, 0);
        let n = 200_000;
        let mut counts = [0usize; 20];
        for _ in 0..n {
            counts[z.sample(&mut rng)] += 1;
        }
        for (k, &c) in counts.iter().enumerate() {
            let got = c as f64 / n as f64;
            let want = z.probability(k);
            // Within 5 standard deviations of a binomial count.
            let sd = (want * (1.0 - want) / n as f64).sqrt();
            assert!(
                (got - want).abs() < 5.0 * sd + 1e-4,
                "rank {k}: {got} vs {want}"
            );
        }
        assert!(counts[0] > counts[19]);
    }

    #[test]
    fn one_rank_always_draws_it() {
        let z = Zipf::new(1, 3.0);
        let mut rng = Rng::new(1, 1);
        assert!((0..100).all(|_| z.sample(&mut rng) == 0));
        assert_eq!(Zipf::new(0, 1.0).len(), 1);
    }

    #[test]
    fn assignment_places_every_user_once() {
        let mut rng = Rng::new(7, 0);
        let layout = assign(500, 20, 1.0, 0.2, "aud", &mut rng);
        let mut seen = vec![0; 500];
        for (i, room) in layout.rooms.iter().enumerate() {
            assert!(!room.members.is_empty());
            for &m in &room.members {
                seen[m as usize] += 1;
                assert_eq!(layout.room_of[m as usize], i);
            }
        }
        assert!(seen.iter().all(|&n| n == 1));
        let viral = &layout.rooms[0];
        assert_eq!(viral.class, SizeClass::Viral);
        assert_eq!(viral.subject, "aud.viral");
        assert_eq!(viral.members.len(), 100);
        // Rank 1 is the largest ordinary room: ~400 / H(20) ≈ 111 members.
        let first = layout
            .rooms
            .iter()
            .find(|r| r.subject == "aud.room.1")
            .unwrap();
        assert!(first.members.len() > 70, "{}", first.members.len());
        assert_eq!(first.class, SizeClass::of(first.members.len()));
    }

    #[test]
    fn assignment_edge_cases() {
        let mut rng = Rng::new(1, 0);
        // No viral room.
        let l = assign(10, 3, 1.0, 0.0, "a", &mut rng);
        assert!(l.rooms.iter().all(|r| r.class != SizeClass::Viral));
        // A tiny fraction still makes a viral room of one.
        let l = assign(10, 3, 1.0, 0.01, "a", &mut rng);
        assert_eq!(l.rooms[0].members.len(), 1);
        // No ordinary rooms: everyone is viral.
        let l = assign(5, 0, 1.0, 0.1, "a", &mut rng);
        assert_eq!(l.rooms.len(), 1);
        assert_eq!(l.rooms[0].members, vec![0, 1, 2, 3, 4]);
        // No users.
        assert!(assign(0, 3, 1.0, 0.5, "a", &mut rng).rooms.is_empty());
    }

    #[test]
    fn size_classes() {
        assert_eq!(SizeClass::of(1), SizeClass::Small);
        assert_eq!(SizeClass::of(9), SizeClass::Small);
        assert_eq!(SizeClass::of(10), SizeClass::Medium);
        assert_eq!(SizeClass::of(99), SizeClass::Medium);
        assert_eq!(SizeClass::of(100), SizeClass::Large);
        for (i, c) in SizeClass::ALL.iter().enumerate() {
            assert_eq!(c.index(), i);
        }
    }
}
