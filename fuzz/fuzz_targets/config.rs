//! Configuration parsing: any text either loads or is refused with an error that names a field
//! (or the TOML position), never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmgate::config::Config;

fuzz_target!(|text: &str| {
    if let Err(e) = Config::from_toml(text) {
        let message = e.to_string();
        assert!(!message.is_empty(), "an empty configuration error");
    }
});
