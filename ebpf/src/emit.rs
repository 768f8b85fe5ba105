//! The chunk emitter: copies the bytes of one call (a plain buffer or an
//! iovec array) into the ring buffer as chunks of at most CHUNK_DATA_MAX
//! bytes, through the per-CPU scratch buffer so that each record takes only
//! the room its bytes need.
//!
//! `bpf_loop` drives the copy so that the verifier checks the step once, not
//! once per possible chunk: a call of several MiB is a few hundred steps.
//! The copy's progress lives in a per-CPU map, not on the stack: the
//! verifier does not track map contents, so every step looks the same to it
//! and its state exploration converges at once (with stack state, each step
//! has different known bounds and verification runs out of budget).
//!
//! Every capture path (stdio, sockets, TLS) ends here, so chunk headers,
//! loss accounting and the capture cap behave the same for all of them.

use core::ffi::c_void;

use aya_ebpf::helpers::{
    bpf_probe_read_user,
    generated::{bpf_loop, bpf_probe_read_user as probe_read_user_raw},
};
use mcptap_common::{CHUNK_DATA_MAX, CHUNK_HEADER_LEN, ChunkHeader, chunk_flags, counter};

use aya_ebpf::{macros::map, maps::PerCpuArray};

use crate::{
    config,
    maps::{EVENTS, SCRATCH, count, wakeup_flags},
};

/// Progress of the copy in flight on this CPU.
#[map]
static EMIT: PerCpuArray<Emit> = PerCpuArray::with_max_entries(1, 0);

/// Upper bound of loop steps for one call: one per chunk plus one per iovec.
/// The loop stops as soon as the call's bytes are sent.
const MAX_STEPS: u32 = 1 << 20;

/// What to send, and how far the copy got.
#[repr(C)]
struct Emit {
    /// Header template: every chunk of the call shares all but `len` and
    /// `offset`.
    pub header: ChunkHeader,
    /// User address of the current segment.
    cur: u64,
    /// Bytes left in the current segment.
    seg_left: u64,
    /// User address of the next iovec; unused for a plain buffer.
    iov: u64,
    /// Iovecs not yet started.
    iov_left: u64,
    /// Bytes left to send for the whole call (after the capture cap).
    left: u64,
    /// Set when a copy or ring buffer write failed: the rest of the call is
    /// lost and the caller marks the process as having lost data.
    failed: bool,
}

/// Sends `len` bytes from a plain buffer (`iov_cnt == 0`) or from the iovec
/// array at `buf`, as chunks sharing `header`. Returns false when part of
/// the bytes could not be sent.
#[inline(always)]
pub fn emit(header: ChunkHeader, buf: u64, iov_cnt: u64, len: u64) -> bool {
    let Some(st) = EMIT.get_ptr_mut(0) else {
        return false;
    };
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
            failed: false,
        };
        bpf_loop(MAX_STEPS, emit_step as *mut c_void, core::ptr::null_mut(), 0);
        !(*st).failed
    }
}

/// One loop step: start the next iovec, or send the next chunk.
/// Returns 1 to stop the loop, 0 to go on.
extern "C" fn emit_step(_index: u64, _ctx: *mut c_void) -> i64 {
    let Some(st) = EMIT.get_ptr_mut(0) else {
        return 1;
    };
    let st = unsafe { &mut *st };
    if st.left == 0 {
        return 1;
    }
    if st.seg_left == 0 {
        if st.iov_left == 0 {
            return 1;
        }
        // struct iovec { void *iov_base; size_t iov_len; }
        let iov = match unsafe { bpf_probe_read_user(st.iov as *const [u64; 2]) } {
            Ok(iov) => iov,
            Err(_) => return fail(st, true),
        };
        st.iov += 16;
        st.iov_left -= 1;
        st.cur = iov[0];
        st.seg_left = iov[1];
        return 0;
    }

    let mut n = st.seg_left;
    if n > st.left {
        n = st.left;
    }
    if n > CHUNK_DATA_MAX as u64 {
        n = CHUNK_DATA_MAX as u64;
    }
    let Some(chunk) = SCRATCH.get_ptr_mut(0) else {
        return fail(st, false);
    };
    let n = clamp_chunk_len(n);
    unsafe {
        (*chunk).header = st.header;
        (*chunk).header.len = n as u32;
        let data = core::ptr::addr_of_mut!((*chunk).data) as *mut c_void;
        if probe_read_user_raw(data, n as u32, st.cur as *const c_void) != 0 {
            return fail(st, true);
        }
        let record = core::slice::from_raw_parts(chunk as *const u8, CHUNK_HEADER_LEN + n as usize);
        // Discovery news wakes the agent at once: it decides while the
        // connection (or process) is fresh.
        let wake = if st.header.flags & chunk_flags::DISCOVERY != 0 && st.header.offset == 0 {
            aya_ebpf::bindings::BPF_RB_FORCE_WAKEUP as u64
        } else {
            wakeup_flags()
        };
        if EVENTS.output::<[u8]>(record, wake).is_err() {
            count(counter::RINGBUF_FULL_CHUNKS, 1);
            count(counter::RINGBUF_FULL_BYTES, st.left);
            st.left = 0;
            st.failed = true;
            return 1;
        }
    }
    count(counter::CHUNKS_SENT, 1);
    count(counter::BYTES_SENT, n);
    st.header.offset += n;
    st.cur += n;
    st.seg_left -= n;
    st.left -= n;
    // A later chunk of this call no longer carries the "loss before" news.
    st.header.flags &= !chunk_flags::LOSS_BEFORE;
    0
}

#[inline(always)]
fn fail(st: &mut Emit, copy: bool) -> i64 {
    if copy {
        count(counter::COPY_FAILED, 1);
    }
    st.left = 0;
    st.failed = true;
    1
}

/// Proves to the verifier that the copy length fits the scratch buffer.
#[inline(always)]
fn clamp_chunk_len(n: u64) -> u64 {
    let n = core::hint::black_box(n);
    if n > CHUNK_DATA_MAX as u64 {
        CHUNK_DATA_MAX as u64
    } else {
        n
    }
}

/// Sends the `ret` bytes of one call made by a tracked (or sniffed)
/// process, applying the capture cap and the process's loss flag. `lost`
/// is the process's "data lost since the last chunk" flag: consumed here,
/// and set again when this call could not be sent whole.
#[inline(always)]
pub fn emit_call(mut header: ChunkHeader, buf: u64, iov_cnt: u64, ret: u64, lost: Option<*mut u32>) {
    if let Some(lost) = lost {
        unsafe {
            if *lost != 0 {
                header.flags |= chunk_flags::LOSS_BEFORE;
                *lost = 0;
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
    if !emit(header, buf, iov_cnt, len) {
        if let Some(lost) = lost {
            unsafe { *lost = 1 };
        }
    }
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
        // struct iovec { void *iov_base; size_t iov_len; }
        let iov = unsafe { bpf_probe_read_user(buf as *const [u64; 2]) }.ok()?;
        if iov[1] < 4 {
            return None;
        }
        first = iov[0];
    }
    unsafe { bpf_probe_read_user(first as *const [u8; 4]) }.ok()
}
