//! The chunk emitter: copies the bytes of one call (a plain buffer or an
//! iovec array) into the ring buffer as chunks of at most CHUNK_DATA_MAX
//! bytes, through the per-CPU scratch buffer so that each record takes only
//! the room its bytes need.
//!
//! Two steps, so that every program has exactly one copy loop whatever the
//! paths that lead to it: the capture paths (stdio, sockets, TLS) `queue`
//! the call they want sent, and the program's entry point `flush`es once
//! at its end. The verifier then checks the loop once per program instead
//! of once per path, which is what lets the loop be unrolled on kernels
//! without `bpf_loop`.
//!
//! The copy loop:
//! - kernels with `bpf_loop` (5.17+, the main object): `bpf_loop` drives
//!   the step, so the verifier checks it once, not once per possible
//!   chunk: a call of several MiB is a few hundred steps.
//! - kernels without it (5.10 to 5.16, the compat object): a bounded loop
//!   of [`BOUNDED_STEPS`] steps, which the verifier walks step by step.
//!   The agent lowers the capture cap to what that loop can carry
//!   ([`mcptap_common::COMPAT_MAX_CALL_BYTES`]); a call that needs more
//!   steps (an iovec of many small segments) loses its tail, counted.
//!
//! The copy's progress lives in a per-CPU map, not on the stack: the
//! verifier does not track map contents, so every step looks the same to it
//! and its state exploration converges at once (with stack state, each step
//! has different known bounds and verification runs out of budget).
//!
//! Every capture path ends here, so chunk headers, loss accounting and the
//! capture cap behave the same for all of them.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::BPF_RB_FORCE_WAKEUP,
    helpers::{
        bpf_ktime_get_ns, bpf_probe_read_user,
        generated::{bpf_loop, bpf_probe_read_user as probe_read_user_raw},
    },
    helpers::bpf_get_smp_processor_id,
    macros::map,
    maps::{Array, PerCpuArray},
};
use mcptap_common::{
    CHUNK_DATA_MAX, CHUNK_HEADER_LEN, COMPAT_CHUNK_DATA_MAX, COMPAT_STEPS, Chunk, ChunkBuf, ChunkHeader, ProcState,
    WideChunk, chunk_flags, counter, record,
};

use crate::{
    config,
    maps::{EVENTS, PROCS, count, wakeup_flags},
};

/// Per-CPU scratch buffer where a chunk is assembled before it is copied
/// into the ring buffer with its exact length (main object).
#[map]
static SCRATCH: PerCpuArray<Chunk> = PerCpuArray::with_max_entries(1, 0);

/// The compat object's wide chunks, one per possible CPU (the agent sizes
/// it; a per-CPU map value cannot hold 256 KiB). Same use as SCRATCH: no
/// other program runs on this CPU while one assembles its chunk.
#[map]
static SCRATCH_WIDE: Array<WideChunk> = Array::with_max_entries(1, 0);

/// The call queued on this CPU, and how far its copy got.
#[map]
static EMIT: PerCpuArray<Emit> = PerCpuArray::with_max_entries(1, 0);

/// Upper bound of `bpf_loop` steps for one call: one per chunk plus one per
/// iovec. The loop stops as soon as the call's bytes are sent.
const MAX_STEPS: u32 = 1 << 20;

/// Steps of the bounded loop of kernels without `bpf_loop`, in rounds of
/// BOUNDED_INNER (see `flush`).
const BOUNDED_STEPS: u32 = COMPAT_STEPS;
const BOUNDED_INNER: u32 = 16;

/// What to send, and how far the copy got.
#[repr(C)]
struct Emit {
    /// Header template: every chunk of the call shares all but `len` and
    /// `offset`.
    header: ChunkHeader,
    /// User address of the current segment.
    cur: u64,
    /// Bytes left in the current segment (never more than `left`).
    seg_left: u64,
    /// User address of the next iovec; unused for a plain buffer.
    iov: u64,
    /// Iovecs not yet started.
    iov_left: u64,
    /// Bytes left to send for the whole call (after the capture cap).
    left: u64,
    /// Ring buffer flags of every chunk of the call, decided once.
    wake: u64,
    /// Chunks and bytes sent, counted once at the end (fewer branches per
    /// step for the verifier to walk).
    chunks: u64,
    bytes: u64,
    /// The process whose loss flag is set when part of the call is lost;
    /// 0 for none (discovery sniffs of processes without an entry).
    lost_tgid: u32,
    /// Set when a copy or ring buffer write failed: the rest of the call is
    /// lost and `flush` marks the process as having lost data.
    failed: bool,
}

/// Which call the bytes are from: what every chunk of it says (the chunk
/// header is built from this in one place, `queue`).
pub struct Call {
    /// One of `mcptap_common::channel`.
    pub channel: u8,
    pub pid_tgid: u64,
    /// The descriptor; for TLS, the socket the session runs on, or -1.
    pub fd: i32,
    /// One of `mcptap_common::op`.
    pub op: u8,
    /// `chunk_flags::DISCOVERY` when sniffed, else 0.
    pub flags: u8,
    /// The `SSL*` of a TLS call, else 0.
    pub ssl: u64,
}

/// Queues the `ret` bytes of one call made by a tracked (or sniffed)
/// process, applying the capture cap and the process's loss flag. `p` is
/// the process's entry when it has one: its "data lost since the last
/// chunk" flag is consumed here, and set again by `flush` when this call
/// could not be sent whole. Nothing is copied until `flush`.
#[inline(always)]
pub fn queue(call: Call, buf: u64, iov_cnt: u64, ret: u64, p: Option<*mut ProcState>) {
    let Some(st) = EMIT.get_ptr_mut(0) else {
        return;
    };
    let mut header = ChunkHeader {
        kind: record::CHUNK,
        len: 0,
        ts_ns: unsafe { bpf_ktime_get_ns() },
        pid_tgid: call.pid_tgid,
        call_len: 0,
        offset: 0,
        ssl: call.ssl,
        fd: call.fd,
        op: call.op,
        flags: call.flags,
        channel: call.channel,
        _reserved: 0,
    };
    let mut lost_tgid = 0;
    if let Some(p) = p {
        lost_tgid = (header.pid_tgid >> 32) as u32;
        unsafe {
            if (*p).lost != 0 {
                header.flags |= chunk_flags::LOSS_BEFORE;
                (*p).lost = 0;
            }
        }
    }
    header.call_len = ret;
    let mut len = ret;
    let cap = config::capture_cap();
    if len > cap {
        len = cap;
        header.flags |= chunk_flags::TRUNCATED;
        count(counter::TRUNCATED_CALLS, 1);
        count(counter::TRUNCATED_BYTES, ret - cap);
    }
    // A plain buffer is one segment of exactly the call's bytes.
    let (cur, seg_left, iov, iov_left) = if iov_cnt == 0 {
        (buf, len, 0, 0)
    } else {
        (0, 0, buf, iov_cnt)
    };
    unsafe {
        *st = Emit {
            header,
            cur,
            seg_left,
            iov,
            iov_left,
            left: len,
            wake: 0,
            chunks: 0,
            bytes: 0,
            lost_tgid,
            failed: false,
        };
    }
}

/// Copies the queued call, if any, into the ring buffer. Every program
/// that may `queue` calls this once, last.
#[inline(always)]
pub fn flush() {
    let Some(st) = EMIT.get_ptr_mut(0) else {
        return;
    };
    unsafe {
        if (*st).left == 0 {
            return;
        }
        // Discovery news wakes the agent at once: it decides while the
        // connection (or process) is fresh. Otherwise only a filling buffer
        // is worth a wakeup.
        (*st).wake = if (*st).header.flags & chunk_flags::DISCOVERY != 0 {
            BPF_RB_FORCE_WAKEUP as u64
        } else {
            wakeup_flags()
        };
    }
    if crate::HAS_BPF_LOOP {
        unsafe { bpf_loop(MAX_STEPS, loop_step as *mut c_void, core::ptr::null_mut(), 0) };
    } else {
        // Verifier note (kernels without bpf_loop): it walks every step,
        // and an early exit from step k leads into the code after the
        // loop with a state it cannot prune against step k+1's (the loop
        // counter differs), so exits are taken only every BOUNDED_INNER
        // steps; in between, a finished call makes the steps no-ops, whose
        // paths merge with the busy ones at the next step.
        for _ in 0..BOUNDED_STEPS / BOUNDED_INNER {
            for _ in 0..BOUNDED_INNER {
                step();
            }
            if unsafe { (*st).left } == 0 {
                break;
            }
        }
    }
    let st = unsafe { &mut *st };
    count(counter::CHUNKS_SENT, st.chunks);
    count(counter::BYTES_SENT, st.bytes);
    if st.left != 0 {
        // The bounded loop ran out of steps.
        count(counter::COPY_STEPS_EXHAUSTED, 1);
        st.left = 0;
        st.failed = true;
    }
    if st.failed && st.lost_tgid != 0
        && let Some(p) = PROCS.get_ptr_mut(st.lost_tgid) {
            unsafe { (*p).lost = 1 };
        }
}

/// The `bpf_loop` callback: one step. Returns 1 to stop the loop.
extern "C" fn loop_step(_index: u64, _ctx: *mut c_void) -> i64 {
    i64::from(step())
}

/// One step: start the next iovec, or send the next chunk. Returns true
/// when the call is done (sent, or failed). Kept to few branches: on
/// kernels without `bpf_loop` the verifier walks it once per step.
#[inline(always)]
fn step() -> bool {
    let Some(st) = EMIT.get_ptr_mut(0) else {
        return true;
    };
    let st = unsafe { &mut *st };
    if st.left == 0 {
        return true;
    }
    if st.seg_left == 0 {
        if st.iov_left == 0 {
            // The iovecs held fewer bytes than the call returned.
            st.left = 0;
            return true;
        }
        // struct iovec { void *iov_base; size_t iov_len; }
        let Ok(iov) = (unsafe { bpf_probe_read_user(st.iov as *const [u64; 2]) }) else {
            return fail(st, true);
        };
        st.iov += 16;
        st.iov_left -= 1;
        st.cur = iov[0];
        // Never past the call's end: the chunk length below then needs one
        // bound only.
        st.seg_left = if iov[1] < st.left { iov[1] } else { st.left };
        return false;
    }
    let sent = if crate::HAS_BPF_LOOP {
        send_chunk::<CHUNK_DATA_MAX>(st, SCRATCH.get_ptr_mut(0))
    } else {
        let cpu = unsafe { bpf_get_smp_processor_id() };
        send_chunk::<COMPAT_CHUNK_DATA_MAX>(st, SCRATCH_WIDE.get_ptr_mut(cpu))
    };
    let Some(n) = sent else {
        return true;
    };
    st.chunks += 1;
    st.bytes += n;
    st.header.offset += n;
    st.cur += n;
    st.seg_left -= n;
    st.left -= n;
    // A later chunk of this call no longer carries the "loss before" news.
    st.header.flags &= !chunk_flags::LOSS_BEFORE;
    false
}

#[inline(always)]
fn fail(st: &mut Emit, copy: bool) -> bool {
    if copy {
        count(counter::COPY_FAILED, 1);
    }
    st.left = 0;
    st.failed = true;
    true
}

/// Assembles the next chunk of the current segment in `chunk` (a scratch
/// buffer of N payload bytes) and writes it to the ring buffer. Returns its
/// length, or None when the call failed (the rest of it is lost).
#[inline(always)]
fn send_chunk<const N: usize>(st: &mut Emit, chunk: Option<*mut ChunkBuf<N>>) -> Option<u64> {
    let Some(chunk) = chunk else {
        fail(st, false);
        return None;
    };
    let n = chunk_len::<N>(st.seg_left);
    unsafe {
        (*chunk).header = st.header;
        (*chunk).header.len = n as u32;
        let data = core::ptr::addr_of_mut!((*chunk).data) as *mut c_void;
        if probe_read_user_raw(data, n as u32, st.cur as *const c_void) != 0 {
            fail(st, true);
            return None;
        }
        let record = core::slice::from_raw_parts(chunk as *const u8, CHUNK_HEADER_LEN + n as usize);
        if EVENTS.output::<[u8]>(record, st.wake).is_err() {
            count(counter::RINGBUF_FULL_CHUNKS, 1);
            count(counter::RINGBUF_FULL_BYTES, st.left);
            st.left = 0;
            st.failed = true;
            return None;
        }
    }
    Some(n)
}

/// The next chunk's length: at most N, in a form every verifier follows.
/// The value is `min(seg_left, N)`; the mask
/// and the second bound change nothing but prove to 5.10's verifier that
/// the size is neither negative nor past the scratch buffer (it loses the
/// sign of the first bound when the compiler narrows it to 32 bits).
/// black_box keeps the compiler from folding the redundant steps away.
#[inline(always)]
fn chunk_len<const N: usize>(seg_left: u64) -> u64 {
    let max = N as u64;
    let n = if seg_left > max { max } else { seg_left };
    let n = core::hint::black_box(n) & (2 * max - 1);
    let n = core::hint::black_box(n);
    if n > max { max } else { n }
}

/// Whether a lone byte read earlier to `at`, followed by `next`, starts a
/// request. Go's HTTP server reads one byte ahead on a kept-alive
/// connection (its background read, to notice the client leaving): the
/// next request then arrives as "P" and "OST ...". The byte is still where
/// it was read to: the reader copies it out and reads on, it does not
/// read ahead again before that.
#[inline(always)]
pub fn lead_starts_request(at: u64, next: [u8; 4]) -> bool {
    unsafe { bpf_probe_read_user(at as *const u8) }.is_ok_and(|c| {
        let four = [c, next[0], next[1], next[2]];
        &four == b"POST" || &four == b"GET "
    })
}

/// Whether a one-byte read to `buf` may be the first byte of a request
/// (see [`lead_starts_request`]).
#[inline(always)]
pub fn may_lead_request(buf: u64, iov_cnt: u64, ret: u64) -> bool {
    ret == 1 && iov_cnt == 0 && unsafe { bpf_probe_read_user(buf as *const u8) }.is_ok_and(|c| c == b'P' || c == b'G')
}

/// The first four bytes a call moved (from a plain buffer, or the first
/// iovec), or `None` when it moved fewer or they cannot be read.
#[inline(always)]
pub fn first4(buf: u64, iov_cnt: u64, ret: u64) -> Option<[u8; 4]> {
    if ret < 4 {
        return None;
    }
    let mut first = buf;
    if iov_cnt != 0 {
        let (base, len) = first_iovec(buf)?;
        if len < 4 {
            return None;
        }
        first = base;
    }
    unsafe { bpf_probe_read_user(first as *const [u8; 4]) }.ok()
}

/// The first element of a user iovec array: its base and length
/// (`struct iovec { void *iov_base; size_t iov_len; }`).
#[inline(always)]
pub fn first_iovec(iov: u64) -> Option<(u64, u64)> {
    let v = unsafe { bpf_probe_read_user(iov as *const [u64; 2]) }.ok()?;
    Some((v[0], v[1]))
}
