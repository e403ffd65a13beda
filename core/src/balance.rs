//! Balanced ownership of a group of flags (*shards*) across the processes that share it.
//!
//! A group `g` is a set of `N` shard flags, `g/shard/0` … `g/shard/{N-1}`, and one *member* flag
//! per process, `g/member/<process>`, which only that process ever competes for: its lease is
//! the process's heartbeat. Every few seconds each process reads every row of the group in one
//! statement ([`sql::GROUP`](crate::sql::GROUP)); a row is *live* while its lease has not
//! expired by the database's clock (the takeover rule). The live members, sorted, and the live
//! holder of each shard are the [`View`]; [`assign`] turns a view into one designated owner per
//! shard, the same for every process that reads the same view. A process then *wants* the
//! shards designated to it ([`Input::Wanted`](crate::Input::Wanted)): it takes them when
//! they are free, expired or released, and releases those it leads but is no longer designated,
//! through the ordinary protocol (stop the work, release, `NOTIFY`).
//!
//! The rules of [`assign`]:
//!
//! - Targets: with `M` live members and `N` shards not held by non-members, member `i` in
//!   sorted order aims at `N / M`, plus one for the first `N % M` members ([`target`]). The
//!   targets sum to `N`.
//! - A member keeps every shard it holds, except surplus: when some member holds fewer than
//!   the floor (`N / M`) and the free shards do not cover what the members below their targets
//!   lack, the surplus above its target; otherwise only what it holds above the ceiling. So a
//!   fleet whose every member is within one of `N / M` moves nothing, whatever the targets
//!   say.
//! - Free shards (no row, or an expired or released lease), and the surplus given up, go to
//!   the members below their targets, one each in turn in member order, lowest shard first.
//! - A shard whose live holder is not a live member (a Go flag, or a process whose member row
//!   expired before its shard leases) is designated to nobody and left out of the targets: it
//!   is taken only once its lease runs out. Balance among the members is over the rest.
//!
//! Each move goes from a member above its target to one below, or from free to one below, so
//! the sum over members of `|held - target|` falls with every move: no shard goes back and forth
//! while the view stays the same. Membership changes only when a member row's lease expires
//! (or is released on close), so a process that misses a check or two keeps its shards.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

/// The name of shard `index` of `group`: `<group>/shard/<index>`.
pub fn shard_name(group: &str, index: usize) -> String {
    format!("{group}/shard/{index}")
}

/// The name of `process`'s member flag in `group`: `<group>/member/<process>`.
pub fn member_name(group: &str, process: &str) -> String {
    format!("{group}/member/{process}")
}

/// The prefix every row of `group` starts with, bound to [`sql::GROUP`](crate::sql::GROUP)'s
/// `$1`: `<group>/`.
pub fn group_prefix(group: &str) -> String {
    format!("{group}/")
}

/// What a row of a group is, from its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry<'a> {
    /// A shard, by index.
    Shard(usize),
    /// A member flag, naming the process.
    Member(&'a str),
}

/// Parses a row name of `group` (as [`shard_name`] and [`member_name`] write them); `None` for
/// any other name.
pub fn parse<'a>(group: &str, name: &'a str) -> Option<Entry<'a>> {
    let rest = name.strip_prefix(group)?.strip_prefix('/')?;
    if let Some(index) = rest.strip_prefix("shard/") {
        // Only the canonical spelling: `shard/07` is not shard 7.
        let i: usize = index.parse().ok()?;
        return (shard_name(group, i) == name).then_some(Entry::Shard(i));
    }
    let process = rest.strip_prefix("member/")?;
    (!process.is_empty()).then_some(Entry::Member(process))
}

/// The target of the member at `index` among `members` live members (sorted by name) sharing
/// `shards` shards: `shards / members`, plus one for the first `shards % members`. [`assign`]
/// counts only the shards that no non-member holds.
pub fn target(shards: usize, members: usize, index: usize) -> usize {
    if members == 0 {
        return 0;
    }
    shards / members + usize::from(index < shards % members)
}

/// What one scan of a group showed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View<'a> {
    /// The processes whose member row is live, sorted and without duplicates (see
    /// [`View::new`]).
    pub members: Vec<&'a str>,
    /// For each shard, the holder of its live lease, or `None` if it is free (no row, or an
    /// expired or released lease).
    pub holders: Vec<Option<&'a str>>,
}

impl<'a> View<'a> {
    /// A view of `shards` shards with these live members (any order, duplicates allowed) and
    /// live holders (`(shard, holder)`; shards not listed, or out of range, are free).
    pub fn new(
        shards: usize,
        members: impl IntoIterator<Item = &'a str>,
        held: impl IntoIterator<Item = (usize, &'a str)>,
    ) -> View<'a> {
        let mut members: Vec<&str> = members.into_iter().collect();
        members.sort_unstable();
        members.dedup();
        let mut holders = vec![None; shards];
        for (shard, holder) in held {
            if let Some(h) = holders.get_mut(shard) {
                *h = Some(holder);
            }
        }
        View { members, holders }
    }

    /// How many shards each member holds, in member order.
    pub fn counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.members.len()];
        for holder in self.holders.iter().flatten() {
            if let Ok(i) = self.members.binary_search(holder) {
                counts[i] += 1;
            }
        }
        counts
    }
}

/// The designated owner of each shard (an index into `view.members`), or `None` for a shard
/// nobody among the members should take (held by a non-member, or left over). Every process
/// computes the same answer from the same view; see the [module docs](self) for the rules.
pub fn assign(view: &View<'_>) -> Vec<Option<usize>> {
    let shards = view.holders.len();
    let members = view.members.len();
    let mut owner = vec![None; shards];
    if members == 0 {
        return owner;
    }
    let mut held: Vec<Vec<usize>> = vec![Vec::new(); members];
    let mut pool = Vec::new();
    let mut foreign = 0;
    for (shard, holder) in view.holders.iter().enumerate() {
        match holder.map(|h| view.members.binary_search(&h)) {
            Some(Ok(i)) => held[i].push(shard),
            // A live lease of a non-member: nobody's to take, and not counted in the targets.
            Some(Err(_)) => foreign += 1,
            None => pool.push(shard),
        }
    }
    // The members share what the non-members do not hold.
    let shards = shards - foreign;
    let floor = shards / members;
    let ceil = shards.div_ceil(members);
    let lacking: usize = (0..members)
        .map(|i| target(shards, members, i).saturating_sub(held[i].len()))
        .sum();
    let below_floor = held.iter().any(|h| h.len() < floor);
    let mut to_release = if below_floor {
        lacking.saturating_sub(pool.len())
    } else {
        0
    };
    for (i, shards_held) in held.iter().enumerate() {
        let surplus = shards_held.len().saturating_sub(target(shards, members, i));
        // Nobody below the floor: only what lies above the ceiling moves (to members below
        // their targets; there is room, since the targets sum to the shards).
        let above_ceil = shards_held.len().saturating_sub(ceil);
        let release = if below_floor {
            surplus.min(to_release)
        } else {
            above_ceil
        };
        to_release -= release.min(to_release);
        let keep = shards_held.len() - release;
        for &shard in &shards_held[..keep] {
            owner[shard] = Some(i);
        }
        // The highest-numbered shards go: a member's low shards stay put through changes.
        pool.extend_from_slice(&shards_held[keep..]);
    }
    pool.sort_unstable();
    // Round-robin over the members below their targets, in member order: when the pool cannot
    // fill every gap (shards held by non-members), each gets its turn.
    let mut lack: Vec<usize> = (0..members)
        .map(|i| target(shards, members, i).saturating_sub(held[i].len()))
        .collect();
    let mut pool = pool.into_iter().peekable();
    while pool.peek().is_some() && lack.iter().any(|&l| l > 0) {
        for (i, l) in lack.iter_mut().enumerate() {
            if *l > 0 {
                if let Some(shard) = pool.next() {
                    owner[shard] = Some(i);
                    *l -= 1;
                }
            }
        }
    }
    owner
}

/// Which shards `me` wants from `view`: those [`assign`] designates to it. `me` should be in
/// `view.members` (a process counts itself once its own member flag leads); if it is not, it
/// wants nothing.
pub fn wanted(view: &View<'_>, me: &str) -> Vec<bool> {
    let Ok(me) = view.members.binary_search(&me) else {
        return vec![false; view.holders.len()];
    };
    assign(view).into_iter().map(|o| o == Some(me)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use proptest::prelude::*;

    fn counts_after(view: &View<'_>) -> Vec<usize> {
        let mut counts = vec![0; view.members.len()];
        for i in assign(view).into_iter().flatten() {
            counts[i] += 1;
        }
        counts
    }

    #[test]
    fn names_round_trip_and_foreign_names_are_ignored() {
        assert_eq!(parse("g", &shard_name("g", 12)), Some(Entry::Shard(12)));
        assert_eq!(
            parse("g", &member_name("g", "pod/a")),
            Some(Entry::Member("pod/a"))
        );
        assert_eq!(parse("g", "g/shard/012"), None);
        assert_eq!(parse("g", "g/shard/x"), None);
        assert_eq!(parse("g", "g/member/"), None);
        assert_eq!(parse("g", "gg/shard/1"), None);
        assert_eq!(parse("g", "g/other"), None);
        assert_eq!(group_prefix("g"), "g/");
    }

    #[test]
    fn targets_are_floor_or_ceil_with_the_extras_first_and_sum_to_the_shards() {
        assert_eq!(
            (0..3).map(|i| target(10, 3, i)).collect::<Vec<_>>(),
            [4, 3, 3]
        );
        assert_eq!(target(10, 0, 0), 0);
        assert_eq!((0..8).map(|i| target(256, 8, i)).sum::<usize>(), 256);
    }

    #[test]
    fn a_lone_process_takes_every_free_shard() {
        let view = View::new(5, ["a"], []);
        assert_eq!(wanted(&view, "a"), [true; 5]);
        assert_eq!(wanted(&view, "b"), [false; 5]);
    }

    #[test]
    fn a_join_moves_the_surplus_of_the_fullest_to_the_newcomer() {
        // a holds all 10; b joins: a gives up its five highest shards to b.
        let view = View::new(10, ["b", "a"], (0..10).map(|s| (s, "a")));
        let owners = assign(&view);
        assert_eq!(owners[..5], [Some(0); 5]);
        assert_eq!(owners[5..], [Some(1); 5]);
        // Within one of N/M everywhere: nothing moves, even against the targets.
        let view = View::new(
            10,
            ["a", "b", "c"],
            (0..10).map(|s| (s, ["a", "b", "b", "c"][s % 4])),
        );
        assert_eq!(view.counts(), [3, 5, 2]);
        let view = View::new(
            10,
            ["a", "b", "c"],
            (0..10).map(|s| (s, ["a", "b", "c"][s % 3])),
        );
        assert_eq!(view.counts(), [4, 3, 3]);
        let owners = assign(&view);
        assert!(owners
            .iter()
            .zip(&view.holders)
            .all(|(o, h)| o.map(|i| view.members[i]) == *h));
    }

    #[test]
    fn shards_of_non_members_are_nobodys_and_a_blip_changes_nothing() {
        // "go" is not a member: its shard is left alone.
        let view = View::new(4, ["a", "b"], [(0, "go"), (1, "a"), (2, "a")]);
        assert_eq!(assign(&view), [None, Some(0), Some(0), Some(1)]);
        // Two of eight held by Go: the six others are shared three and three, not four and two.
        let view = View::new(8, ["a", "b"], [(0, "go"), (1, "go")]);
        let owners = assign(&view);
        assert_eq!(owners.iter().filter(|o| **o == Some(0)).count(), 3);
        assert_eq!(owners.iter().filter(|o| **o == Some(1)).count(), 3);
    }

    fn arb_view() -> impl Strategy<Value = (usize, Vec<String>, Vec<Option<usize>>)> {
        (1usize..8, 0usize..64).prop_flat_map(|(m, n)| {
            (
                Just(n),
                Just(
                    (0..m)
                        .map(|i| ((b'a' + i as u8) as char).to_string())
                        .collect(),
                ),
                // m + 1 is a non-member (a Go peer).
                proptest::collection::vec(proptest::option::of(0..=m), n),
            )
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn every_process_agrees_and_each_shard_has_one_taker(
            (n, names, holders) in arb_view(),
            order in any::<u64>(),
        ) {
            let foreign = "zz-go".to_string();
            let name = |i: usize| names.get(i).unwrap_or(&foreign).as_str();
            let held: Vec<_> = holders.iter().enumerate()
                .filter_map(|(s, h)| h.map(|h| (s, name(h)))).collect();
            let view = View::new(n, names.iter().map(String::as_str), held.iter().copied());
            // The members' order in the input does not matter.
            let mut shuffled: Vec<&str> = names.iter().map(String::as_str).collect();
            shuffled.rotate_left((order as usize) % names.len());
            let other = View::new(n, shuffled, held.iter().copied());
            prop_assert_eq!(assign(&view), assign(&other));
            let wants: Vec<Vec<bool>> = names.iter().map(|me| wanted(&view, me)).collect();
            for s in 0..n {
                let takers = wants.iter().filter(|w| w[s]).count();
                prop_assert!(takers <= 1, "shard {} wanted by {}", s, takers);
                // A live holder that is a member is either kept or gives it up; a foreign one
                // is left alone.
                if view.holders[s] == Some(foreign.as_str()) {
                    prop_assert_eq!(takers, 0);
                }
            }
        }

        #[test]
        fn everyone_ends_within_one_of_the_share_left_by_non_members_and_moves_are_minimal(
            (n_all, names, holders) in arb_view(),
        ) {
            let m = names.len();
            let foreign = "zz-go".to_string();
            let held: Vec<_> = holders.iter().enumerate()
                .filter_map(|(s, h)| h.map(|h| (s, names.get(h).unwrap_or(&foreign).as_str())))
                .collect();
            let view = View::new(n_all, names.iter().map(String::as_str), held.iter().copied());
            let n = n_all - held.iter().filter(|(_, h)| *h == foreign.as_str()).count();
            let before = view.counts();
            let after = counts_after(&view);
            prop_assert_eq!(after.iter().sum::<usize>(), n);
            let floor = n / m;
            let ceil = floor + usize::from(n % m != 0);
            for (i, &c) in after.iter().enumerate() {
                prop_assert!(c >= floor, "member {} ends with {} < {}", i, c, floor);
                prop_assert!(c <= ceil, "member {} ends with {} > {}", i, c, ceil);
            }
            // Moves: shards leaving a holder; at most what those below their targets lack.
            let owners = assign(&view);
            let moved = owners.iter().zip(&view.holders)
                .filter(|(o, h)| h.is_some_and(|h| view.members.binary_search(&h).is_ok())
                    && o.map(|i| view.members[i]) != **h)
                .count();
            let lacking: usize = (0..m).map(|i| target(n, m, i).saturating_sub(before[i])).sum();
            prop_assert!(moved <= lacking);
            // Stable: a second round on the result moves nothing.
            let next: Vec<_> = owners.iter().enumerate()
                .filter_map(|(s, o)| o.map(|i| (s, view.members[i]))).collect();
            let next: Vec<_> = next.into_iter()
                .chain(held.iter().copied().filter(|(_, h)| *h == foreign.as_str()))
                .collect();
            let again = View::new(n_all, names.iter().map(String::as_str), next.iter().copied());
            prop_assert_eq!(assign(&again), owners);
        }
    }
}
