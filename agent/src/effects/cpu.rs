//! A process's CPU time, from the scheduler's accounting: the process CPU
//! clock of another process (`clock_gettime` on the clock id
//! `clock_getcpuclockid` would give), the sum of all its threads' run time
//! in nanoseconds. Threads that ended count; children's time does not.

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
}
