//! The watchdog's measurements of a running payload: `/proc` parsing (pure)
//! and the sampling of a whole process group.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// The fields of `/proc/<pid>/stat` the watchdog uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    pub state: char,
    pub pgrp: i32,
    /// utime + stime + cutime + cstime, in clock ticks.
    pub cpu_ticks: u64,
    pub vsize_bytes: u64,
    pub rss_pages: u64,
}

/// Parses `/proc/<pid>/stat`. The command name may hold spaces and
/// parentheses, so fields are counted after the last `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    let state = fields.first()?.chars().next()?;
    let pgrp = fields.get(2)?.parse().ok()?;
    let cpu_ticks = num(11)?
        .saturating_add(num(12)?)
        .saturating_add(num(13)?)
        .saturating_add(num(14)?);
    Some(ProcStat {
        state,
        pgrp,
        cpu_ticks,
        vsize_bytes: num(20)?,
        rss_pages: num(21)?,
    })
}

/// The 1-minute load average of `/proc/loadavg`.
pub fn parse_loadavg(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

/// The last `n` lines of a text.
pub fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The last `n` lines of a file, reading at most its last `max_bytes`.
pub fn read_tail(path: &Path, n: usize, max_bytes: u64) -> String {
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(max_bytes);
    if file.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut bytes = Vec::new();
    if file.take(max_bytes).read_to_end(&mut bytes).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    // A cut in the middle of the first line leaves a partial line: drop it.
    let text = if start > 0 {
        text.split_once('\n').map(|(_, rest)| rest).unwrap_or("")
    } else {
        &text
    };
    tail_lines(text, n)
}

/// Resource use of a process group at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GroupUsage {
    pub processes: u32,
    pub cpu_secs: f64,
    pub rss_mb: f64,
    pub vsize_mb: f64,
}

/// Adds up the usage of every live member of process group `pgid`.
///
/// CPU time counts each member's own time plus that of the children it
/// reaped, so nothing is counted twice.
pub fn group_usage(pgid: i32) -> GroupUsage {
    let ticks = rustix::param::clock_ticks_per_second().max(1) as f64;
    let page = rustix::param::page_size() as f64;
    let mut usage = GroupUsage::default();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return usage;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some(stat) = parse_stat(&text) else {
            continue;
        };
        if stat.pgrp != pgid {
            continue;
        }
        usage.processes += 1;
        usage.cpu_secs += stat.cpu_ticks as f64 / ticks;
        usage.rss_mb += stat.rss_pages as f64 * page / (1024.0 * 1024.0);
        usage.vsize_mb += stat.vsize_bytes as f64 / (1024.0 * 1024.0);
    }
    usage
}

/// The stat of one process, `None` when it is gone (reaped).
pub fn process_stat(pid: i32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// CPU seconds of one process (its own and its reaped children's).
pub fn ticks_to_secs(ticks: u64) -> f64 {
    ticks as f64 / rustix::param::clock_ticks_per_second().max(1) as f64
}

/// The 1-minute load average of this node.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| parse_loadavg(&t))
        .unwrap_or(0.0)
}

/// Why the watchdog stops a payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The server sent a `Kill` command.
    KillCommand,
    /// The wall clock went past CPUTime × 1.2.
    WallClock,
    /// The CPU consumed went past CPUTime plus its margin.
    CpuLimit,
    /// The resident memory went past the job's MaxRAM.
    Memory,
    /// The pilot itself is being terminated.
    PilotShutdown,
}

/// Which resource limit, if any, the payload broke.
pub fn limit_broken(
    cpu_secs: f64,
    cpu_limit_secs: f64,
    rss_mb: f64,
    max_ram_mb: Option<i64>,
) -> Option<Stop> {
    if cpu_secs > cpu_limit_secs {
        return Some(Stop::CpuLimit);
    }
    match max_ram_mb {
        Some(max) if rss_mb > max as f64 => Some(Stop::Memory),
        _ => None,
    }
}

/// Whether the payload has run out of wall-clock time.
pub fn wall_clock_exceeded(elapsed_secs: f64, limit_secs: f64) -> bool {
    elapsed_secs > limit_secs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing() {
        // Real layout, with a nasty command name.
        let text = "4242 (my (odd) cmd) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 50 7 3 20 0 1 0 12345 104857600 2560 18446744073709551615 \
                    1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0";
        let stat = parse_stat(text).expect("stat");
        assert_eq!(stat.state, 'S');
        assert_eq!(stat.pgrp, 4242);
        assert_eq!(stat.cpu_ticks, 310);
        assert_eq!(stat.vsize_bytes, 104_857_600);
        assert_eq!(stat.rss_pages, 2560);
        assert_eq!(parse_stat("1 (x) S 1"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn own_stat_is_readable() {
        let me = i32::try_from(std::process::id()).expect("pid");
        let stat = process_stat(me).expect("own stat");
        assert!(matches!(stat.state, 'R' | 'S'));
        let usage = group_usage(stat.pgrp);
        assert!(usage.processes >= 1);
        assert!(usage.rss_mb > 0.0);
    }

    #[test]
    fn loadavg_and_tail() {
        assert_eq!(parse_loadavg("0.52 0.40 0.33 1/123 4567\n"), Some(0.52));
        assert_eq!(parse_loadavg(""), None);
        assert_eq!(tail_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail_lines("a", 5), "a");
        assert_eq!(tail_lines("", 5), "");
    }

    #[test]
    fn file_tail_drops_partial_first_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out");
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, &text).expect("write");
        assert_eq!(read_tail(&path, 2, 1 << 20), "line 98\nline 99");
        let cut = read_tail(&path, 100, 20);
        assert!(cut.starts_with("line 9"), "{cut}");
        assert!(cut.ends_with("line 99"));
        assert_eq!(read_tail(&dir.path().join("missing"), 3, 10), "");
    }

    #[test]
    fn cpu_and_memory_limits() {
        assert_eq!(limit_broken(10.0, 12.0, 100.0, Some(200)), None);
        assert_eq!(
            limit_broken(12.5, 12.0, 100.0, Some(200)),
            Some(Stop::CpuLimit)
        );
        assert_eq!(
            limit_broken(1.0, 12.0, 250.0, Some(200)),
            Some(Stop::Memory)
        );
        assert_eq!(limit_broken(1.0, 12.0, 250_000.0, None), None);
    }

    #[test]
    fn wall_clock() {
        assert!(!wall_clock_exceeded(10.0, 12.0));
        assert!(wall_clock_exceeded(12.5, 12.0));
    }
}
