//! The agent's settings ([`KernelConfig`]): one read-only global the agent
//! writes into the object before loading it (`EbpfLoader::override_global`
//! with `names::CONFIG`). The verifier sees the final values, so a feature
//! switched off costs nothing: its branch is pruned at load.

use mcptap_common::KernelConfig;

#[unsafe(no_mangle)]
static CONFIG: KernelConfig = KernelConfig {
    capture_cap: 16 << 20,
    wakeup_bytes: 1 << 20,
    agent_tgid: 0,
    exit_group_dead_offset: 0,
    discovery: 1,
    capture_sockets: 1,
    has_comm_rules: 0,
    has_port_rules: 0,
    send_execs: 0,
    effects: 0,
    fork_child_pid_offset: 0,
    exec_filename_offset: 0,
    sdk_opens: 0,
    _pad: [0; 5],
};

/// One field of the configuration. Volatile: the compiler must not fold
/// the defaults above in (the agent replaces them before loading); the
/// verifier then reads the real value from the frozen map.
macro_rules! field {
    ($name:ident) => {
        unsafe { core::ptr::read_volatile(&raw const CONFIG.$name) }
    };
}

#[inline(always)]
pub fn agent_tgid() -> u32 {
    field!(agent_tgid)
}

#[inline(always)]
pub fn capture_cap() -> u64 {
    field!(capture_cap)
}

#[inline(always)]
pub fn discovery() -> bool {
    field!(discovery) != 0
}

#[inline(always)]
pub fn capture_sockets() -> bool {
    field!(capture_sockets) != 0
}

#[inline(always)]
pub fn has_comm_rules() -> bool {
    field!(has_comm_rules) != 0
}

#[inline(always)]
pub fn has_port_rules() -> bool {
    field!(has_port_rules) != 0
}

#[inline(always)]
pub fn send_execs() -> bool {
    field!(send_execs) != 0
}

#[inline(always)]
pub fn wakeup_bytes() -> u64 {
    field!(wakeup_bytes)
}

#[inline(always)]
pub fn exit_group_dead_offset() -> u32 {
    field!(exit_group_dead_offset)
}

#[inline(always)]
pub fn effects() -> bool {
    field!(effects) != 0
}

#[inline(always)]
pub fn fork_child_pid_offset() -> u16 {
    field!(fork_child_pid_offset)
}

#[inline(always)]
pub fn exec_filename_offset() -> u16 {
    field!(exec_filename_offset)
}

#[inline(always)]
pub fn sdk_opens() -> bool {
    field!(sdk_opens) != 0
}
