//! A server's CPU time, from the scheduler's accounting: the process CPU
//! clock of another process (`clock_gettime` on the clock id
//! `clock_getcpuclockid` would give), the sum of all its threads' run time
//! in nanoseconds (threads that ended count), plus the CPU time of the
//! processes it started and has waited for (`cutime` + `cstime` of
//! /proc/PID/stat, in clock ticks: 10 ms each with the usual 100 Hz).
//! A child still running when a call ends, or never waited for, does not
//! count.

use std::path::Path;

/// What a server's processes have spent so far: its own CPU time and its
/// waited-for children's, in nanoseconds; `None` when it is gone.
pub fn server_cpu_ns(proc_root: &Path, pid: u32) -> Option<u64> {
    let own = process_cpu_ns(pid)?;
    Some(own + children_cpu_ns(proc_root, pid).unwrap_or(0))
}

/// The CPU time of the children `pid` has waited for, from its stat file.
fn children_cpu_ns(proc_root: &Path, pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?;
    let (_, fields) = crate::enrich::process::parse_stat(&stat)?;
    // cutime and cstime: fields 16 and 17.
    let ticks: u64 = fields.get(13)?.parse::<u64>().ok()? + fields.get(14)?.parse::<u64>().ok()?;
    Some(crate::enrich::process::ticks_ns(ticks))
}

/// CPU time of process `pid` so far, in nanoseconds; `None` when it is gone.
pub fn process_cpu_ns(pid: u32) -> Option<u64> {
    // Past Linux's largest pid_max the clock id would wrap onto another
    // clock (this process's own).
    if pid == 0 || pid >= 1 << 22 {
        return None;
    }
    // Linux's process CPU clock ids: (~pid << 3) | CPUCLOCK_SCHED (2), the
    // per-thread bit (4) clear. What glibc's clock_getcpuclockid returns.
    let clock = ((!(pid as libc::clockid_t)) << 3) | 2;
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid pointer to a local timespec.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return None;
    }
    Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_cpu_time() {
        let pid = std::process::id();
        let before = process_cpu_ns(pid).unwrap();
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(30) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        std::hint::black_box(x);
        let after = process_cpu_ns(pid).unwrap();
        assert!(after > before + 10_000_000, "{before} → {after}");
        // No such process, and no pid at all.
        let gone = (4_000_000..4_194_303)
            .find(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())
            .unwrap();
        assert_eq!(process_cpu_ns(gone), None);
        assert_eq!(process_cpu_ns(u32::MAX >> 2), None);
    }

    #[test]
    fn a_servers_cpu_includes_the_children_it_waited_for() {
        let root = Path::new("/proc");
        let pid = std::process::id();
        let before = children_cpu_ns(root, pid).unwrap();
        // A child that burns ~150 ms of CPU, waited for.
        let status = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done"])
            .status()
            .unwrap();
        assert!(status.success());
        let after = children_cpu_ns(root, pid).unwrap();
        assert!(after >= before + 20_000_000, "{before} → {after}");
        assert!(server_cpu_ns(root, pid).unwrap() >= after);
        // A fake stat: comm with spaces and parentheses, 3 + 4 ticks.
        let dir = std::env::temp_dir().join(format!("mcptap-cpu-{pid}"));
        std::fs::create_dir_all(dir.join("7")).unwrap();
        let mut stat = "7 (a (b) c) S".to_string();
        for i in 4..=20 {
            stat.push_str(&format!(
                " {}",
                if i == 16 {
                    3
                } else if i == 17 {
                    4
                } else {
                    0
                }
            ));
        }
        std::fs::write(dir.join("7/stat"), stat).unwrap();
        assert_eq!(children_cpu_ns(&dir, 7), Some(crate::enrich::process::ticks_ns(7)));
        assert_eq!(children_cpu_ns(&dir, 8), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
