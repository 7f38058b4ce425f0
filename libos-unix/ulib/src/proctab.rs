//! The process table: one page shared by every process of the libOS (as
//! ExOS kept it), so any process can find any other by pid (`kill`, `ps`),
//! a parent finds its children's exit status (`wait`), and an orphan is
//! handed to init. Plain data and pure functions here; the lock word and
//! the mapping live in the Unix library (`ulib::table`).

/// Processes one table holds at once.
pub const MAX_PROCS: usize = 60;
/// The pid of init (the libOS's first environment, which reaps orphans).
pub const INIT_PID: u64 = 1;

/// Where a process is in its life.
pub mod state {
    pub const FREE: u64 = 0;
    pub const RUNNING: u64 = 1;
    /// Ended; its parent has not collected the status yet.
    pub const ZOMBIE: u64 = 2;
}

/// Bits of [`Proc::flags`].
pub mod flags {
    /// It handles SIGTERM itself (delivered to its protected entry).
    pub const CATCHES_SIGTERM: u64 = 1;
}

/// How a process ended, as `wait` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitStatus {
    Exited(i32),
    Signaled(u32),
}

impl WaitStatus {
    /// The Unix encoding: exit code in bits 8..16, or the signal in 0..7.
    pub fn encode(self) -> i64 {
        match self {
            WaitStatus::Exited(code) => ((code & 0xff) << 8) as i64,
            WaitStatus::Signaled(signal) => (signal & 0x7f) as i64,
        }
    }

    pub fn decode(word: i64) -> WaitStatus {
        if word & 0x7f == 0 {
            WaitStatus::Exited(((word >> 8) & 0xff) as i32)
        } else {
            WaitStatus::Signaled((word & 0x7f) as u32)
        }
    }
}

/// One process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Proc {
    pub pid: u64,
    pub ppid: u64,
    /// The environment running it now (exec moves it to a new one).
    pub env: u64,
    pub state: u64,
    /// [`WaitStatus::encode`] once a zombie.
    pub status: i64,
    pub flags: u64,
    /// Its program's name, NUL padded.
    pub name: [u8; 16],
}

impl Proc {
    pub fn name(&self) -> &str {
        let len = self.name.iter().position(|&b| b == 0).unwrap_or(self.name.len());
        core::str::from_utf8(&self.name[..len]).unwrap_or("?")
    }

    pub fn set_name(&mut self, name: &str) {
        self.name = [0; 16];
        let mut len = name.len().min(16);
        while !name.is_char_boundary(len) {
            len -= 1;
        }
        self.name[..len].copy_from_slice(&name.as_bytes()[..len]);
    }
}

/// The table (after its lock word, which the library keeps).
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct ProcTable {
    pub next_pid: u64,
    pub procs: [Proc; MAX_PROCS],
}

impl Default for ProcTable {
    fn default() -> Self {
        ProcTable { next_pid: INIT_PID, procs: [Proc::default(); MAX_PROCS] }
    }
}

impl ProcTable {
    /// A new running process; None when the table is full.
    pub fn add(&mut self, ppid: u64, env: u64, name: &str) -> Option<u64> {
        let slot = self.procs.iter_mut().find(|p| p.state == state::FREE)?;
        let pid = self.next_pid.max(INIT_PID);
        self.next_pid = pid + 1;
        *slot = Proc { pid, ppid, env, state: state::RUNNING, ..Proc::default() };
        slot.set_name(name);
        Some(pid)
    }

    pub fn get(&self, pid: u64) -> Option<&Proc> {
        self.procs.iter().find(|p| p.state != state::FREE && p.pid == pid)
    }

    pub fn get_mut(&mut self, pid: u64) -> Option<&mut Proc> {
        self.procs.iter_mut().find(|p| p.state != state::FREE && p.pid == pid)
    }

    /// The running process whose environment is `env`.
    pub fn by_env(&self, env: u64) -> Option<&Proc> {
        self.procs.iter().find(|p| p.state == state::RUNNING && p.env == env)
    }

    /// Process `pid` ended with `status`: a zombie until its parent
    /// collects it. False if it had already ended (the first end counts).
    pub fn end(&mut self, pid: u64, status: WaitStatus) -> bool {
        match self.get_mut(pid) {
            Some(p) if p.state == state::RUNNING => {
                p.state = state::ZOMBIE;
                p.status = status.encode();
                true
            }
            _ => false,
        }
    }

    /// `pid` is going: its children, running or zombie, pass to init.
    pub fn orphan_children(&mut self, pid: u64) -> usize {
        // Zombies go to init too: init collects them.
        let mut orphans = 0;
        for p in self.procs.iter_mut().filter(|p| p.state != state::FREE && p.ppid == pid) {
            p.ppid = INIT_PID;
            orphans += 1;
        }
        orphans
    }

    /// Does `ppid` have children (running or zombie) that match `which`
    /// (a pid, or any child for `None`)?
    pub fn has_children(&self, ppid: u64, which: Option<u64>) -> bool {
        self.procs.iter().any(|p| p.state != state::FREE && p.ppid == ppid && which.is_none_or(|w| w == p.pid))
    }

    /// Collect an ended child of `ppid` (`which`: that pid only): its pid
    /// and status; its slot is freed.
    pub fn reap(&mut self, ppid: u64, which: Option<u64>) -> Option<(u64, WaitStatus)> {
        let p = self
            .procs
            .iter_mut()
            .find(|p| p.state == state::ZOMBIE && p.ppid == ppid && which.is_none_or(|w| w == p.pid))?;
        let found = (p.pid, WaitStatus::decode(p.status));
        *p = Proc::default();
        Some(found)
    }

    /// Processes alive or not yet collected.
    pub fn count(&self) -> usize {
        self.procs.iter().filter(|p| p.state != state::FREE).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_encode_as_unix_does() {
        assert_eq!(WaitStatus::Exited(3).encode(), 0x300);
        assert_eq!(WaitStatus::Signaled(9).encode(), 9);
        for status in [WaitStatus::Exited(0), WaitStatus::Exited(255), WaitStatus::Signaled(15)] {
            assert_eq!(WaitStatus::decode(status.encode()), status);
        }
    }

    #[test]
    fn a_parent_reaps_its_own_children_only() {
        let mut table = ProcTable::default();
        let init = table.add(0, 10, "init").unwrap();
        assert_eq!(init, INIT_PID);
        let a = table.add(init, 11, "a").unwrap();
        let b = table.add(a, 12, "b-with-a-long-name-cut").unwrap();
        assert_eq!(table.get(b).unwrap().name(), "b-with-a-long-na");
        assert_eq!(table.by_env(12).unwrap().pid, b);
        assert!(table.has_children(a, None) && table.has_children(a, Some(b)) && !table.has_children(a, Some(a)));
        assert_eq!(table.reap(a, None), None, "b still runs");
        assert!(table.end(b, WaitStatus::Exited(7)));
        assert!(!table.end(b, WaitStatus::Signaled(9)), "the first end counts");
        assert_eq!(table.reap(init, None), None, "not init's child");
        assert_eq!(table.reap(a, Some(b)), Some((b, WaitStatus::Exited(7))));
        assert!(!table.has_children(a, None));
        assert_eq!(table.count(), 2);
    }

    #[test]
    fn orphans_pass_to_init_and_the_table_fills_up() {
        let mut table = ProcTable::default();
        let init = table.add(0, 1, "init").unwrap();
        let a = table.add(init, 2, "a").unwrap();
        let b = table.add(a, 3, "b").unwrap();
        let c = table.add(a, 4, "c").unwrap();
        table.end(c, WaitStatus::Exited(0));
        table.orphan_children(a);
        assert_eq!((table.get(b).unwrap().ppid, table.get(c).unwrap().ppid), (INIT_PID, INIT_PID));
        assert_eq!(table.reap(init, None), Some((c, WaitStatus::Exited(0))));
        while table.add(init, 9, "x").is_some() {}
        assert_eq!(table.count(), MAX_PROCS);
    }
}
