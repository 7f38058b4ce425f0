//! What every utility's command line has in common: single-letter flags
//! (`-l`, combinable as `-lv`) and the operands after them.

use alloc::vec::Vec;

/// The flags given (a set of letters).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flags(u64);

impl Flags {
    /// Was flag `c` given?
    pub fn has(self, c: char) -> bool {
        flag_bit(c).is_some_and(|bit| self.0 & bit != 0)
    }
}

fn flag_bit(c: char) -> Option<u64> {
    match c {
        'a'..='z' => Some(1 << (c as u32 - 'a' as u32)),
        'A'..='Z' => Some(1 << (26 + c as u32 - 'A' as u32)),
        _ => None,
    }
}

/// Split `args` (the program's name first) into flags among `known` and
/// operands. `--` ends the flags; so does the first operand when
/// `flags_first` (as grep's pattern must be free to start with `-`).
/// A flag not in `known` is the error.
pub fn parse<'a>(args: &[&'a str], known: &str, flags_first: bool) -> Result<(Flags, Vec<&'a str>), char> {
    let mut flags = Flags::default();
    let mut operands = Vec::new();
    let mut options = true;
    for &arg in args.get(1..).unwrap_or(&[]) {
        if options && arg == "--" {
            options = false;
        } else if options && arg.len() > 1 && arg.starts_with('-') {
            for c in arg[1..].chars() {
                match flag_bit(c) {
                    Some(bit) if known.contains(c) => flags.0 |= bit,
                    _ => return Err(c),
                }
            }
        } else {
            options &= !flags_first;
            operands.push(arg);
        }
    }
    Ok((flags, operands))
}

/// Where a utility's work on one input failed: reading it, or writing
/// standard output (which ends the utility).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    Read(crate::Errno),
    Write(crate::Errno),
}

/// Run `work(fd, index)` on each of `paths` in turn (`-` is standard
/// input), opening and closing each file. A file that cannot be opened or
/// read is reported as `PROGRAM: PATH: ERRNO` and skipped (status 1); a
/// write error is reported and ends the run (status 1). Returns the exit
/// status.
pub fn each_input(program: &str, paths: &[&str], mut work: impl FnMut(i32, usize) -> Result<(), Failure>) -> i32 {
    use crate::io::{close, open, O_RDONLY};
    let mut status = 0;
    for (index, &path) in paths.iter().enumerate() {
        let (fd, opened) = if path == "-" {
            (0, false)
        } else {
            match open(path, O_RDONLY) {
                Ok(fd) => (fd, true),
                Err(error) => {
                    crate::errln!("{}: {}: {}", program, path, error);
                    status = 1;
                    continue;
                }
            }
        };
        let result = work(fd, index);
        if opened {
            let _ = close(fd);
        }
        match result {
            Ok(()) => {}
            Err(Failure::Read(error)) => {
                crate::errln!("{}: {}: {}", program, path, error);
                status = 1;
            }
            Err(Failure::Write(error)) => {
                crate::errln!("{}: write error: {}", program, error);
                return 1;
            }
        }
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_operands() {
        let (flags, operands) = parse(&["ls", "-l", "a", "-v", "b"], "lv", false).unwrap();
        assert!(flags.has('l') && flags.has('v') && !flags.has('x'));
        assert_eq!(operands, ["a", "b"]);
        assert_eq!(parse(&["grep", "-q", "x"], "vc", true), Err('q'));
        // With flags first, everything after the first operand is an operand.
        let (flags, operands) = parse(&["grep", "-vc", "pat", "-c"], "vc", true).unwrap();
        assert!(flags.has('v') && flags.has('c'));
        assert_eq!(operands, ["pat", "-c"]);
        // `--` ends the flags; a lone `-` is an operand (standard input).
        let (flags, operands) = parse(&["cat", "--", "-x", "-"], "", false).unwrap();
        assert_eq!((flags, operands), (Flags::default(), alloc::vec!["-x", "-"]));
    }
}
