//! The manifest's task list, `tasks = C:T[:D],C:T[:D],...`: parsing and scaling to clock ticks.
//!
//! Each entry is a budget `C`, a period `T` and optionally a relative
//! deadline `D` (default `T`), all in the libOS's time unit (`unit_us`).
//! Tasks get ids in list order. Whitespace around numbers and entries is
//! ignored; an empty entry (as in `1:4,,2:8`) is an error.

use crate::runner::MAX_TASKS;
use crate::sched::Task;
use alloc::vec::Vec;

/// Why a task list was refused. Entry positions count from 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpecError {
    /// No entries at all.
    Empty,
    /// More than [`MAX_TASKS`] entries.
    TooMany {
        /// How many entries the list has.
        count: usize,
    },
    /// Entry `index` is not `C:T` or `C:T:D` with decimal numbers.
    Malformed {
        /// Position of the entry.
        index: usize,
    },
    /// Entry `index` breaks the task model: a period or deadline of zero,
    /// or a deadline after the period.
    Invalid {
        /// Position of the entry.
        index: usize,
    },
}

impl core::fmt::Display for SpecError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SpecError::Empty => write!(f, "no tasks"),
            SpecError::TooMany { count } => write!(f, "{count} tasks, at most {MAX_TASKS}"),
            SpecError::Malformed { index } => write!(f, "task {index}: expected C:T or C:T:D"),
            SpecError::Invalid { index } => write!(f, "task {index}: need T > 0 and 0 < D <= T"),
        }
    }
}

/// Parse a task list into tasks counted in the list's unit.
pub fn parse_tasks(text: &str) -> Result<Vec<Task>, SpecError> {
    if text.trim().is_empty() {
        return Err(SpecError::Empty);
    }
    let count = text.split(',').count();
    if count > MAX_TASKS {
        return Err(SpecError::TooMany { count });
    }
    let mut tasks = Vec::with_capacity(count);
    for (index, entry) in text.split(',').enumerate() {
        let mut numbers = [0u64; 3];
        let mut fields = 0;
        for field in entry.split(':') {
            if fields == numbers.len() {
                return Err(SpecError::Malformed { index });
            }
            numbers[fields] = field.trim().parse().map_err(|_| SpecError::Malformed { index })?;
            fields += 1;
        }
        let [budget, period, deadline] = match fields {
            2 => [numbers[0], numbers[1], numbers[1]],
            3 => numbers,
            _ => return Err(SpecError::Malformed { index }),
        };
        let task = Task::new(index, period, budget, deadline);
        if !task.is_valid() {
            return Err(SpecError::Invalid { index });
        }
        tasks.push(task);
    }
    Ok(tasks)
}

/// The same tasks with every time multiplied by `ticks_per_unit`, or
/// `None` if a product overflows or `ticks_per_unit` is zero.
pub fn scale(tasks: &[Task], ticks_per_unit: u64) -> Option<Vec<Task>> {
    if ticks_per_unit == 0 {
        return None;
    }
    tasks
        .iter()
        .map(|task| {
            Some(Task::new(
                task.id,
                task.period_ticks.checked_mul(ticks_per_unit)?,
                task.budget_ticks.checked_mul(ticks_per_unit)?,
                task.deadline_ticks.checked_mul(ticks_per_unit)?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;

    #[test]
    fn parses_implicit_and_constrained_deadlines() {
        assert_eq!(parse_tasks("2:5,4:7"), Ok(vec![Task::implicit(0, 5, 2), Task::implicit(1, 7, 4)]));
        assert_eq!(parse_tasks(" 1 : 10 : 8 , 2:20 "), Ok(vec![Task::new(0, 10, 1, 8), Task::implicit(1, 20, 2)]));
        assert_eq!(parse_tasks("0:3"), Ok(vec![Task::implicit(0, 3, 0)]), "a zero budget is valid");
    }

    #[test]
    fn refuses_malformed_and_invalid_lists() {
        assert_eq!(parse_tasks(""), Err(SpecError::Empty));
        assert_eq!(parse_tasks("  "), Err(SpecError::Empty));
        assert_eq!(parse_tasks("1:4,,2:8"), Err(SpecError::Malformed { index: 1 }));
        assert_eq!(parse_tasks("1"), Err(SpecError::Malformed { index: 0 }));
        assert_eq!(parse_tasks("1:2:2:2"), Err(SpecError::Malformed { index: 0 }));
        assert_eq!(parse_tasks("1:x"), Err(SpecError::Malformed { index: 0 }));
        assert_eq!(parse_tasks("1:4,-1:4"), Err(SpecError::Malformed { index: 1 }));
        assert_eq!(parse_tasks("1:0"), Err(SpecError::Invalid { index: 0 }));
        assert_eq!(parse_tasks("1:4,1:4:5"), Err(SpecError::Invalid { index: 1 }));
        assert_eq!(parse_tasks("1:4:0"), Err(SpecError::Invalid { index: 0 }));
        let many = vec!["1:100"; MAX_TASKS + 1].join(",");
        assert_eq!(parse_tasks(&many), Err(SpecError::TooMany { count: MAX_TASKS + 1 }));
        assert_eq!(parse_tasks(&many[..many.len() - 6]).map(|tasks| tasks.len()), Ok(MAX_TASKS));
    }

    #[test]
    fn scales_every_time_and_detects_overflow() {
        let tasks = parse_tasks("2:5:4").unwrap();
        assert_eq!(scale(&tasks, 1000), Some(vec![Task::new(0, 5000, 2000, 4000)]));
        assert_eq!(scale(&tasks, u64::MAX / 4), None);
        assert_eq!(scale(&tasks, 0), None);
    }
}
