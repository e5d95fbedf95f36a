//! The memory this process may still use: the bound a config's memory estimate and the
//! size of a table read into memory are checked against.

/// Bytes this process can still allocate, as far as the system says: the least of the
/// kernel's `MemAvailable`, the cgroup's `memory.max` less its `memory.current` (v2) or
/// `limit_in_bytes` less `usage_in_bytes` (v1), and the address-space limit
/// (`RLIMIT_AS`) less the address space already mapped. `None` where none of them is
/// known (not Linux); a caller then checks only that its arithmetic does not overflow.
///
/// Why not total RAM: a run under a container limit or `prlimit --as` has far less, and
/// a config that fits the machine but not the process trains an epoch, then aborts.
pub fn available_bytes() -> Option<u64> {
    [
        meminfo_field("MemAvailable:"),
        cgroup_headroom(),
        address_space_headroom(),
    ]
    .into_iter()
    .flatten()
    .min()
}

/// A `kB` field of `/proc/meminfo`, in bytes.
fn meminfo_field(name: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with(name))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// A number in a one-line file (`max` and unreadable files are `None`: no limit).
fn read_number(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The cgroup limit less what the cgroup uses now (v2, else v1), if a limit is set.
fn cgroup_headroom() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    for line in text.lines() {
        // v2: "0::/path"; v1: "N:memory:/path".
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if controllers.is_empty() {
            let dir = format!("/sys/fs/cgroup{path}");
            let limit = read_number(&format!("{dir}/memory.max"))
                .or_else(|| read_number("/sys/fs/cgroup/memory.max"))?;
            let used = read_number(&format!("{dir}/memory.current"))
                .or_else(|| read_number("/sys/fs/cgroup/memory.current"))
                .unwrap_or(0);
            return Some(limit.saturating_sub(used));
        }
        if controllers.split(',').any(|c| c == "memory") {
            let dir = format!("/sys/fs/cgroup/memory{path}");
            let limit = read_number(&format!("{dir}/memory.limit_in_bytes"))
                .or_else(|| read_number("/sys/fs/cgroup/memory/memory.limit_in_bytes"))?;
            let used = read_number(&format!("{dir}/memory.usage_in_bytes"))
                .or_else(|| read_number("/sys/fs/cgroup/memory/memory.usage_in_bytes"))
                .unwrap_or(0);
            return Some(limit.saturating_sub(used));
        }
    }
    None
}

/// `RLIMIT_AS` less the address space mapped now (`VmSize`), if a limit is set.
#[cfg(unix)]
fn address_space_headroom() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit` writes one `rlimit` into the struct we pass and reads nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut limit) } != 0
        || limit.rlim_cur == libc::RLIM_INFINITY
    {
        return None;
    }
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let mapped = text
        .lines()
        .find(|l| l.starts_with("VmSize:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |kib| kib.saturating_mul(1024));
    // `rlim_t` is u64 on Linux, not on every unix.
    #[allow(clippy::unnecessary_cast)]
    let limit = limit.rlim_cur as u64;
    Some(limit.saturating_sub(mapped))
}

#[cfg(not(unix))]
fn address_space_headroom() -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(target_os = "linux")]
    fn linux_reports_a_plausible_total_and_less_available() {
        let total = super::meminfo_field("MemTotal:").expect("/proc/meminfo has MemTotal");
        assert!(total > 64 << 20, "{total}");
        let available = super::available_bytes().expect("MemAvailable at least");
        assert!(
            available > 0 && available <= total,
            "{available} of {total}"
        );
    }
}
