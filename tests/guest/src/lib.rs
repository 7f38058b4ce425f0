//! What the guest test programs share: checks of the kernel's answers,
//! printed in the one form the host tests read (`check NAME -> ERROR`).
#![no_std]

use libos_runtime::println;
use libos_runtime::syscall::Error;

/// Expect `result` to be the error `want`; print the check. `Err` names
/// what went wrong (another error, or an unexpected success).
pub fn expect_err<T>(what: &str, result: Result<T, Error>, want: Error) -> Result<(), &'static str> {
    match result {
        Err(error) if error == want => {
            println!("check {} -> {}", what, error.name());
            Ok(())
        }
        Err(error) => {
            println!("check {} -> {} (wanted {})", what, error.name(), want.name());
            Err("wrong error")
        }
        Ok(_) => {
            println!("check {} -> UNEXPECTED success (wanted {})", what, want.name());
            Err("unexpected success")
        }
    }
}
