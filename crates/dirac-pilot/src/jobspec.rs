//! What the job wrapper needs from a matched job's JDL.

use dirac_jdl::{ClassAd, Value};

/// CPU time of a job whose JDL does not say.
pub const DEFAULT_CPU_TIME: i64 = 86_400;
/// Wall clock allowed per second of CPU time asked for.
pub const WALL_CLOCK_FACTOR: f64 = 1.2;
/// CPUTime plus the 20 % margin before the payload is stopped.
pub const CPU_LIMIT_FACTOR: f64 = 1.2;

/// The parts of a JDL the job wrapper uses, with defaults applied.
#[derive(Clone, Debug, PartialEq)]
pub struct JobSpec {
    pub executable: String,
    pub arguments: Vec<String>,
    /// Every InputSandbox entry; the wrapper downloads the `SB:` ones.
    pub input_sandbox: Vec<String>,
    pub output_sandbox: Vec<String>,
    pub std_output: String,
    pub std_error: String,
    pub cpu_time: i64,
    pub processors: u32,
    /// `MaxRAM` in MB: the payload is stopped above it.
    pub max_ram_mb: Option<i64>,
    /// `ExecutionEnvironment = {"A=1", "B=2"}`.
    pub environment: Vec<(String, String)>,
    /// LFNs to download before the payload (`LFN:` dropped).
    pub input_data: Vec<String>,
    /// Files to upload and register after it: names in the job directory,
    /// or `LFN:/vo/…` to choose the LFN (its last component is the file).
    pub output_data: Vec<String>,
    /// `InputDataPolicy`: with "Protocol" (DIRAC's InputDataByProtocol) the
    /// payload reads its input where it is, from URLs the pilot resolves;
    /// otherwise (DownloadInputData) the files are downloaded first.
    pub input_data_policy: Option<String>,
    /// Storage elements to try for the output data, in order.
    pub output_se: Vec<String>,
    /// Directory under the owner's home for the output data.
    pub output_path: Option<String>,
    pub owner: Option<String>,
    pub vo: Option<String>,
}

impl JobSpec {
    /// CPU limit in seconds: CPUTime plus DIRAC's 20 % margin
    /// (`JobCPULimitMargin`).
    pub fn cpu_limit_secs(&self) -> f64 {
        self.cpu_time as f64 * CPU_LIMIT_FACTOR
    }

    /// Wall-clock limit in seconds: CPUTime × 1.2.
    pub fn wall_clock_limit_secs(&self) -> f64 {
        self.cpu_time as f64 * WALL_CLOCK_FACTOR
    }

    /// The LFN each `OutputData` entry is registered as, with the local
    /// file it comes from: `LFN:` entries as given, the others under the
    /// owner's home, in `OutputPath` or `<JobID/1000>/<JobID>` (DIRAC's
    /// default).
    pub fn output_lfns(&self, job_id: u64) -> Result<Vec<(String, String)>, String> {
        let mut out = Vec::new();
        for entry in &self.output_data {
            if let Some(lfn) = entry
                .strip_prefix("LFN:")
                .or_else(|| entry.strip_prefix("lfn:"))
            {
                let name = lfn.rsplit('/').next().unwrap_or_default();
                if name.is_empty() {
                    return Err(format!("OutputData: '{entry}' names no file"));
                }
                out.push((name.to_owned(), lfn.to_owned()));
                continue;
            }
            let (Some(owner), Some(vo)) = (&self.owner, &self.vo) else {
                return Err("OutputData: the JDL has no Owner or VirtualOrganization".to_owned());
            };
            let initial = owner.chars().next().unwrap_or('x');
            let dir = match &self.output_path {
                Some(p) => p.trim_matches('/').to_owned(),
                None => format!("{}/{job_id}", job_id / 1000),
            };
            let name = entry.rsplit('/').next().unwrap_or(entry);
            out.push((
                entry.clone(),
                format!("/{vo}/user/{initial}/{owner}/{dir}/{name}"),
            ));
        }
        Ok(out)
    }

    /// The payload reads input data by protocol instead of downloads.
    pub fn input_by_protocol(&self) -> bool {
        self.input_data_policy
            .as_deref()
            .is_some_and(|p| p.to_ascii_lowercase().contains("protocol"))
    }

    /// The `SB:` references of the input sandbox.
    pub fn sandbox_refs(&self) -> impl Iterator<Item = &str> {
        self.input_sandbox
            .iter()
            .map(String::as_str)
            .filter(|e| e.starts_with("SB:"))
    }
}

fn get<'a>(ad: &'a ClassAd, name: &str) -> Option<&'a Value> {
    ad.get_ci(name).map(|(_, v)| v)
}

fn string(ad: &ClassAd, name: &str) -> Option<String> {
    get(ad, name)
        .and_then(|v| match v {
            Value::Int(i) => Some(i.to_string()),
            other => other.as_str().map(str::to_owned),
        })
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn strings(ad: &ClassAd, name: &str) -> Vec<String> {
    get(ad, name)
        .map(Value::to_strings)
        .unwrap_or_default()
        .into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Number of processors a JDL asks for: `NumberOfProcessors`, else
/// `MinNumberOfProcessors`, else 1.
fn processors(ad: &ClassAd) -> Result<u32, String> {
    let value = get(ad, "NumberOfProcessors").or_else(|| get(ad, "MinNumberOfProcessors"));
    match value {
        None => Ok(1),
        Some(v) => v
            .as_int()
            .filter(|n| (1..=i64::from(u32::MAX)).contains(n))
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| "NumberOfProcessors must be a positive integer".to_owned()),
    }
}

/// Splits `Arguments`: a string is split shell-style, a list is taken as is.
pub fn split_arguments(value: &Value) -> Result<Vec<String>, String> {
    match value {
        Value::List(_) => Ok(value.to_strings()),
        Value::Int(i) => Ok(vec![i.to_string()]),
        Value::Str(s) => shell_words::split(s).map_err(|e| format!("Arguments: {e}")),
        Value::Ad(_) => Err("Arguments must be a string".to_owned()),
    }
}

/// Builds the job spec out of a JDL text.
pub fn parse(jdl: &str) -> Result<JobSpec, String> {
    let ad = ClassAd::parse(jdl).map_err(|e| format!("invalid jdl: {e}"))?;
    let executable = string(&ad, "Executable").ok_or("the jdl has no Executable")?;
    let arguments = match get(&ad, "Arguments") {
        Some(v) => split_arguments(v)?,
        None => Vec::new(),
    };
    let cpu_time = match get(&ad, "CPUTime").or_else(|| get(&ad, "MaxCPUTime")) {
        None => DEFAULT_CPU_TIME,
        Some(v) => v
            .as_int()
            .filter(|n| *n > 0)
            .ok_or("CPUTime must be a positive integer")?,
    };
    let mut environment = Vec::new();
    for item in strings(&ad, "ExecutionEnvironment") {
        match item.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                environment.push((k.trim().to_owned(), v.to_owned()));
            }
            _ => {
                return Err(format!(
                    "ExecutionEnvironment entry {item:?} is not NAME=value"
                ));
            }
        }
    }
    Ok(JobSpec {
        executable,
        arguments,
        input_sandbox: strings(&ad, "InputSandbox"),
        output_sandbox: strings(&ad, "OutputSandbox"),
        std_output: string(&ad, "StdOutput").unwrap_or_else(|| "std.out".to_owned()),
        std_error: string(&ad, "StdError").unwrap_or_else(|| "std.err".to_owned()),
        cpu_time,
        processors: processors(&ad)?,
        max_ram_mb: ad.get("MaxRAM").and_then(|v| v.as_int()).filter(|m| *m > 0),
        environment,
        input_data: strings(&ad, "InputData")
            .into_iter()
            .map(|l| {
                l.trim_start_matches("LFN:")
                    .trim_start_matches("lfn:")
                    .to_owned()
            })
            .collect(),
        input_data_policy: string(&ad, "InputDataPolicy"),
        output_data: strings(&ad, "OutputData"),
        output_se: strings(&ad, "OutputSE"),
        output_path: string(&ad, "OutputPath"),
        owner: string(&ad, "Owner"),
        vo: string(&ad, "VirtualOrganization"),
    })
}

/// The processors a JDL asks for, 1 when it cannot be read (the wrapper
/// then fails the job with the reason).
pub fn processors_of(jdl: &str) -> u32 {
    ClassAd::parse(jdl)
        .ok()
        .and_then(|ad| processors(&ad).ok())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_jdl() {
        let jdl = r#"[
            Executable = "my.sh";
            Arguments = "-n 3 'a b' \"c d\"";
            InputSandbox = { "SB:SandboxSE|/S3/a.tar.gz", "LFN:/vo/x", "local.txt" };
            OutputSandbox = { "std.out", "std.err", "result.root" };
            StdOutput = "out.log";
            CPUTime = 1000;
            NumberOfProcessors = 4;
            ExecutionEnvironment = { "A=1", "B=x=y" };
        ]"#;
        let spec = parse(jdl).expect("spec");
        assert_eq!(spec.executable, "my.sh");
        assert_eq!(spec.arguments, ["-n", "3", "a b", "c d"]);
        assert_eq!(
            spec.sandbox_refs().collect::<Vec<_>>(),
            ["SB:SandboxSE|/S3/a.tar.gz"]
        );
        assert_eq!(spec.output_sandbox, ["std.out", "std.err", "result.root"]);
        assert_eq!(spec.std_output, "out.log");
        assert_eq!(spec.std_error, "std.err");
        assert_eq!(spec.cpu_time, 1000);
        assert_eq!(spec.wall_clock_limit_secs(), 1200.0);
        assert_eq!(spec.processors, 4);
        assert_eq!(
            spec.environment,
            [
                ("A".to_owned(), "1".to_owned()),
                ("B".to_owned(), "x=y".to_owned())
            ]
        );
        assert_eq!(processors_of(jdl), 4);
    }

    #[test]
    fn defaults() {
        let spec = parse(r#"[ Executable = "/bin/true"; ]"#).expect("spec");
        assert!(spec.arguments.is_empty());
        assert!(spec.input_sandbox.is_empty());
        assert_eq!(spec.std_output, "std.out");
        assert_eq!(spec.cpu_time, DEFAULT_CPU_TIME);
        assert_eq!(spec.processors, 1);
    }

    #[test]
    fn argument_forms() {
        let list = Value::List(vec![Value::from("a b"), Value::from(3)]);
        assert_eq!(split_arguments(&list).expect("list"), ["a b", "3"]);
        assert!(split_arguments(&Value::from("'unterminated")).is_err());
        assert_eq!(
            split_arguments(&Value::from(r"x\ y z")).expect("escape"),
            ["x y", "z"]
        );
    }

    #[test]
    fn refusals() {
        for (jdl, fragment) in [
            ("[ Arguments = \"x\"; ]", "Executable"),
            (
                "[ Executable = \"x\"; NumberOfProcessors = 0; ]",
                "NumberOfProcessors",
            ),
            ("[ Executable = \"x\"; CPUTime = \"soon\"; ]", "CPUTime"),
            ("[ Executable = \"x\"; Arguments = \"'a\"; ]", "Arguments"),
            (
                "[ Executable = \"x\"; ExecutionEnvironment = \"novalue\"; ]",
                "NAME=value",
            ),
            ("not a jdl", "invalid jdl"),
        ] {
            let msg = parse(jdl).expect_err(jdl);
            assert!(msg.contains(fragment), "{jdl}: {msg}");
        }
        assert_eq!(processors_of("garbage"), 1);
    }
}
