//! Read-only settings the agent writes into the object before loading it
//! (`EbpfLoader::override_global`). The verifier sees their final values.

/// The agent's own tgid: never tracked, never sniffed.
#[unsafe(no_mangle)]
static AGENT_TGID: u32 = 0;

/// Most bytes sent per call; the rest is counted as truncated.
#[unsafe(no_mangle)]
static CAPTURE_CAP: u64 = 16 << 20;

/// 1 when untracked processes are sniffed for MCP (stdin, HTTP, TLS).
#[unsafe(no_mangle)]
static DISCOVERY: u8 = 1;

/// 1 when TCP sockets of tracked processes are captured.
#[unsafe(no_mangle)]
static CAPTURE_SOCKETS: u8 = 1;

/// 1 when the executable-name rules map has entries.
#[unsafe(no_mangle)]
static HAS_COMM_RULES: u8 = 0;

/// 1 when the port rules map has entries.
#[unsafe(no_mangle)]
static HAS_PORT_RULES: u8 = 0;

/// 1 when the agent wants to hear of every exec (to find TLS libraries).
#[unsafe(no_mangle)]
static SEND_EXECS: u8 = 0;

/// Wake the agent once this many bytes wait in the ring buffer; below it
/// the agent drains on its own timer (no wakeup per message).
#[unsafe(no_mangle)]
static WAKEUP_BYTES: u64 = 1 << 20;

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
pub fn capture_sockets() -> bool {
    read(&CAPTURE_SOCKETS) != 0
}

#[inline(always)]
pub fn has_comm_rules() -> bool {
    read(&HAS_COMM_RULES) != 0
}

#[inline(always)]
pub fn has_port_rules() -> bool {
    read(&HAS_PORT_RULES) != 0
}

#[inline(always)]
pub fn send_execs() -> bool {
    read(&SEND_EXECS) != 0
}

#[inline(always)]
pub fn wakeup_bytes() -> u64 {
    read(&WAKEUP_BYTES)
}

#[inline(always)]
pub fn exit_group_dead_offset() -> u32 {
    read(&EXIT_GROUP_DEAD_OFFSET)
}
