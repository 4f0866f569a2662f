//! Any text as a configuration file: accepted, or refused with an error that names the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scaletestd::config::{Config, Env};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = Env {
        coder_session_token: Some("fuzz-token".into()),
        ..Default::default()
    };
    if let Err(e) = Config::parse("fuzz.toml", text, &env) {
        let msg = e.to_string();
        assert!(msg.starts_with("fuzz.toml"), "{msg}");
        assert!(!msg.contains("fuzz-token"), "the token leaked: {msg}");
    }
});
