//! Unit tests for parsing, validation and parametric expansion, written against the public API.

use crate::*;

fn s(text: &str) -> Value {
    Value::Str(text.to_owned())
}

fn list(items: &[&str]) -> Value {
    Value::List(items.iter().map(|t| s(t)).collect())
}

fn parse(text: &str) -> ClassAd {
    match ClassAd::parse(text) {
        Ok(ad) => ad,
        Err(e) => panic!("{text:?} failed to parse: {e}"),
    }
}

mod syntax {
    use super::*;

    /// Parses `X = <value>` (with and without outer brackets) and compares the value of `X`.
    fn check(value_text: &str, expected: Value) {
        for text in [
            format!("X = {value_text};"),
            format!("[ X = {value_text} ]"),
        ] {
            let ad = parse(&text);
            assert_eq!(ad.len(), 1, "{text}");
            assert_eq!(ad.get("X"), Some(&expected), "{text}");
            // Printing and reparsing keeps the value.
            assert_eq!(parse(&ad.to_jdl()), ad, "{text}");
        }
    }

    #[test]
    fn value_forms() {
        check(r#""hello""#, s("hello"));
        check(r#""""#, s(""));
        check(r#""a \"quoted\" \\ word""#, s(r#"a "quoted" \ word"#));
        check(r#""C:\temp\n""#, s(r"C:\temp\n"));
        check("\"multi\nline\"", s("multi\nline"));
        check(r#""ünïcødé ✓""#, s("ünïcødé ✓"));
        check("42", Value::Int(42));
        check("-7", Value::Int(-7));
        check("+7", Value::Int(7));
        check("9223372036854775808", s("9223372036854775808"));
        check(r#""42""#, s("42"));
        check("1.5", s("1.5"));
        check("yes", s("yes"));
        check("ANY", s("ANY"));
        check("std.out", s("std.out"));
        check("  spaced   token  ", s("spaced   token"));
        check("%(InputData)s", s("%(InputData)s"));
        check("/lhcb/data/file-1.dst", s("/lhcb/data/file-1.dst"));
        check("LFN:/lhcb//x", s("LFN:/lhcb//x"));
        check("SB:SE|/SandBox/x.tar.bz2", s("SB:SE|/SandBox/x.tar.bz2"));
        check(
            "a == b && !(c || d) + e - f",
            s("a == b && !(c || d) + e - f"),
        );
        check(
            r#"Member("a;b,c", other.Tags)"#,
            s(r#"Member("a;b,c", other.Tags)"#),
        );
        check("a[0]", s("a[0]"));
        check("{}", Value::List(vec![]));
        check("{ }", Value::List(vec![]));
        check(r#"{ "a", "b" }"#, list(&["a", "b"]));
        check("{ a, b, }", list(&["a", "b"]));
        check(
            "{ 1, two, \"3\" }",
            Value::List(vec![Value::Int(1), s("two"), s("3")]),
        );
        check(
            "{ {a, b}, {c} }",
            Value::List(vec![list(&["a", "b"]), list(&["c"])]),
        );
        check("{ %(X)s }", list(&["%(X)s"]));
        let mut inner = ClassAd::new();
        inner.set("CPUTime", Value::Int(5));
        inner.set("Sites", list(&["A"]));
        check("[ CPUTime = 5; Sites = { A } ]", Value::Ad(inner.clone()));
        check(
            "{ [ CPUTime = 5; Sites = { A }; ] }",
            Value::List(vec![Value::Ad(inner)]),
        );
        check("[]", Value::Ad(ClassAd::new()));
    }

    #[test]
    fn layout_forms() {
        let expected = {
            let mut ad = ClassAd::new();
            ad.set("A", Value::Int(1));
            ad.set("Parameters.InputData", s("x"));
            ad.set("b_2", s("y"));
            ad
        };
        for text in [
            "A = 1; Parameters.InputData = x; b_2 = y;",
            "A = 1; Parameters.InputData = x; b_2 = y",
            "[A=1;Parameters.InputData=x;b_2=y]",
            "  [\n  A = 1;\n  Parameters.InputData = x;\n b_2 = y;\n]\n\n",
            "// comment\nA = 1; # another\n;; Parameters.InputData = x;\n# end\nb_2 = \"y\"; // trailing",
            "[ A = 1; Parameters.InputData = x; b_2 = y; ] // after",
        ] {
            assert_eq!(parse(text), expected, "{text}");
        }
        assert_eq!(parse(""), ClassAd::new());
        assert_eq!(parse("[]"), ClassAd::new());
        assert_eq!(parse("  // nothing\n"), ClassAd::new());
        // Names are case-sensitive, so these are two attributes.
        assert_eq!(parse("A = 1; a = 2;").len(), 2);
        assert!("A = 1".parse::<ClassAd>().is_ok());
    }

    /// Parses `input` and expects exactly `expected` as the error's display text.
    fn check_err(input: &str, expected: &str) {
        match ClassAd::parse(input) {
            Ok(ad) => panic!("{input:?} parsed as {ad:?}, expected error {expected:?}"),
            Err(e) => assert_eq!(e.to_string(), expected, "{input:?}"),
        }
    }

    #[test]
    fn errors() {
        check_err(
            r#"Executable = "abc"#,
            "line 1, column 14: unterminated string",
        );
        check_err(
            r#"Executable = "abc\"#,
            "line 1, column 14: unterminated string",
        );
        check_err(
            "CPUTime 5;",
            "line 1, column 9: expected '=' after attribute 'CPUTime'",
        );
        check_err(
            "CPUTime",
            "line 1, column 8: expected '=' after attribute 'CPUTime'",
        );
        check_err(
            "Executable = a;\nExecutable = b;",
            "line 2, column 1: duplicate attribute 'Executable'",
        );
        check_err("X = { a, b;", "line 1, column 5: unbalanced '{'");
        check_err("X = { a, b", "line 1, column 5: unbalanced '{'");
        check_err("[ X = { a ]", "line 1, column 7: unbalanced '{'");
        check_err("[ X = 1;", "line 1, column 1: unbalanced '['");
        check_err("X = [ Y = 1;", "line 1, column 5: unbalanced '['");
        check_err("X = ;", "line 1, column 5: empty value for attribute 'X'");
        check_err("X =", "line 1, column 4: empty value for attribute 'X'");
        check_err("[ X = ]", "line 1, column 7: empty value for attribute 'X'");
        check_err(
            "X = { a, , b }",
            "line 1, column 10: empty list item in attribute 'X'",
        );
        check_err(
            "X = { , }",
            "line 1, column 7: empty list item in attribute 'X'",
        );
        check_err(
            r#"X = { "a" "b" }"#,
            "line 1, column 11: expected ',' or '}' in the list of attribute 'X', found '\"'",
        );
        check_err(
            r#"X = "a" b;"#,
            "line 1, column 9: expected ';' after the value of attribute 'X', found 'b'",
        );
        check_err("X = 1; ]", "line 1, column 8: unexpected ']'");
        check_err(
            "[ X = 1 ] Y = 2",
            "line 1, column 11: unexpected text after the closing ']'",
        );
        check_err(
            "1X = 2",
            "line 1, column 1: expected attribute name, found '1'",
        );
        check_err(
            "X = 1; }",
            "line 1, column 8: expected attribute name, found '}'",
        );
        check_err(
            "ü = 1",
            "line 1, column 1: expected attribute name, found 'ü'",
        );
        check_err(
            "\u{1}X = 1",
            "line 1, column 1: expected attribute name, found '\\u{1}'",
        );
        check_err(
            "A = \"ü\"; = 2",
            "line 1, column 10: expected attribute name, found '='",
        );
        check_err(
            "X = \"a\nb\" c",
            "line 2, column 4: expected ';' after the value of attribute 'X', found 'c'",
        );
    }

    #[test]
    fn limits() {
        let deep_ok = format!(
            "X = {}1{};",
            "{".repeat(MAX_DEPTH - 1),
            "}".repeat(MAX_DEPTH - 1)
        );
        assert!(ClassAd::parse(&deep_ok).is_ok());
        let too_deep = format!("X = {}1{};", "{".repeat(MAX_DEPTH), "}".repeat(MAX_DEPTH));
        let e = ClassAd::parse(&too_deep).err().map(|e| e.message);
        assert_eq!(e.as_deref(), Some("nesting deeper than 32 levels"));
        let deep_ads = format!("{}{}", "X = [".repeat(100), "]".repeat(100));
        assert!(ClassAd::parse(&deep_ads).is_err());

        let big = format!("X = \"{}\";", "a".repeat(MAX_INPUT_BYTES));
        let e = ClassAd::parse(&big).err();
        assert_eq!(
            e.map(|e| e.to_string()).as_deref(),
            Some("line 1, column 1: input is larger than 1048576 bytes")
        );

        // Many attributes take the hash-set duplicate path.
        let mut many: String = (0..200).map(|i| format!("A{i} = {i};")).collect();
        assert_eq!(parse(&many).len(), 200);
        many.push_str("A150 = 1;");
        assert_eq!(
            ClassAd::parse(&many).err().map(|e| e.message).as_deref(),
            Some("duplicate attribute 'A150'")
        );
    }
}

mod validation {
    use super::*;

    const BASE: &str = r#"Executable = "run.sh";"#;

    fn job(extra: &str) -> Result<JobDescription, ValidationError> {
        validate(
            &parse(&format!("{BASE} {extra}")),
            &Policy::default(),
            "lhcb",
        )
    }

    /// Validates `BASE` plus `extra` and expects the error display `expected`.
    fn check_err(extra: &str, expected: &str) {
        match job(extra) {
            Ok(j) => panic!("{extra:?} validated as {j:?}, expected {expected:?}"),
            Err(e) => assert_eq!(e.to_string(), expected, "{extra:?}"),
        }
    }

    /// Validates `BASE` plus `extra` and expects `tags`.
    fn check_tags(extra: &str, tags: &[&str]) {
        match job(extra) {
            Ok(j) => assert_eq!(j.tags, tags, "{extra:?}"),
            Err(e) => panic!("{extra:?}: {e}"),
        }
    }

    #[test]
    fn defaults() {
        let j = job("").expect("minimal job is valid");
        assert_eq!(
            j,
            JobDescription {
                executable: "run.sh".to_owned(),
                arguments: None,
                job_name: "Name".to_owned(),
                job_group: None,
                job_type: "User".to_owned(),
                cpu_time: 86_400,
                priority: 1,
                sites: vec![],
                banned_sites: vec![],
                grid_ce: None,
                platform: None,
                input_data: vec![],
                input_sandbox: vec![],
                output_sandbox: vec![],
                output_data: vec![],
                output_se: vec![],
                min_processors: 1,
                max_processors: 1,
                whole_node: false,
                max_ram_mb: None,
                tags: vec![],
                log_level: None,
                std_output: "std.out".to_owned(),
                std_error: "std.err".to_owned(),
            }
        );
    }

    #[test]
    fn bounds_and_errors() {
        let missing = validate(&parse("CPUTime = 500;"), &Policy::default(), "lhcb");
        assert_eq!(
            missing.err().map(|e| e.to_string()).as_deref(),
            Some("Executable: mandatory attribute is missing")
        );
        for (extra, expected) in [
            (
                "JobType = Production;",
                "JobType: 'Production' is not an allowed job type (allowed: User, Test, Hospital)",
            ),
            ("CPUTime = 99;", "CPUTime: 99 is below the minimum of 100"),
            (
                "CPUTime = 500001;",
                "CPUTime: 500001 is above the maximum of 500000",
            ),
            ("CPUTime = lots;", "CPUTime: 'lots' is not an integer"),
            ("CPUTime = { 1 };", "CPUTime: expected an integer"),
            ("Priority = -1;", "Priority: -1 is below the minimum of 0"),
            (
                "Priority = \"11\";",
                "Priority: 11 is above the maximum of 10",
            ),
            (
                "NumberOfProcessors = 0;",
                "NumberOfProcessors: 0 is below the minimum of 1",
            ),
            (
                "NumberOfProcessors = 1025;",
                "NumberOfProcessors: 1025 is above the maximum of 1024",
            ),
            (
                "NumberOfProcessors = 2; MaxNumberOfProcessors = 4;",
                "NumberOfProcessors: cannot be combined with MinNumberOfProcessors or MaxNumberOfProcessors",
            ),
            (
                "MinNumberOfProcessors = 0;",
                "MinNumberOfProcessors: 0 is below the minimum of 1",
            ),
            (
                "MaxNumberOfProcessors = 2000;",
                "MaxNumberOfProcessors: 2000 is above the maximum of 1024",
            ),
            (
                "MinNumberOfProcessors = 8; MaxNumberOfProcessors = 4;",
                "MinNumberOfProcessors: 8 is greater than MaxNumberOfProcessors 4",
            ),
            (
                "WholeNode = maybe;",
                "WholeNode: expected yes/no, true/false or 1/0, got 'maybe'",
            ),
            ("MaxRAM = 0;", "MaxRAM: 0 is below the minimum of 1"),
            (
                "InputData = /lhcb//data/f;",
                "InputData: '/lhcb//data/f' contains '//'",
            ),
            (
                "InputData = /atlas/data/f;",
                "InputData: '/atlas/data/f' does not start with '/lhcb/'",
            ),
            (
                "InputData = LFN:/lhcbx/f;",
                "InputData: 'LFN:/lhcbx/f' does not start with '/lhcb/'",
            ),
            (
                "InputData = data/f;",
                "InputData: 'data/f' does not start with '/lhcb/'",
            ),
            (
                "Site = A; BannedSites = { A };",
                "Site: no candidate sites left after removing BannedSites",
            ),
            (
                "Site = { A, B }; BannedSite = A; BannedSites = B;",
                "Site: no candidate sites left after removing BannedSites",
            ),
            (
                "Arguments = { a, b };",
                "Arguments: expected a single value, got a list",
            ),
            (
                "JobName = [ A = 1 ];",
                "JobName: expected a single value, got a classad",
            ),
            (
                "InputSandbox = [ A = 1 ];",
                "InputSandbox: expected a string or a list, got a classad",
            ),
            (
                "cputime = 500;",
                "cputime: unknown attribute 'cputime' (did you mean 'CPUTime'?)",
            ),
            (
                "JOBNAME = x;",
                "JOBNAME: unknown attribute 'JOBNAME' (did you mean 'JobName'?)",
            ),
        ] {
            check_err(extra, expected);
        }
        let empty = validate(&parse(r#"Executable = "  ";"#), &Policy::default(), "lhcb");
        assert_eq!(
            empty.err().map(|e| e.to_string()).as_deref(),
            Some("Executable: must not be empty")
        );
        let lower = validate(&parse(r#"executable = "x";"#), &Policy::default(), "lhcb");
        assert_eq!(
            lower.err().map(|e| e.to_string()).as_deref(),
            Some("executable: unknown attribute 'executable' (did you mean 'Executable'?)")
        );
    }

    #[test]
    fn accepted_values() {
        let j = job(
            "CPUTime = 100; Priority = \"10\"; JobType = Test; JobName = n; JobGroup = g; Arguments = 5; \
             LogLevel = debug; StdOutput = o; StdError = e; GridCE = ce.example.org; Platform = x86_64; \
             OutputData = { out.dst }; OutputSE = SE-A; InputSandbox = { a, \"\", b }; OJ_CUSTOM = 1; JOB_ID = 3; \
             Owner = someone; Parameters.X = ignored;",
        )
        .expect("valid");
        assert_eq!((j.cpu_time, j.priority), (100, 10));
        assert_eq!((j.job_type.as_str(), j.job_name.as_str()), ("Test", "n"));
        assert_eq!(j.job_group.as_deref(), Some("g"));
        assert_eq!(j.arguments.as_deref(), Some("5"));
        assert_eq!(j.log_level.as_deref(), Some("debug"));
        assert_eq!((j.std_output.as_str(), j.std_error.as_str()), ("o", "e"));
        assert_eq!(j.grid_ce.as_deref(), Some("ce.example.org"));
        assert_eq!(j.platform.as_deref(), Some("x86_64"));
        assert_eq!(j.output_data, ["out.dst"]);
        assert_eq!(j.output_se, ["SE-A"]);
        assert_eq!(j.input_sandbox, ["a", "b"]);
        assert_eq!(job("CPUTime = 500000;").map(|j| j.cpu_time), Ok(500_000));
        assert_eq!(job("Priority = 0;").map(|j| j.priority), Ok(0));
    }

    #[test]
    fn input_data() {
        let j =
            job("InputData = { /lhcb/a/f1, LFN:/lhcb/a/f2, lfn:/lhcb/a/f3, \" /lhcb/a/f4 \" };")
                .expect("valid");
        assert_eq!(
            j.input_data,
            [
                "LFN:/lhcb/a/f1",
                "LFN:/lhcb/a/f2",
                "LFN:/lhcb/a/f3",
                "LFN:/lhcb/a/f4"
            ]
        );
        assert_eq!(job("InputData = \"\";").map(|j| j.input_data.len()), Ok(0));

        let many = |n: usize, job_type: &str| {
            let lfns: Vec<String> = (0..n).map(|i| format!("\"/lhcb/f{i}\"")).collect();
            job(&format!(
                "JobType = {job_type}; InputData = {{ {} }};",
                lfns.join(", ")
            ))
        };
        assert_eq!(many(500, "User").map(|j| j.input_data.len()), Ok(500));
        assert_eq!(
            many(501, "User").err().map(|e| e.to_string()).as_deref(),
            Some("InputData: 501 files exceed the maximum of 500 for User jobs")
        );
        assert_eq!(many(501, "Test").map(|j| j.input_data.len()), Ok(501));
    }

    #[test]
    fn sites_and_platforms() {
        let j = job("Site = { A, B, C }; BannedSites = { B }; BannedSite = D;").expect("valid");
        assert_eq!(j.sites, ["A", "B", "C"]);
        assert_eq!(j.banned_sites, ["B", "D"]);
        assert_eq!(job("Site = ANY;").map(|j| j.sites), Ok(vec![]));
        assert_eq!(job("Site = \"\";").map(|j| j.sites), Ok(vec![]));
        assert_eq!(
            job("Site = \"A, B\";").map(|j| j.sites),
            Ok(vec!["A".to_owned(), "B".to_owned()])
        );
        assert_eq!(
            job("BannedSites = A;").map(|j| j.banned_sites),
            Ok(vec!["A".to_owned()])
        );

        let policy = Policy {
            known_sites: vec!["A".to_owned(), "B".to_owned()],
            platforms: vec!["x86_64-el9".to_owned()],
            ..Policy::default()
        };
        let check = |extra: &str| {
            validate(&parse(&format!("{BASE} {extra}")), &policy, "lhcb").map_err(|e| e.to_string())
        };
        assert!(check("Site = { A, B }; Platform = x86_64-el9;").is_ok());
        assert_eq!(
            check("Site = { A, X };").err().as_deref(),
            Some("Site: unknown site 'X'")
        );
        assert_eq!(
            check("BannedSites = Y;").err().as_deref(),
            Some("BannedSites: unknown site 'Y'")
        );
        assert_eq!(
            check("Platform = arm;").err().as_deref(),
            Some("Platform: unknown platform 'arm'")
        );
        assert_eq!(check("Platform = ANY;").map(|j| j.platform), Ok(None));
    }

    #[test]
    fn derived_tags() {
        check_tags("", &[]);
        check_tags("NumberOfProcessors = 1;", &[]);
        check_tags(
            "NumberOfProcessors = 16;",
            &["16Processors", "MultiProcessor"],
        );
        check_tags(
            "MinNumberOfProcessors = 2; MaxNumberOfProcessors = 8;",
            &["MultiProcessor"],
        );
        check_tags("MaxNumberOfProcessors = 4;", &["MultiProcessor"]);
        check_tags("MinNumberOfProcessors = 4;", &["MultiProcessor"]);
        check_tags("WholeNode = yes;", &["MultiProcessor", "WholeNode"]);
        check_tags("WholeNode = \"True\";", &["MultiProcessor", "WholeNode"]);
        check_tags("WholeNode = 1;", &["MultiProcessor", "WholeNode"]);
        check_tags("WholeNode = no;", &[]);
        check_tags("MaxRAM = 2048;", &["2GB"]);
        check_tags("MaxRAM = 2049;", &["3GB"]);
        check_tags("MaxRAM = 1;", &["1GB"]);
        check_tags("Tags = { GPU, cvmfs }; Tag = GPU;", &["GPU", "cvmfs"]);
        check_tags(
            "Tags = { \"16Processors\", MultiProcessor }; NumberOfProcessors = 16; MaxRAM = 4096;",
            &["16Processors", "4GB", "MultiProcessor"],
        );
        let j = job(
            "MinNumberOfProcessors = 2; MaxNumberOfProcessors = 8; WholeNode = true; MaxRAM = 1500;",
        );
        let j = j.expect("valid");
        assert_eq!(
            (
                j.min_processors,
                j.max_processors,
                j.whole_node,
                j.max_ram_mb
            ),
            (2, 8, true, Some(1500))
        );
    }
}

mod parametric {
    use super::*;

    fn expand_ok(text: &str) -> Vec<ClassAd> {
        match expand(&parse(text), 100) {
            Ok(jobs) => jobs,
            Err(e) => panic!("{text:?}: {e}"),
        }
    }

    /// The strings of attribute `name` across `jobs`.
    fn column(jobs: &[ClassAd], name: &str) -> Vec<String> {
        jobs.iter()
            .map(|j| {
                j.get(name)
                    .map(|v| v.to_strings().join("|"))
                    .unwrap_or_default()
            })
            .collect()
    }

    fn check_err(text: &str, max_jobs: usize, expected: &str) {
        match expand(&parse(text), max_jobs) {
            Ok(jobs) => panic!(
                "{text:?} expanded to {} jobs, expected {expected:?}",
                jobs.len()
            ),
            Err(e) => assert_eq!(e.to_string(), expected, "{text:?}"),
        }
    }

    #[test]
    fn detection() {
        assert!(is_parametric(&parse("Parameters = 3;")));
        assert!(is_parametric(&parse("Parameters.A = { 1, 2 };")));
        assert!(!is_parametric(&parse(
            "ParameterStart.A = 1; Parameter = 1;"
        )));
        assert!(!is_parametric(&parse("ParametersX = 3;")));
        let plain = parse("Executable = x; Arguments = \"%s %n %j\";");
        assert_eq!(expand(&plain, 1), Ok(vec![plain]));
    }

    #[test]
    fn unnamed_sequences() {
        let jobs = expand_ok("Executable = x; Arguments = \"-n %s\"; Parameters = { a, b };");
        assert_eq!(column(&jobs, "Arguments"), ["-n a", "-n b"]);
        assert_eq!(column(&jobs, "Parameter"), ["a", "b"]);
        assert_eq!(column(&jobs, "ParameterNumber"), ["0", "1"]);
        assert!(jobs.iter().all(|j| j.get("Parameters").is_none()));

        let jobs = expand_ok(
            "Arguments = \"%s\"; Parameters = 3; ParameterStart = 1; ParameterStep = 1; ParameterFactor = 2;",
        );
        assert_eq!(column(&jobs, "Parameter"), ["1", "3", "7"]);
        assert_eq!(jobs[2].get("Arguments"), Some(&Value::Int(7)));
        assert!(jobs.iter().all(|j| {
            j.iter()
                .all(|(n, _)| !n.starts_with("Parameters") && !n.starts_with("ParameterS"))
        }));

        let jobs = expand_ok(
            "Arguments = \"x%s\"; Parameters = 4; ParameterStart = 10; ParameterStep = -3;",
        );
        assert_eq!(column(&jobs, "Arguments"), ["x10", "x7", "x4", "x1"]);

        let jobs = expand_ok("Arguments = \"%s\"; Parameters = 3;");
        assert_eq!(column(&jobs, "Arguments"), ["1", "1", "1"]);

        let jobs = expand_ok(
            "Arguments = \"%s\"; Parameters = 3; ParameterStart = 0.5; ParameterFactor = 2;",
        );
        assert_eq!(column(&jobs, "Arguments"), ["0.5", "1.0", "2.0"]);
    }

    #[test]
    fn dirac_named_example() {
        let jobs = expand_ok(include_str!("../tests/fixtures/c.jdl"));
        assert_eq!(column(&jobs, "Arguments"), ["1 a", "3 b", "7 c"]);
        assert_eq!(column(&jobs, "JobName"), ["Test_0", "Test_1", "Test_2"]);
        assert_eq!(column(&jobs, "Parameter.A"), ["1", "3", "7"]);
        assert_eq!(column(&jobs, "Parameter.B"), ["a", "b", "c"]);
        assert_eq!(column(&jobs, "ParameterNumber"), ["0", "1", "2"]);
        assert_eq!(jobs[1].get("Parameter.B"), Some(&s("b")));
        for job in &jobs {
            for gone in [
                "Parameters",
                "ParameterStart.A",
                "ParameterStep.A",
                "ParameterFactor.A",
                "Parameters.B",
            ] {
                assert!(job.get(gone).is_none(), "{gone} left in {job}");
            }
            // Expanded jobs are valid ordinary jobs.
            assert!(validate(job, &Policy::default(), "lhcb").is_ok());
        }
    }

    #[test]
    fn nested_list_example() {
        let jobs = expand_ok(include_str!("../tests/fixtures/b.jdl"));
        assert_eq!(jobs.len(), 3);
        assert_eq!(
            jobs[0].get("InputData"),
            Some(&list(&["/lhcb/data/data1", "/lhcb/data/data2"]))
        );
        assert_eq!(
            jobs[2].get("InputData"),
            Some(&list(&["/lhcb/data/data5", "/lhcb/data/data6"]))
        );
        assert_eq!(column(&jobs, "JOB_ID"), ["1", "2", "3"]);
        assert_eq!(jobs[1].get("JOB_ID"), Some(&Value::Int(2)));
        assert_eq!(
            jobs[0].get("Arguments").and_then(Value::as_str),
            Some(
                r#"jobDescription.xml -o LogLevel=DEBUG  -p JOB_ID=1  -p InputData={ "/lhcb/data/data1", "/lhcb/data/data2" }"#
            )
        );
        for (i, job) in jobs.iter().enumerate() {
            // The job survives printing and reparsing, with a real list.
            assert_eq!(&parse(&job.to_jdl()), job);
            let j = validate(job, &Policy::default(), "lhcb").expect("expanded job is valid");
            assert_eq!(j.input_data.len(), 2);
            assert_eq!(j.input_data[0], format!("LFN:/lhcb/data/data{}", 2 * i + 1));
        }
    }

    #[test]
    fn index_padding() {
        let jobs = expand_ok("JobName = \"job_%n\"; Parameters = 11;");
        let names = column(&jobs, "JobName");
        assert_eq!(names.first().map(String::as_str), Some("job_00"));
        assert_eq!(names.get(9).map(String::as_str), Some("job_09"));
        assert_eq!(names.last().map(String::as_str), Some("job_10"));
        assert_eq!(
            column(&expand_ok("JobName = \"%n\"; Parameters = 2;"), "JobName"),
            ["0", "1"]
        );
        // Ten jobs need one digit (the last index is 9), a hundred need two.
        let ten = column(&expand_ok("JobName = \"%n\"; Parameters = 10;"), "JobName");
        assert_eq!((ten[0].as_str(), ten[9].as_str()), ("0", "9"));
        let hundred = column(&expand_ok("JobName = \"%n\"; Parameters = 100;"), "JobName");
        assert_eq!((hundred[0].as_str(), hundred[99].as_str()), ("00", "99"));
        let hundred = expand(&parse("JobName = \"%n\"; Parameters = 101;"), 200).expect("101 jobs");
        assert_eq!(column(&hundred, "JobName")[5], "005");
    }

    #[test]
    fn placeholders_everywhere() {
        let text = r#"
            Arguments = "%j %% %(Missing)s %(A)s%s";
            InputSandbox = { "in_%n.txt", %(A)s };
            Nested = [ X = "%(A)s-%s"; ];
            Parameters = { p, q };
            Parameters.A = { { a1, a2 }, b };
        "#;
        let jobs = expand_ok(text);
        assert_eq!(
            jobs[0].get("Arguments"),
            Some(&s(r#"%j %% %(Missing)s { "a1", "a2" }p"#))
        );
        assert_eq!(jobs[1].get("Arguments"), Some(&s("%j %% %(Missing)s bq")));
        assert_eq!(
            jobs[0].get("InputSandbox"),
            Some(&Value::List(vec![s("in_0.txt"), list(&["a1", "a2"])]))
        );
        let Some(Value::Ad(nested)) = jobs[1].get("Nested") else {
            panic!("nested ad expected")
        };
        assert_eq!(nested.get("X"), Some(&s("b-q")));
        assert_eq!(jobs[0].get("Parameter.A"), Some(&list(&["a1", "a2"])));
        assert_eq!(jobs[0].get("Parameter"), Some(&s("p")));

        let mut job = jobs[0].clone();
        substitute_job_id(&mut job, 4242);
        assert_eq!(
            job.get("Arguments").and_then(Value::as_str),
            Some(r#"4242 %% %(Missing)s { "a1", "a2" }p"#)
        );
        // Unterminated placeholders are left alone, and scanning them stays linear.
        let noisy = format!("Parameters = 2; X = \"{}%(A\";", "%(".repeat(200_000));
        let jobs = expand_ok(&noisy);
        assert_eq!(
            jobs[1].get("X").map(|v| v.to_strings()[0].len()),
            Some(400_003)
        );

        let mut ad = parse("A = \"%j\"; B = { x%j, [ C = %j/%j ] }; D = 5;");
        substitute_job_id(&mut ad, 7);
        assert_eq!(ad, parse("A = \"7\"; B = { x7, [ C = 7/7 ] }; D = 5;"));
    }

    #[test]
    fn errors() {
        check_err(
            "Parameters = 3; Parameters.B = { a, b };",
            100,
            "Parameters.B: different length of parameter vectors: Parameters has 3, Parameters.B has 2",
        );
        check_err(
            "Parameters.A = { 1 }; Parameters.B = { a, b };",
            100,
            "Parameters.B: different length of parameter vectors: Parameters.A has 1, Parameters.B has 2",
        );
        check_err(
            "Parameters = 101;",
            100,
            "Parameters: 101 parametric jobs exceed the limit of 100",
        );
        check_err(
            "Parameters = 1000000000000;",
            10_000,
            "Parameters: 1000000000000 parametric jobs exceed the limit of 10000",
        );
        check_err(
            "Parameters.X = { a, b, c };",
            2,
            "Parameters.X: 3 parametric jobs exceed the limit of 2",
        );
        check_err(
            "Parameters = 0;",
            100,
            "Parameters: the number of parameters must be at least 1, got 0",
        );
        check_err(
            "Parameters = {};",
            100,
            "Parameters: the number of parameters must be at least 1, got 0",
        );
        check_err(
            "Parameters = -2;",
            100,
            "Parameters: the number of parameters must be at least 1, got -2",
        );
        check_err(
            "Parameters = many;",
            100,
            "Parameters: expected a list or an integer",
        );
        check_err(
            "Parameters = 2; ParameterStart = abc;",
            100,
            "ParameterStart: illegal value 'abc'",
        );
        check_err(
            "Parameters = 2; ParameterStep.A = { 1 };",
            100,
            "ParameterStep.A: expected a number",
        );
        check_err(
            "Parameters = 3; ParameterStart = 9223372036854775807; ParameterStep = 1;",
            100,
            "Parameters: parameter sequence overflows a 64-bit integer",
        );
        check_err(
            "Parameters = 3; ParameterStart = 1e300; ParameterFactor = 1e300;",
            100,
            "Parameters: parameter sequence overflows a 64-bit float",
        );
    }

    #[test]
    fn jdl_error_wraps_all_kinds() {
        let parse_err = JdlError::from(ClassAd::parse("X = ").expect_err("error"));
        assert_eq!(
            parse_err.to_string(),
            "jdl syntax error at line 1, column 5: empty value for attribute 'X'"
        );
        let validation =
            JdlError::from(validate(&ClassAd::new(), &Policy::default(), "vo").expect_err("error"));
        assert_eq!(
            validation.to_string(),
            "invalid jdl: Executable: mandatory attribute is missing"
        );
        let parametric = JdlError::from(expand(&parse("Parameters = 0;"), 5).expect_err("error"));
        assert!(
            parametric
                .to_string()
                .starts_with("invalid parametric jdl: Parameters: ")
        );
    }
}
