//! Read-only settings the agent writes into the object before loading it
//! (`EbpfLoader::override_global`). The verifier sees their final values.

/// The agent's own tgid: never tracked, never sniffed.
#[unsafe(no_mangle)]
static AGENT_TGID: u32 = 0;

/// Most bytes sent per syscall; the rest is counted as truncated.
#[unsafe(no_mangle)]
static CAPTURE_CAP: u64 = 16 << 20;

/// 1 when untracked processes' stdin reads are sniffed for JSON-RPC.
#[unsafe(no_mangle)]
static DISCOVERY: u8 = 1;

/// 1 when the executable-name rules map has entries.
#[unsafe(no_mangle)]
static HAS_COMM_RULES: u8 = 0;

/// Offset of `group_dead` in the sched_process_exit record, 0 when this
/// kernel's record has no such field (then the leader's exit ends the group).
#[unsafe(no_mangle)]
static EXIT_GROUP_DEAD_OFFSET: u32 = 0;

#[inline(always)]
fn read<T: Copy>(value: &T) -> T {
    // Volatile: the compiler must not fold the default value in.
    unsafe { core::ptr::read_volatile(value) }
}

#[inline(always)]
pub fn agent_tgid() -> u32 {
    read(&AGENT_TGID)
}

#[inline(always)]
pub fn capture_cap() -> u64 {
    read(&CAPTURE_CAP)
}

#[inline(always)]
pub fn discovery() -> bool {
    read(&DISCOVERY) != 0
}

#[inline(always)]
pub fn has_comm_rules() -> bool {
    read(&HAS_COMM_RULES) != 0
}

#[inline(always)]
pub fn exit_group_dead_offset() -> u32 {
    read(&EXIT_GROUP_DEAD_OFFSET)
}
