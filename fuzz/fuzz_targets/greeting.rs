//! Greeting line 1 parsing: never panics, and a parsed line prints back to an equal greeting.
#![no_main]

use aemp::proto::dialect::Dialect;
use aemp::proto::greeting::Greeting;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(g) = Greeting::parse(data) else {
        return;
    };
    let _ = (g.version_number(), g.offers_tls(), Dialect::of_greeting(&g));
    let line = g.to_line();
    match Greeting::parse(line.as_bytes()) {
        Ok(again) => assert_eq!(again, g, "to_line {line:?} re-parses differently"),
        Err(e) => panic!("to_line {line:?} of a parsed greeting does not re-parse: {e}"),
    }
});
