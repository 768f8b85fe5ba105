//! The host the agent runs on, and kernel time → wall time.

use serde::Serialize;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HostInfo {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

impl HostInfo {
    /// The host's name: `MCPTAP_HOST_NAME` when set (in a Kubernetes pod the
    /// kernel's host name is the pod's; the DaemonSet passes the node's),
    /// else gethostname. The id: /etc/machine-id.
    pub fn detect() -> HostInfo {
        let mut buf = [0u8; 256];
        let from_env = std::env::var("MCPTAP_HOST_NAME").ok().filter(|n| !n.trim().is_empty());
        // SAFETY: buffer and its length are valid.
        let name = if let Some(name) = from_env {
            name.trim().to_string()
        } else if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0 {
            let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
            String::from_utf8_lossy(&buf[..end]).into_owned()
        } else {
            "unknown".into()
        };
        let id = std::fs::read_to_string("/etc/machine-id")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        HostInfo { name, id }
    }
}

/// Converts the kernel's CLOCK_MONOTONIC timestamps to wall-clock time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// realtime − monotonic, in nanoseconds.
    offset_ns: i128,
}

fn now_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer to a local.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            offset_ns: now_ns(libc::CLOCK_REALTIME) - now_ns(libc::CLOCK_MONOTONIC),
        }
    }

    /// Re-reads the offset (the wall clock may have been stepped).
    pub fn resync(&mut self) {
        *self = Clock::new();
    }

    /// Now, on the kernel's clock.
    pub fn monotonic_now_ns() -> u64 {
        now_ns(libc::CLOCK_MONOTONIC) as u64
    }

    pub fn wall(&self, monotonic_ns: u64) -> chrono::DateTime<chrono::Utc> {
        let ns = monotonic_ns as i128 + self.offset_ns;
        chrono::DateTime::from_timestamp_nanos(ns.clamp(0, i64::MAX as i128) as i64)
    }

    pub fn rfc3339(&self, monotonic_ns: u64) -> String {
        self.wall(monotonic_ns)
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_maps_to_now() {
        let clock = Clock::new();
        let wall = clock.wall(Clock::monotonic_now_ns());
        let drift = (chrono::Utc::now() - wall).num_milliseconds().abs();
        assert!(drift < 1000, "{drift} ms");
    }

    #[test]
    fn host_has_a_name() {
        assert!(!HostInfo::detect().name.is_empty());
    }
}
