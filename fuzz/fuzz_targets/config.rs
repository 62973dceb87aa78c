//! Configuration parsing: any text either loads or is refused with an error that names a field
//! (or the TOML position), never a panic. The text is tried as a whole file, and as the value of
//! each kind of number in a valid configuration (durations, sizes, counts, ports), so values
//! such as `1e30`, `inf` or `-9223372036854775808` reach the checked conversions from the first
//! runs on.
#![no_main]

mod config_check;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| config_check::check(text));
