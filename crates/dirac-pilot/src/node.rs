//! CheckWorkerNode: what this worker node offers (cores, memory, disk,
//! platform, CPU power), with sanity limits.

use std::path::Path;
use std::time::{Duration, Instant};

/// What the pilot found out about its worker node.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerNode {
    pub cores: u32,
    pub max_ram_mb: u64,
    /// Free space of the work directory's file system.
    pub free_disk_mb: u64,
    /// `Linux_x86_64_glibc-2.36` style.
    pub platform: String,
    /// DB12-like CPU power of one core (about 10 on a typical core).
    pub benchmark: f64,
}

/// Smallest free disk space the pilot accepts to start with.
pub const MIN_FREE_DISK_MB: u64 = 50;
/// Largest core count believed.
pub const MAX_CORES: u32 = 4096;

/// Refuses absurd values, naming the bad one.
pub fn check_sane(node: &WorkerNode) -> Result<(), String> {
    if node.cores == 0 || node.cores > MAX_CORES {
        return Err(format!(
            "absurd number of cores {} (expected 1..={MAX_CORES})",
            node.cores
        ));
    }
    if node.max_ram_mb < 64 || node.max_ram_mb > 64 * 1024 * 1024 {
        return Err(format!(
            "absurd memory {} MB (expected 64 MB to 64 TB)",
            node.max_ram_mb
        ));
    }
    if node.free_disk_mb < MIN_FREE_DISK_MB {
        return Err(format!(
            "only {} MB free in the work directory (need {MIN_FREE_DISK_MB} MB)",
            node.free_disk_mb
        ));
    }
    if !node.benchmark.is_finite() || node.benchmark <= 0.0 {
        return Err(format!("absurd cpu benchmark {}", node.benchmark));
    }
    if node.platform.trim().is_empty() {
        return Err("empty platform".to_owned());
    }
    Ok(())
}

/// Number of cores the process may use.
pub fn detect_cores() -> u32 {
    std::thread::available_parallelism()
        .ok()
        .and_then(|n| u32::try_from(n.get()).ok())
        .unwrap_or(1)
}

/// `MemTotal` of a `/proc/meminfo` text, in MB.
pub fn parse_meminfo_total_mb(text: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix("MemTotal:")?;
        let mut parts = rest.split_whitespace();
        let value: u64 = parts.next()?.parse().ok()?;
        let unit = parts.next().unwrap_or("kB");
        match unit {
            "kB" => Some(value / 1024),
            "B" => Some(value / (1024 * 1024)),
            _ => None,
        }
    })
}

/// Total memory of the node in MB, from `/proc/meminfo`.
pub fn detect_ram_mb() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_meminfo_total_mb(&text)
}

/// Free space (for unprivileged users) of the file system holding `path`, in MB.
pub fn free_disk_mb(path: &Path) -> std::io::Result<u64> {
    let stat = rustix::fs::statvfs(path)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize) / (1024 * 1024))
}

/// The glibc version out of `getconf GNU_LIBC_VERSION` output (`glibc 2.36`).
pub fn parse_glibc_version(text: &str) -> Option<String> {
    let version = text.trim().strip_prefix("glibc")?.trim();
    (!version.is_empty() && version.chars().all(|c| c.is_ascii_digit() || c == '.'))
        .then(|| version.to_owned())
}

/// `<OS>_<arch>[_glibc-<version>]`, e.g. `Linux_x86_64_glibc-2.36`.
pub fn platform_string(os: &str, arch: &str, glibc: Option<&str>) -> String {
    let mut chars = os.chars();
    let os = match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect::<String>(),
        None => "Unknown".to_owned(),
    };
    match glibc {
        Some(v) => format!("{os}_{arch}_glibc-{v}"),
        None => format!("{os}_{arch}"),
    }
}

/// This node's platform string.
pub fn detect_platform() -> String {
    let glibc = std::process::Command::new("getconf")
        .arg("GNU_LIBC_VERSION")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| parse_glibc_version(&String::from_utf8_lossy(&out.stdout)));
    platform_string(
        std::env::consts::OS,
        std::env::consts::ARCH,
        glibc.as_deref(),
    )
}

/// Iterations per batch of the benchmark loop.
const BATCH: u64 = 100_000;
/// Batches per second that score 1.0: an optimised build does about 2900
/// batches a second on a current Xeon core, which scores 10.
const BATCHES_PER_UNIT: f64 = 290.0;

/// A DB12-like benchmark: a fixed floating-point loop run for `window`,
/// scored by its speed. Optimised builds give about 10 on a typical server
/// core; debug builds score about 40 % lower (the loop is latency bound).
pub fn benchmark(window: Duration) -> f64 {
    let start = Instant::now();
    let mut batches: u64 = 0;
    let mut x = 0.5_f64;
    let mut acc = 0.0_f64;
    while start.elapsed() < window || batches == 0 {
        for i in 0..BATCH {
            // A small logistic-map-and-sqrt kernel the compiler cannot fold.
            x = std::hint::black_box(3.9 * x * (1.0 - x));
            acc += (x + (i as f64) * 1e-9).sqrt();
        }
        batches += 1;
    }
    std::hint::black_box(acc);
    let secs = start.elapsed().as_secs_f64().max(1e-6);
    let score = batches as f64 / secs / BATCHES_PER_UNIT;
    (score * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> WorkerNode {
        WorkerNode {
            cores: 4,
            max_ram_mb: 8000,
            free_disk_mb: 10_000,
            platform: "Linux_x86_64_glibc-2.36".to_owned(),
            benchmark: 9.5,
        }
    }

    #[test]
    fn meminfo() {
        let text = "MemTotal:       16314488 kB\nMemFree:         1234 kB\n";
        assert_eq!(parse_meminfo_total_mb(text), Some(15932));
        assert_eq!(parse_meminfo_total_mb("MemFree: 1 kB\n"), None);
        assert_eq!(parse_meminfo_total_mb("MemTotal: lots kB\n"), None);
    }

    #[test]
    fn platform() {
        assert_eq!(parse_glibc_version("glibc 2.36\n").as_deref(), Some("2.36"));
        assert_eq!(parse_glibc_version("musl"), None);
        assert_eq!(parse_glibc_version("glibc "), None);
        assert_eq!(
            platform_string("linux", "x86_64", Some("2.36")),
            "Linux_x86_64_glibc-2.36"
        );
        assert_eq!(platform_string("linux", "aarch64", None), "Linux_aarch64");
        assert!(detect_platform().starts_with("Linux_"));
    }

    #[test]
    fn sanity_limits() {
        assert_eq!(check_sane(&node()), Ok(()));
        type Spoil = fn(&mut WorkerNode);
        let cases: [(&str, Spoil); 5] = [
            ("cores", |n| n.cores = 0),
            ("memory", |n| n.max_ram_mb = 10),
            ("free", |n| n.free_disk_mb = 1),
            ("benchmark", |n| n.benchmark = f64::NAN),
            ("platform", |n| n.platform.clear()),
        ];
        for (fragment, spoil) in cases {
            let mut bad = node();
            spoil(&mut bad);
            let msg = check_sane(&bad).expect_err(fragment);
            assert!(msg.contains(fragment), "{msg} lacks {fragment}");
        }
    }

    #[test]
    fn detection_works_here() {
        assert!(detect_cores() >= 1);
        assert!(detect_ram_mb().is_some_and(|mb| mb > 0));
        assert!(free_disk_mb(Path::new(".")).is_ok());
        let start = Instant::now();
        let score = benchmark(Duration::from_millis(50));
        assert!(score > 0.0 && score.is_finite());
        assert!(start.elapsed() < Duration::from_secs(1));
    }
}
