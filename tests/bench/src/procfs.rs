//! What a process used, read from `/proc/self` (Linux): peak and current resident memory
//! and CPU time. Children report their own figures this way just before they exit, so the
//! numbers cover exactly the measured process and nothing the parent did.

use serde::{Deserialize, Serialize};

/// `USER_HZ`: the unit of the CPU times in `/proc/<pid>/stat`. It is part of the Linux ABI
/// (100 on every architecture the bench runs on), unlike the kernel's internal tick rate.
const USER_HZ: f64 = 100.0;

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Peak resident set (`VmHWM`), bytes.
    pub peak_rss_bytes: u64,
    /// Current resident set (`VmRSS`), bytes.
    pub rss_bytes: u64,
    /// User + system CPU seconds of every thread of the process so far.
    pub cpu_seconds: f64,
}

fn status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
}

/// CPU seconds from `/proc/self/stat`: fields 14 and 15 (utime, stime), counted after the
/// command name, which is in parentheses and may itself hold spaces.
fn cpu_seconds(stat: &str) -> Option<f64> {
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest)?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // After the name come field 3 (state) onwards: utime is field 14, so index 11 here.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

/// This process's usage now; zeros where `/proc` cannot be read (not Linux).
pub fn self_usage() -> Usage {
    usage_of("self")
}

/// The usage of process `pid` (`self`, or a number: a child still running).
pub fn usage_of(pid: &str) -> Usage {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    Usage {
        peak_rss_bytes: status_kib(&status, "VmHWM:").unwrap_or(0) * 1024,
        rss_bytes: status_kib(&status, "VmRSS:").unwrap_or(0) * 1024,
        cpu_seconds: cpu_seconds(&stat).unwrap_or(0.0),
    }
}

/// Logical CPUs the bench may use.
pub fn cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// `uname -sr`-like text for the results header.
pub fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| format!("Linux {}", s.trim()))
        .unwrap_or_else(|_| std::env::consts::OS.to_string())
}

/// The CPU model, for the results header.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_times_after_a_name_with_spaces() {
        let stat = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3";
        assert_eq!(cpu_seconds(stat), Some(3.0));
    }

    #[test]
    fn reads_kib_fields() {
        let status = "Name:\tx\nVmHWM:\t   2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(status_kib(status, "VmHWM:"), Some(2048));
        assert_eq!(status_kib(status, "VmRSS:"), Some(1024));
        assert_eq!(status_kib(status, "VmSwap:"), None);
    }

    #[test]
    fn own_usage_is_nonzero_on_linux() {
        let u = self_usage();
        if std::path::Path::new("/proc/self/status").exists() {
            assert!(u.peak_rss_bytes >= u.rss_bytes && u.rss_bytes > 0);
        }
    }
}
