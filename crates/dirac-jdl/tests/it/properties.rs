//! Property tests: printing round-trips and parsing never panics.

use dirac_jdl::{ClassAd, Policy, Value, expand, validate};
use proptest::prelude::*;

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::Int),
        any::<String>().prop_map(Value::Str),
        "[ -~]{0,12}".prop_map(Value::Str),
        Just(Value::Str("%(X)s".to_owned())),
    ]
}

fn name() -> impl Strategy<Value = String> {
    "[A-Za-z_][A-Za-z0-9_.]{0,10}"
}

fn classad(value: impl Strategy<Value = Value>) -> impl Strategy<Value = ClassAd> {
    prop::collection::vec((name(), value), 0..6).prop_map(|attrs| {
        let mut ad = ClassAd::new();
        for (n, v) in attrs {
            ad.set(n, v);
        }
        ad
    })
}

fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::List),
            classad(inner).prop_map(Value::Ad),
        ]
    })
}

/// Fragments that make random text look like JDL more often than pure noise would.
fn jdl_noise() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("["),
        Just("]"),
        Just("{"),
        Just("}"),
        Just(";"),
        Just(","),
        Just("="),
        Just("\""),
        Just("\\"),
        Just("//"),
        Just("#"),
        Just("\n"),
        Just(" "),
        Just("A"),
        Just("Parameters"),
        Just("%(A)s"),
        Just("%s"),
        Just("%n"),
        Just("3"),
        Just("-1"),
        Just("ü"),
        Just("("),
        Just(")"),
    ];
    prop::collection::vec(token, 0..64).prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn print_then_parse_is_identity(ad in classad(value())) {
        let printed = ad.to_jdl();
        prop_assert_eq!(ClassAd::parse(&printed), Ok(ad), "printed:\n{}", printed);
    }

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        let _ = ClassAd::parse(&text);
    }

    #[test]
    fn jdl_like_text_never_panics(text in jdl_noise()) {
        if let Ok(ad) = ClassAd::parse(&text) {
            prop_assert_eq!(ClassAd::parse(&ad.to_jdl()), Ok(ad.clone()));
            let _ = validate(&ad, &Policy::default(), "lhcb");
            let _ = expand(&ad, 50);
        }
    }
}
