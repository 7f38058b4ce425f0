//! libos-unix: a UNIX-like library OS. Today: boots in ring 3, prints
//! through the console call, takes its own exceptions and page faults and
//! resumes the faulting code, and demand-pages a region over keyed frames
//! with the pager the manifest names (FIFO, Clock, LRU-approx), paging out
//! to a backing store, also when the kernel asks for frames back. Runs
//! preemptive user-level threads under the manifest's scheduler (round
//! robin or MLFQ), switched from the kernel's end-of-slot upcalls. Runs a
//! TCP/IP stack (smoltcp) on packets its downloaded filters claim, serving
//! UDP echo and a tiny HTTP server reachable from the host. As `init`, it
//! runs Unix programs as processes (`ulib`: fork, exec, wait, kill).
#![no_std]
#![no_main]

extern crate alloc;

use core::arch::asm;
use libos_runtime::println;
use libos_runtime::rt::{set_handler, Env};
use libos_runtime::upcall::{UpcallFrame, UpcallKind};

mod fsserver;
mod init;
mod net;
mod paging;
mod threads;

libos_runtime::libos_main!(main);

fn main(env: &Env) -> i32 {
    println!("libos-unix up: env {} args {:?}", env.id, env.args);
    match env.args.trim() {
        "faults" => faults(),
        "paging" => paging_workload(env),
        "pressure" => pressure_workload(env),
        "threads" => threads::threads_workload(env),
        "hog" => threads::hog_workload(env),
        "net" => net::net_workload(env),
        _ if env.args.trim().starts_with("init") => init::run(env),
        _ => demo(),
    }
}

/// CPU-bound work that prints as it goes, so the timer interleaves it with
/// the other libOSes.
fn demo() -> i32 {
    let mut found = 0u64;
    let mut candidate = 2u64;
    for round in 1..=8 {
        let goal = found + 400;
        while found < goal {
            if is_prime(candidate) {
                found += 1;
            }
            candidate += 1;
        }
        println!("round {}: {} primes so far, largest below {}", round, found, candidate);
    }
    println!("done");
    0
}

fn is_prime(n: u64) -> bool {
    n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| !n.is_multiple_of(d))
}

/// Divide by zero and touch an unmapped page, handle both, resume.
fn faults() -> i32 {
    set_handler(UpcallKind::Exception, on_exception).expect("register exception handler");
    set_handler(UpcallKind::PageFault, on_page_fault).expect("register page-fault handler");

    let quotient: u64;
    // SAFETY: divides by zero on purpose; the handler steps over the 3-byte
    // `div rcx` and puts a sentinel in rax.
    unsafe {
        asm!("xor edx, edx", "div rcx", inout("rax") 100u64 => quotient, in("rcx") 0u64, out("rdx") _, options(nostack));
    }
    println!("divide by zero handled: resumed with rax = {:#x}", quotient);

    let value: u64;
    // SAFETY: the load faults on purpose; the handler redirects r12.
    unsafe { asm!("mov rax, [r12]", inout("r12") UNMAPPED => _, out("rax") value, options(nostack)) };
    println!("page fault handled: resumed and loaded {:#x}", value);
    if quotient == DIV_SENTINEL && value == FALLBACK_WORD {
        println!("faults: ok");
        0
    } else {
        println!("faults: WRONG values");
        1
    }
}

const DIV_SENTINEL: u64 = 0xd1d0;
const UNMAPPED: u64 = 0x0000_5000_0000_0000;
const FALLBACK_WORD: u64 = 0x600d_f00d;
static FALLBACK: u64 = FALLBACK_WORD;

fn on_exception(frame: &mut UpcallFrame) {
    println!("exception {} at {:#x}: stepping over", frame.vector, frame.rip);
    if frame.vector == 0 {
        frame.rip += 3;
        frame.regs.rax = DIV_SENTINEL;
    }
}

fn on_page_fault(frame: &mut UpcallFrame) {
    println!("page fault at {:#x} (error {:#x}) from {:#x}", frame.fault_addr, frame.error_code, frame.rip);
    if frame.fault_addr == UNMAPPED {
        frame.regs.r12 = &FALLBACK as *const u64 as u64;
    }
}

/// Set up the demand-paged region with the manifest's pager and budget.
fn start_paging(env: &Env, page_count: usize, default_frames: usize) -> Result<(), &'static str> {
    let pager_name = env.param("pager").unwrap_or("clock");
    let pager = libos_unix::pager::by_name(pager_name).ok_or("unknown pager (fifo, clock, lru)")?;
    let frames = env.param("frames").and_then(|f| f.parse().ok()).unwrap_or(default_frames);
    *paging::REGION.lock() = Some(paging::Region::new(libos_runtime::start::DYNAMIC_BASE, page_count, frames, pager));
    set_handler(UpcallKind::PageFault, paging::on_page_fault).map_err(|_| "page-fault handler")?;
    // The runtime's revocation handler notes requests in its inbox;
    // `paging::safe_point` answers them.
    libos_runtime::revocation::listen().map_err(|_| "revocation handler")?;
    println!("paging: {} pages over {} frames, pager {}", page_count, frames, pager_name);
    Ok(())
}

fn page_addr(page: usize) -> *mut u64 {
    (libos_runtime::start::DYNAMIC_BASE + page as u64 * 4096) as *mut u64
}

/// Words of each page the workloads write and check, spread over the page
/// (one every 512 bytes) so that a page only partly copied back shows too.
const STAMPED_WORDS: usize = 8;
const STAMP_STRIDE_WORDS: usize = 4096 / 8 / STAMPED_WORDS;
/// How many wrong touches to describe before only counting them.
const WRONG_PAGES_SHOWN: u32 = 8;

/// What word `word` of page `page` holds once round `round` wrote it: a tag,
/// the word, the page and the round, so it is never zero and no other page,
/// word or round writes the same value.
fn stamp(page: usize, word: usize, round: u64) -> u64 {
    0xa5u64 << 56 | (word as u64) << 48 | (page as u64 & 0xffff) << 32 | (round & 0xffff_ffff)
}

/// The demand-paged pages as the workload left them: which round last wrote
/// each page, so every touch can require exactly that round's contents.
struct Pages {
    label: &'static str,
    /// The round that last wrote each page (None: never written, so zero).
    last_written: alloc::vec::Vec<Option<u64>>,
    /// Touches that found a page with the wrong contents.
    wrong: u32,
}

impl Pages {
    fn new(label: &'static str, page_count: usize) -> Self {
        Pages { label, last_written: alloc::vec![None; page_count], wrong: 0 }
    }

    /// Touch page `page` in round `round`: check that it holds exactly what
    /// the last round that wrote it wrote (zero if none did), then, if
    /// `write`, stamp it with this round. A dirty page lost on the way out
    /// and back comes in as zero or as an older round's contents, and is
    /// reported with its page and round.
    fn touch(&mut self, page: usize, round: u64, write: bool) {
        let at = page_addr(page);
        let expected_round = self.last_written[page];
        for word in 0..STAMPED_WORDS {
            // SAFETY: the region is ours; a fault there is demand-paged in.
            let found = unsafe { core::ptr::read_volatile(at.add(word * STAMP_STRIDE_WORDS)) };
            let expected = expected_round.map_or(0, |r| stamp(page, word, r));
            if found != expected {
                self.report_wrong(page, round, word, found, expected_round);
                break;
            }
        }
        if write {
            for word in 0..STAMPED_WORDS {
                // SAFETY: as above.
                unsafe { core::ptr::write_volatile(at.add(word * STAMP_STRIDE_WORDS), stamp(page, word, round)) };
            }
            self.last_written[page] = Some(round);
        }
    }

    fn report_wrong(&mut self, page: usize, round: u64, word: usize, found: u64, expected_round: Option<u64>) {
        self.wrong += 1;
        if self.wrong > WRONG_PAGES_SHOWN {
            return;
        }
        let expected = match expected_round {
            Some(r) => alloc::format!("round {}", r),
            None => alloc::string::String::from("zero (never written)"),
        };
        let holds = if found == 0 {
            alloc::string::String::from("zero")
        } else if found >> 32 == stamp(page, word, 0) >> 32 {
            alloc::format!("round {}", found & 0xffff_ffff)
        } else {
            alloc::format!("{:#x}", found)
        };
        println!(
            "{}: WRONG page {} at round {}: word {} holds {}, expected {}",
            self.label, page, round, word, holds, expected
        );
    }

    /// Print the verdict; the workload's exit code.
    fn verdict(&self) -> i32 {
        if self.wrong != 0 {
            println!(
                "{}: {} touches found a page with the wrong contents (the first {} shown above)",
                self.label,
                self.wrong,
                self.wrong.min(WRONG_PAGES_SHOWN)
            );
            return 1;
        }
        println!("{}: contents intact", self.label);
        0
    }
}

fn report(label: &str) {
    let guard = paging::REGION.lock();
    let region = guard.as_ref().expect("region");
    let s = region.stats;
    println!(
        "{}: pager={} faults={} page_ins={} page_outs={} frames_returned={} frames_lost={}",
        label,
        region.pager_name(),
        s.faults,
        s.page_ins,
        s.page_outs,
        s.frames_returned,
        s.frames_lost
    );
}

/// One workload for every pager: a hot set written every round plus a
/// scan that reads through the rest of the region.
fn paging_workload(env: &Env) -> i32 {
    const PAGES: usize = 64;
    const HOT: usize = 6;
    if let Err(what) = start_paging(env, PAGES, 16) {
        println!("paging: {}", what);
        return 1;
    }
    let mut scan = HOT;
    let mut pages = Pages::new("paging", PAGES);
    for round in 0..300u64 {
        for page in 0..HOT {
            pages.touch(page, round, true);
        }
        for _ in 0..4 {
            pages.touch(scan, round, round % 3 == 0);
            scan = if scan + 1 == PAGES { HOT } else { scan + 1 };
        }
        if round % 4 == 0 {
            if let Some(region) = paging::REGION.lock().as_mut() {
                region.tick();
            }
        }
        paging::safe_point();
    }
    report("paging");
    pages.verdict()
}

/// Borrow frames beyond the quota, then keep working while the kernel
/// asks for them back: answer by paging out.
fn pressure_workload(env: &Env) -> i32 {
    const PAGES: usize = 48;
    if let Err(what) = start_paging(env, PAGES, 40) {
        println!("pressure: {}", what);
        return 1;
    }
    let mut pages = Pages::new("pressure", PAGES);
    for round in 0..300u64 {
        for page in 0..PAGES {
            // Even pages are written every round; odd ones every eighth, so
            // clean pages with a backing copy are paged out and in as well.
            pages.touch(page, round, page % 2 == 0 || round % 8 == 1);
            if page % 8 == 0 {
                paging::safe_point();
            }
        }
        if round % 8 == 0 {
            if let Some(region) = paging::REGION.lock().as_mut() {
                region.tick();
            }
        }
        if round % 16 == 0 {
            libos_runtime::syscall::yield_now();
        }
    }
    report("pressure");
    pages.verdict()
}
