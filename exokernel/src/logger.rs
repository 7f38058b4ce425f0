//! The kernel log: the `log` crate on the serial console, lines prefixed
//! `[kernel]`; the level comes from the boot manifest.

use log::{LevelFilter, Log, Metadata, Record};

struct SerialLogger;

static LOGGER: SerialLogger = SerialLogger;

impl Log for SerialLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        // Driver crates' informational chatter shows at debug level only.
        let level = match metadata.level() {
            log::Level::Info if metadata.target().starts_with("virtio_drivers") => log::Level::Debug,
            level => level,
        };
        level <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if self.enabled(record.metadata()) {
            match record.level() {
                log::Level::Info => crate::arch::serial::write_fmt(format_args!("[kernel] {}\n", record.args())),
                level => crate::arch::serial::write_fmt(format_args!(
                    "[kernel] {}: {}\n",
                    level.as_str().to_ascii_lowercase(),
                    record.args()
                )),
            }
        }
    }

    fn flush(&self) {}
}

/// Install the logger at `level`.
pub fn init(level: LevelFilter) {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

/// Map the manifest's level.
pub fn level_of(level: shared_abi::manifest::LogLevel) -> LevelFilter {
    use shared_abi::manifest::LogLevel;
    match level {
        LogLevel::Error => LevelFilter::Error,
        LogLevel::Warn => LevelFilter::Warn,
        LogLevel::Info => LevelFilter::Info,
        LogLevel::Debug => LevelFilter::Debug,
        LogLevel::Trace => LevelFilter::Trace,
    }
}
