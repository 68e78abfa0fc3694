//! Parses arbitrary text as JDL; on success the printed form must reparse to the same ad, and
//! validation and parametric expansion must not panic.
//!
//! Run with `cargo +nightly fuzz run parse_jdl` from the repository root.

#![no_main]

use dirac_jdl::{ClassAd, Policy, expand, validate};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(ad) = ClassAd::parse(text) else { return };
    let printed = ad.to_jdl();
    match ClassAd::parse(&printed) {
        Ok(reparsed) => assert_eq!(reparsed, ad, "reparse differs for:\n{printed}"),
        Err(e) => panic!("printed jdl does not reparse: {e}\n{printed}"),
    }
    let policy = Policy::default();
    let _ = validate(&ad, &policy, "lhcb");
    let _ = expand(&ad, 64);
});
