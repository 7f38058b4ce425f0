//! The serial console (COM1), shared by the kernel log and libOS output.

use core::fmt::{self, Write};
use spin::Mutex;
use uart_16550::SerialPort;

static COM1: Mutex<Option<SerialPort>> = Mutex::new(None);

/// Initialise COM1 (8N1 at the driver's default rate; QEMU ignores the rate).
pub fn init() {
    // SAFETY: 0x3F8 is COM1 on every PC the kernel targets; nothing else
    // in the kernel touches these ports.
    let mut port = unsafe { SerialPort::new(0x3F8) };
    port.init();
    *COM1.lock() = Some(port);
}

/// Write formatted text to the serial console.
pub fn write_fmt(args: fmt::Arguments) {
    x86_64::instructions::interrupts::without_interrupts(|| {
        if let Some(port) = COM1.lock().as_mut() {
            let _ = port.write_fmt(args);
        }
    });
}

/// COM1's line on the I/O APIC (ISA IRQ 4: edge triggered, active high).
pub const IRQ: u8 = 4;

/// A byte the console received, if one is waiting (COM1's receive buffer).
pub fn try_read() -> Option<u8> {
    x86_64::instructions::interrupts::without_interrupts(|| COM1.lock().as_mut()?.try_receive().ok())
}

/// Write raw bytes (a libOS that owns the console prints its own lines).
pub fn write_bytes(bytes: &[u8]) {
    x86_64::instructions::interrupts::without_interrupts(|| {
        if let Some(port) = COM1.lock().as_mut() {
            for &byte in bytes {
                port.send_raw(byte);
            }
        }
    });
}

/// Write to the console from the panic handler, even if the lock is held.
pub fn write_fmt_panicking(args: fmt::Arguments) {
    // SAFETY: only called on the panic path, where the kernel will not run
    // any more code that holds the lock; a fresh handle to the same port
    // at worst interleaves bytes.
    let mut port = unsafe { SerialPort::new(0x3F8) };
    let _ = port.write_fmt(args);
}
