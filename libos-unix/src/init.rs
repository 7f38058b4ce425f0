//! init: the first environment of the Unix libOS (booted from the
//! manifest, `args = init PROGRAM ARGS...`). It creates the process
//! table, enters itself as pid 1, starts PROGRAM from the boot archive as
//! pid 2 with nearly all of its frame quota and kernel-memory budget, and
//! then reaps: its children, and every orphan that passes to it, until no
//! process is left. Its exit status is 0 when PROGRAM exited 0.

use libos_runtime::println;
use libos_runtime::rt::Env;
use libos_runtime::syscall;
use ulib::{process, spawn, table, WaitStatus};

/// Frames and kernel memory init keeps for itself.
const KEEP_FRAMES: u64 = 16;
const KEEP_KMEM: u64 = 64 * 1024;

pub fn run(env: &Env) -> i32 {
    let words: alloc::vec::Vec<&str> = env.arg_words().skip(1).collect();
    let Some(&program) = words.first() else {
        println!("init: usage: args = init PROGRAM [ARGS...]");
        return 2;
    };
    process::set_init(env);
    if let Err(error) = table::create(env.id, "init") {
        println!("init: cannot create the process table: {:?}", error);
        return 2;
    }
    match crate::fsserver::start() {
        Ok(files) => log(env, format_args!("init: file system seeded with {} files from the boot archive", files)),
        Err(why) => {
            println!("init: cannot serve files: {}", why);
            return 2;
        }
    }
    let info = match syscall::env_info() {
        Ok(info) => info,
        Err(error) => {
            println!("init: env_info: {:?}", error);
            return 2;
        }
    };
    let quota = info.quota_frames.saturating_sub(info.frames_charged + KEEP_FRAMES);
    let kmem_kib = info.kmem_limit.saturating_sub(info.kmem_used + KEEP_KMEM) / 1024;
    let share = spawn::Share::Exactly { quota_frames: quota, kmem_kib };
    let first = match spawn::spawn(program, &words, share) {
        Ok(pid) => pid,
        Err(error) => {
            println!("init: cannot start {}: {}", program, error);
            return 2;
        }
    };
    log(
        env,
        format_args!("init: started {} as pid {} ({} frames, {} KiB kernel memory)", program, first, quota, kmem_kib),
    );
    let mut first_status = None;
    while let Ok((pid, status)) = process::wait() {
        let how = match status {
            WaitStatus::Exited(code) => alloc::format!("exited {}", code),
            WaitStatus::Signaled(signal) => alloc::format!("killed by signal {}", signal),
        };
        log(env, format_args!("init: reaped pid {}: {}", pid, how));
        if pid == first {
            first_status = Some(status);
        }
    }
    let info = syscall::env_info().unwrap_or_default();
    log(
        env,
        format_args!(
            "init: no processes left; init holds {} frames of its quota {}",
            info.frames_charged, info.quota_frames
        ),
    );
    match first_status {
        Some(WaitStatus::Exited(0)) => 0,
        _ => 1,
    }
}

/// init's own messages (quiet when `quiet=1` is in the manifest, so an
/// interactive shell's screen holds only what the shell prints).
fn log(env: &Env, args: core::fmt::Arguments) {
    if env.param("quiet") != Some("1") {
        println!("{}", args);
    }
}
