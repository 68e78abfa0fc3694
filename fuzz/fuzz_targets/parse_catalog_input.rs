//! The catalog's parsers of untrusted input: metadata queries (`dfind`,
//! datasets) and paths. Neither may panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(Some(expr)) = dirac_dms::query::parse(text) {
            let _ = dirac_dms::query::predicates(&expr);
        }
        if let Ok(lfn) = dirac_dms::lfn::Lfn::parse(text) {
            let _ = (lfn.vo(), lfn.parent(), lfn.ancestors(), lfn.name());
        }
    }
});
