//! The configuration loader: TOML parsing into `Config` (unknown keys refused) and
//! `validate`, which must report problems as messages and never panic, whatever the file.

#![no_main]

use libfuzzer_sys::fuzz_target;
use oxbridge_server::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = Config::parse(text) {
        for problem in config.validate() {
            assert!(!problem.is_empty());
        }
    }
});
