//! Revocation decisions: whom the kernel asks for frames back, how many,
//! and which frames the abort protocol takes when it is not answered.
//!
//! The kernel's one memory policy (see `docs/MEMORY.md`): an environment
//! may hold its quota for sure and borrow beyond it while the pool has
//! frames. When the pool is used up and an environment within its quota
//! asks, the environment furthest over its quota is asked for up to
//! [`REVOKE_BATCH`] frames with a deadline; past the deadline its newest
//! frames are taken by force.

/// Frames asked back in one repossession request.
pub const REVOKE_BATCH: u64 = 8;

/// What the revocation policy needs to know of one environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Holding {
    /// Still running (an ended environment holds nothing to give).
    pub runnable: bool,
    /// Pool frames charged to it: frames under keys plus page tables.
    pub charged: u64,
    /// Its quota in frames.
    pub quota: u64,
}

impl Holding {
    /// Frames it holds beyond its quota (0 if within).
    pub fn over(&self) -> u64 {
        self.charged.saturating_sub(self.quota)
    }
}

/// The environment to ask for frames when `asker` cannot get one: the
/// runnable one furthest over its quota, never the asker; the first such on
/// a tie. None if nobody is over quota. `holdings` are by environment index
/// (an iterator, so the kernel need not collect its tables to ask).
pub fn pick_victim(holdings: impl IntoIterator<Item = Holding>, asker: usize) -> Option<usize> {
    let mut best: Option<(usize, u64)> = None;
    for (index, holding) in holdings.into_iter().enumerate() {
        if index == asker || !holding.runnable || holding.over() == 0 {
            continue;
        }
        if best.is_none_or(|(_, over)| holding.over() > over) {
            best = Some((index, holding.over()));
        }
    }
    best.map(|(index, _)| index)
}

/// How many frames one request asks of `victim`.
pub fn frames_to_ask(victim: &Holding) -> u64 {
    victim.over().min(REVOKE_BATCH)
}

/// The frames the abort protocol takes when `owed` frames were not given
/// back: the most recently allocated first, never more than are held.
/// `held` lists frames oldest first.
pub fn frames_to_take(held: &[u64], owed: u64) -> &[u64] {
    let take = (owed as usize).min(held.len());
    &held[held.len() - take..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holding(charged: u64, quota: u64) -> Holding {
        Holding { runnable: true, charged, quota }
    }

    #[test]
    fn the_one_furthest_over_its_quota_is_asked() {
        let envs = [holding(10, 8), holding(30, 8), holding(4, 16), holding(20, 8)];
        assert_eq!(pick_victim(envs, 2), Some(1));
        assert_eq!(pick_victim(envs, 1), Some(3), "never the asker");
    }

    #[test]
    fn nobody_over_quota_means_no_victim() {
        let envs = [holding(8, 8), holding(0, 8), holding(3, 4)];
        assert_eq!(pick_victim(envs, 0), None);
    }

    #[test]
    fn ended_environments_are_never_asked() {
        let mut envs = [holding(100, 1), holding(9, 8)];
        envs[0].runnable = false;
        assert_eq!(pick_victim(envs, 5), Some(1));
    }

    #[test]
    fn ties_go_to_the_first() {
        let envs = [holding(4, 8), holding(12, 8), holding(12, 8)];
        assert_eq!(pick_victim(envs, 0), Some(1));
    }

    #[test]
    fn a_request_asks_for_the_excess_up_to_a_batch() {
        assert_eq!(frames_to_ask(&holding(11, 8)), 3);
        assert_eq!(frames_to_ask(&holding(100, 8)), REVOKE_BATCH);
        assert_eq!(frames_to_ask(&holding(2, 8)), 0);
    }

    #[test]
    fn the_newest_frames_are_taken_and_never_more_than_held() {
        let held = [10, 11, 12, 13, 14];
        assert_eq!(frames_to_take(&held, 2), &[13, 14]);
        assert_eq!(frames_to_take(&held, 9), &held[..]);
        assert_eq!(frames_to_take(&held, 0), &[] as &[u64]);
        assert_eq!(frames_to_take(&[], 3), &[] as &[u64]);
    }
}
