//! Environment variables (`getenv`/`setenv`), handed to programs a
//! process execs.

use alloc::string::String;
use alloc::vec::Vec;

static VARS: spin::Mutex<Vec<(String, String)>> = spin::Mutex::new(Vec::new());

pub fn get(key: &str) -> Option<String> {
    VARS.lock().iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
}

pub fn set(key: &str, value: &str) {
    let mut vars = VARS.lock();
    match vars.iter_mut().find(|(k, _)| k == key) {
        Some((_, v)) => *v = String::from(value),
        None => vars.push((String::from(key), String::from(value))),
    }
}

pub fn unset(key: &str) {
    VARS.lock().retain(|(k, _)| k != key);
}

/// Every variable, in the order they were set.
pub fn vars() -> Vec<(String, String)> {
    VARS.lock().clone()
}
