//! CPU decisions: who runs a time slot, and what an overrun costs.
//!
//! A slot's owner runs it, unless it is blocked in a protected call, in
//! which case the time is donated along the chain of calls to the
//! environment that will answer (the callee runs on the caller's time).
//! A slot with no owner, or whose owner cannot run, goes round-robin to the
//! runnable environments that are not blocked.

/// What the slot decisions need to know of one environment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Runnable {
    /// Not ended.
    pub alive: bool,
    /// Blocked in a protected call on this environment.
    pub waiting_on: Option<usize>,
    /// Asleep in `block` until woken.
    pub blocked: bool,
}

impl Runnable {
    /// May it be given the CPU on its own behalf?
    pub fn schedulable(&self) -> bool {
        self.alive && self.waiting_on.is_none() && !self.blocked
    }
}

/// The environments' states, by index (`count` of them): read through a
/// function so the kernel need not copy its tables on the scheduling path.
pub trait States {
    fn count(&self) -> usize;
    fn state(&self, env: usize) -> Runnable;
}

impl States for [Runnable] {
    fn count(&self) -> usize {
        self.len()
    }
    fn state(&self, env: usize) -> Runnable {
        self[env]
    }
}

/// Follow donation from `env`: an environment blocked in a call runs its
/// callee, transitively (bounded by the number of environments, so a cycle
/// cannot loop).
pub fn resolve_donation<S: States + ?Sized>(envs: &S, mut env: usize) -> usize {
    for _ in 0..envs.count() {
        match envs.state(env).waiting_on {
            Some(callee) if callee < envs.count() && envs.state(callee).alive => env = callee,
            _ => break,
        }
    }
    env
}

/// Who runs a slot owned by `owner`, if the owner (or its donation chain)
/// can: the owner itself when schedulable, else the callee it donates to.
/// None: the slot goes round-robin.
pub fn owner_runner<S: States + ?Sized>(envs: &S, owner: usize) -> Option<usize> {
    if owner >= envs.count() {
        return None;
    }
    let owner_state = envs.state(owner);
    if !owner_state.alive {
        return None;
    }
    let runner = resolve_donation(envs, owner);
    let can = envs.state(runner).alive && (runner != owner || owner_state.schedulable());
    can.then_some(runner)
}

/// Who runs time that the family rooted at `root` has (a slot the root
/// owns, or one it was given round-robin). The members (`member(i)`: env
/// `i` is in the family; the root is) take turns: the first schedulable
/// member after `last` in index order, wrapping. If none can run on its
/// own behalf, the time is donated along a protected call a member is
/// blocked in, the root's first. None: the whole family is asleep or
/// ended, and the time goes round-robin.
pub fn family_runner<S: States + ?Sized>(
    envs: &S,
    root: usize,
    last: usize,
    member: impl Fn(usize) -> bool,
) -> Option<usize> {
    let count = envs.count();
    if root >= count {
        return None;
    }
    let turn = (1..=count).map(|step| (last + step) % count);
    if let Some(next) = turn.clone().find(|&e| member(e) && envs.state(e).schedulable()) {
        return Some(next);
    }
    core::iter::once(root).chain(turn.filter(|&e| e != root)).filter(|&e| member(e)).find_map(|e| owner_runner(envs, e))
}

/// A forced preemption `overrun` ticks past a save bound: the penalty owed
/// grows by it (paid off the environment's next slots).
pub fn charge_overrun(penalty_owed: u64, overrun: u64) -> u64 {
    penalty_owed.saturating_add(overrun)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALIVE: Runnable = Runnable { alive: true, waiting_on: None, blocked: false };
    const DEAD: Runnable = Runnable { alive: false, waiting_on: None, blocked: false };
    const ASLEEP: Runnable = Runnable { alive: true, waiting_on: None, blocked: true };

    fn waiting(on: usize) -> Runnable {
        Runnable { alive: true, waiting_on: Some(on), blocked: false }
    }

    #[test]
    fn a_family_takes_turns_and_skips_the_asleep() {
        // 0 is the root; 1 and 3 are its members; 2 is another family.
        let member = |e: usize| e == 0 || e == 1 || e == 3;
        let envs = [ALIVE, ALIVE, ALIVE, ALIVE];
        assert_eq!(family_runner(&envs[..], 0, 0, member), Some(1));
        assert_eq!(family_runner(&envs[..], 0, 1, member), Some(3));
        assert_eq!(family_runner(&envs[..], 0, 3, member), Some(0), "wraps to the root");
        let envs = [ASLEEP, ALIVE, ALIVE, ASLEEP];
        assert_eq!(family_runner(&envs[..], 0, 1, member), Some(1), "the only one awake runs again");
        let envs = [ASLEEP, DEAD, ALIVE, ASLEEP];
        assert_eq!(family_runner(&envs[..], 0, 0, member), None, "never another family's member");
        assert_eq!(family_runner(&envs[..], 9, 0, member), None);
    }

    #[test]
    fn a_member_left_out_is_never_chosen() {
        // `yield` asks for someone other than the caller: the root alone
        // in its family has no one to give its time to.
        let member = |e: usize| e == 1;
        assert_eq!(family_runner(&[ALIVE, ALIVE][..], 0, 0, member), Some(1));
        let no_one = |_: usize| false;
        assert_eq!(family_runner(&[ALIVE, ALIVE][..], 0, 0, no_one), None);
    }

    #[test]
    fn a_family_blocked_in_a_call_donates_its_time() {
        let member = |e: usize| e == 0 || e == 1;
        let envs = [ASLEEP, waiting(2), ALIVE];
        assert_eq!(family_runner(&envs[..], 0, 0, member), Some(2));
    }

    #[test]
    fn an_owner_that_can_run_runs_its_slot() {
        assert_eq!(owner_runner(&[ALIVE, ALIVE][..], 1), Some(1));
    }

    #[test]
    fn a_blocked_owner_donates_its_slot_along_the_call_chain() {
        let envs = [waiting(1), waiting(2), ALIVE];
        assert_eq!(owner_runner(&envs[..], 0), Some(2));
        assert_eq!(resolve_donation(&envs[..], 0), 2);
    }

    #[test]
    fn an_ended_owner_or_callee_gives_the_slot_to_round_robin() {
        assert_eq!(owner_runner(&[DEAD, ALIVE][..], 0), None);
        // Blocked on an ended callee: cannot run itself, nobody to donate to.
        assert_eq!(owner_runner(&[waiting(1), DEAD][..], 0), None);
        assert_eq!(owner_runner(&[ALIVE][..], 7), None, "no such env");
    }

    #[test]
    fn a_call_cycle_does_not_loop() {
        let envs = [waiting(1), waiting(0)];
        let runner = resolve_donation(&envs[..], 0);
        assert!(runner < 2);
        assert_eq!(owner_runner(&envs[..], 0), None, "both blocked: nobody can run");
    }

    #[test]
    fn overruns_accumulate_as_penalty() {
        assert_eq!(charge_overrun(100, 50), 150);
        assert_eq!(charge_overrun(u64::MAX, 1), u64::MAX);
    }
}
