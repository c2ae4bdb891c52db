//! The standard `process_*` metrics (CPU, memory, file descriptors, threads, start time),
//! read from `/proc/self` on each scrape. Linux only; elsewhere they are simply absent.

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge},
};

/// Clock ticks per second of `/proc` times: fixed at 100 on Linux for user space (USER_HZ).
const USER_HZ: f64 = 100.0;

/// Collects `process_*` metrics for this process.
#[derive(Debug, Default)]
pub struct ProcessCollector;

/// One reading of `/proc/self`.
#[derive(Debug, Default, PartialEq)]
pub struct Reading {
    /// User plus system CPU time, seconds.
    pub cpu_seconds: Option<f64>,
    /// Resident memory, bytes.
    pub resident_bytes: Option<i64>,
    /// Virtual memory, bytes.
    pub virtual_bytes: Option<i64>,
    /// OS threads.
    pub threads: Option<i64>,
    /// Open file descriptors.
    pub open_fds: Option<i64>,
    /// The soft limit of open file descriptors.
    pub max_fds: Option<i64>,
    /// Process start, Unix seconds.
    pub start_time_seconds: Option<f64>,
}

/// `(utime + stime, starttime)` in clock ticks from the text of `/proc/<pid>/stat`.
fn parse_stat(stat: &str) -> Option<(u64, u64)> {
    // The command name is in parentheses and may contain spaces: fields start after ')'.
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    // fields[0] is field 3 (state): utime is field 14, stime 15, starttime 22.
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some((field(14)? + field(15)?, field(22)?))
}

/// A `kB` value of `key` in the text of `/proc/<pid>/status`, in bytes (or a plain count).
fn status_value(status: &str, key: &str) -> Option<i64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    let mut words = line[key.len()..].split_whitespace();
    let value: i64 = words.next()?.parse().ok()?;
    Some(if words.next() == Some("kB") {
        value * 1024
    } else {
        value
    })
}

/// Reads this process's figures from `/proc`.
pub fn read() -> Reading {
    let text = |path: &str| std::fs::read_to_string(path).ok();
    let mut reading = Reading::default();
    if let Some(status) = text("/proc/self/status") {
        reading.resident_bytes = status_value(&status, "VmRSS:");
        reading.virtual_bytes = status_value(&status, "VmSize:");
        reading.threads = status_value(&status, "Threads:");
    }
    if let Some((cpu_ticks, start_ticks)) = text("/proc/self/stat").as_deref().and_then(parse_stat)
    {
        reading.cpu_seconds = Some(cpu_ticks as f64 / USER_HZ);
        let boot = text("/proc/stat").and_then(|s| status_value(&s, "btime"));
        reading.start_time_seconds = boot.map(|b| b as f64 + start_ticks as f64 / USER_HZ);
    }
    reading.open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count() as i64);
    reading.max_fds = text("/proc/self/limits").and_then(|limits| {
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        line["Max open files".len()..]
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    });
    reading
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let reading = read();
        if let Some(cpu) = reading.cpu_seconds {
            let counter = ConstCounter::new(cpu);
            counter.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                counter.metric_type(),
            )?)?;
        }
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                reading.resident_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                reading.virtual_bytes,
            ),
            ("process_threads", "Number of OS threads", reading.threads),
            (
                "process_open_fds",
                "Number of open file descriptors",
                reading.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                reading.max_fds,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(value) = value {
                let gauge = ConstGauge::new(value);
                gauge.encode(encoder.encode_descriptor(
                    name,
                    help,
                    None,
                    gauge.metric_type(),
                )?)?;
            }
        }
        if let Some(start) = reading.start_time_seconds {
            let gauge = ConstGauge::new(start);
            gauge.encode(encoder.encode_descriptor(
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds",
                None,
                gauge.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_found_after_a_command_name_with_spaces() {
        let stat = "42 (tokio (worker) 1) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 12345 1000 200 18446744073709551615";
        assert_eq!(parse_stat(stat), Some((300, 12345)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_reads_on_linux() {
        let reading = read();
        if cfg!(target_os = "linux") {
            assert!(reading.resident_bytes.unwrap_or(0) > 0, "{reading:?}");
            assert!(reading.open_fds.unwrap_or(0) > 0, "{reading:?}");
            assert!(reading.max_fds.unwrap_or(0) > 0, "{reading:?}");
            assert!(
                reading.start_time_seconds.unwrap_or(0.0) > 1.0e9,
                "{reading:?}"
            );
            assert!(reading.cpu_seconds.is_some(), "{reading:?}");
        }
    }
}
