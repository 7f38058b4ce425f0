//! `echo [-n] [words...]`: writes its arguments to standard output joined
//! by one space and followed by a newline (none with `-n`, which is only
//! an option as the first argument). Exits 1 if standard output cannot be
//! written (`echo: ERRNO` on standard error).
#![no_std]
#![no_main]

extern crate alloc;

ulib::program_main!(main);

fn main(args: &[&str]) -> i32 {
    let mut words = args.get(1..).unwrap_or(&[]);
    let newline = words.first() != Some(&"-n");
    if !newline {
        words = &words[1..];
    }
    let mut text = words.join(" ");
    if newline {
        text.push('\n');
    }
    match ulib::io::write_all(1, text.as_bytes()) {
        Ok(()) => 0,
        Err(error) => {
            ulib::errln!("echo: {}", error);
            1
        }
    }
}
