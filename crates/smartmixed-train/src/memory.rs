//! The machine's memory, the bound a config's memory estimate is checked against.

/// Total physical memory in bytes (Linux `/proc/meminfo`), or `None` where unknown; a
/// config is then only refused if its estimate overflows.
pub fn total_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(target_os = "linux")]
    fn linux_reports_a_plausible_total() {
        let total = super::total_bytes().expect("/proc/meminfo has MemTotal");
        assert!(total > 64 << 20, "{total}");
    }
}
