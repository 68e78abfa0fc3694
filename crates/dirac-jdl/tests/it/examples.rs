//! The example JDLs from the DIRAC and DiracX repositories (research notes §2.4).

use dirac_jdl::{ClassAd, Policy, Value, expand, is_parametric, validate};

const EXAMPLES: [(&str, &str); 5] = [
    ("a", include_str!("../fixtures/a.jdl")),
    ("b", include_str!("../fixtures/b.jdl")),
    ("c", include_str!("../fixtures/c.jdl")),
    ("d", include_str!("../fixtures/d.jdl")),
    ("e", include_str!("../fixtures/e.jdl")),
];

fn parse(name: &str, text: &str) -> ClassAd {
    ClassAd::parse(text).unwrap_or_else(|e| panic!("example ({name}): {e}"))
}

#[test]
fn examples_parse_print_and_reparse_equal() {
    for (name, text) in EXAMPLES {
        let ad = parse(name, text);
        let printed = ad.to_jdl();
        let reparsed = parse(name, &printed);
        assert_eq!(reparsed, ad, "example ({name}) printed as\n{printed}");
        // Printing is a fixed point.
        assert_eq!(reparsed.to_jdl(), printed, "example ({name})");
    }
}

#[test]
fn example_a_prints_in_reference_style() {
    let ad = parse("a", EXAMPLES[0].1);
    assert_eq!(ad.len(), 16);
    let printed = ad.to_jdl();
    assert!(printed.starts_with(
        "[\n    Arguments = \"jobDescription.xml -o LogLevel=info\";\n    CPUTime = 86400;\n"
    ));
    assert!(printed.contains(
        "    InputSandbox =\n        {\n            \"../../Integration/WorkloadManagementSystem/exe-script.py\",\n"
    ));
    assert!(
        printed.contains("    OutputSandbox = { \"helloWorld.log\", \"std.err\", \"std.out\" };\n")
    );
    assert!(printed.ends_with("    VirtualOrganization = \"vo\";\n]"));
}

#[test]
fn examples_parse_to_expected_values() {
    let a = parse("a", EXAMPLES[0].1);
    assert_eq!(a.get("CPUTime"), Some(&Value::Int(86400)));
    assert_eq!(a.get("InputData"), Some(&Value::Str(String::new())));
    assert_eq!(a.get("InputSandbox").map(|v| v.to_strings().len()), Some(4));

    let b = parse("b", EXAMPLES[1].1);
    assert_eq!(
        b.get("InputSandbox"),
        Some(&Value::Str("jobDescription.xml".to_owned()))
    );
    assert_eq!(
        b.get("Parameters.JOB_ID").map(Value::to_strings),
        Some(vec!["1".into(), "2".into(), "3".into()])
    );
    let Some(Value::List(data)) = b.get("Parameters.InputData") else {
        panic!("list expected")
    };
    assert!(
        data.iter()
            .all(|item| matches!(item, Value::List(pair) if pair.len() == 2))
    );

    let d = parse("d", EXAMPLES[3].1);
    assert_eq!(d.get("Site").and_then(Value::as_str), Some("ANY"));
    assert_eq!(
        d.get_ci("jobgroup"),
        Some(("JobGroup", &Value::Str("jobGroup".to_owned())))
    );

    let e = parse("e", EXAMPLES[4].1);
    assert_eq!(e.get("Priority"), Some(&Value::Str("1".to_owned())));
    assert_eq!(e.get("Priority").and_then(Value::as_int), Some(1));
}

#[test]
fn non_parametric_examples_validate() {
    let policy = Policy::default();
    let a = validate(&parse("a", EXAMPLES[0].1), &policy, "lhcb").expect("(a) is valid");
    assert_eq!(a.executable, "dirac-jobexec");
    assert_eq!(a.job_group.as_deref(), Some("lhcb"));
    assert_eq!((a.cpu_time, a.priority), (86400, 1));
    assert!(a.input_data.is_empty() && a.tags.is_empty());
    assert_eq!(a.output_sandbox, ["helloWorld.log", "std.err", "std.out"]);

    let d = validate(&parse("d", EXAMPLES[3].1), &policy, "lhcb").expect("(d) is valid");
    assert_eq!(
        (d.job_name.as_str(), d.log_level.as_deref()),
        ("jobName", Some("INFO"))
    );
    assert!(d.sites.is_empty());

    let e = validate(&parse("e", EXAMPLES[4].1), &policy, "lhcb").expect("(e) is valid");
    assert_eq!((e.min_processors, e.max_processors), (16, 16));
    assert_eq!(e.tags, ["16Processors", "MultiProcessor"]);
    assert_eq!(e.priority, 1);
}

#[test]
fn parametric_examples_expand() {
    let policy = Policy::default();
    for (name, text) in EXAMPLES {
        let ad = parse(name, text);
        let jobs =
            expand(&ad, policy.max_parametric_jobs).unwrap_or_else(|e| panic!("({name}): {e}"));
        let expected = if matches!(name, "b" | "c") { 3 } else { 1 };
        assert_eq!(jobs.len(), expected, "({name})");
        assert_eq!(is_parametric(&ad), expected > 1, "({name})");
        for job in &jobs {
            assert!(!is_parametric(job));
            validate(job, &policy, "lhcb").unwrap_or_else(|e| panic!("({name}) job: {e}"));
        }
    }
}
