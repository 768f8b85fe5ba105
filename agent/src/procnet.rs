//! TCP connections as /proc and the socket calls show them: which
//! descriptor of which process is which connection, who listens where, and
//! which process holds the other end of a loopback connection.
//!
//! Shared by the capture stage (seeding the kernel's socket map at start,
//! port selection) and the enrichment stage (addresses and peer processes
//! of a connection).

use std::{
    collections::HashMap,
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::{FromRawFd, OwnedFd},
    path::Path,
};

/// TCP states of /proc/net/tcp.
pub const ESTABLISHED: u8 = 0x01;
pub const LISTEN: u8 = 0x0A;

/// One line of /proc/PID/net/tcp or tcp6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpEntry {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: u8,
    pub inode: u64,
}

/// The TCP sockets of a network namespace, as seen from `pid`.
pub fn tcp_table(proc_root: &Path, pid: u32) -> Vec<TcpEntry> {
    let dir = proc_root.join(pid.to_string()).join("net");
    let mut out = Vec::new();
    for name in ["tcp", "tcp6"] {
        if let Ok(text) = fs::read_to_string(dir.join(name)) {
            out.extend(text.lines().skip(1).filter_map(parse_tcp_line));
        }
    }
    out
}

/// Parses `  0: 0100007F:1F90 00000000:0000 0A ... inode ...`.
pub fn parse_tcp_line(line: &str) -> Option<TcpEntry> {
    let mut f = line.split_whitespace();
    let _slot = f.next()?;
    let local = parse_addr(f.next()?)?;
    let remote = parse_addr(f.next()?)?;
    let state = u8::from_str_radix(f.next()?, 16).ok()?;
    // tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
    let inode = f.nth(5)?.parse().ok()?;
    Some(TcpEntry {
        local,
        remote,
        state,
        inode,
    })
}

/// `0100007F:1F90` (IPv4: one 32-bit word in host order) or 32 hex digits
/// (IPv6: four such words), then the port.
fn parse_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let w = u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16).ok()?;
        Some(w.to_ne_bytes())
    };
    let ip: IpAddr = match ip.len() {
        8 => Ipv4Addr::from(word(0)?).into(),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            let v6 = Ipv6Addr::from(b);
            match v6.to_ipv4_mapped() {
                Some(v4) => v4.into(),
                None => v6.into(),
            }
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The inode of the socket behind `/proc/PID/fd/FD`.
#[cfg(test)]
fn socket_inode(proc_root: &Path, pid: u32, fd: i32) -> Option<u64> {
    let link = fs::read_link(proc_root.join(pid.to_string()).join("fd").join(fd.to_string())).ok()?;
    link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

/// Socket descriptors (fd → inode) of a process.
pub fn socket_fds(proc_root: &Path, pid: u32) -> Vec<(i32, u64)> {
    let Ok(dir) = fs::read_dir(proc_root.join(pid.to_string()).join("fd")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let fd: i32 = e.file_name().to_str()?.parse().ok()?;
            let link = fs::read_link(e.path()).ok()?;
            let ino = link
                .to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()?;
            Some((fd, ino))
        })
        .collect()
}

/// Local and peer address of another process's socket, exactly: a copy of
/// the descriptor (pidfd_getfd, Linux 5.6+) asked with getsockname and
/// getpeername. Works across network namespaces. `None` when the process
/// or descriptor is gone, or it is not an internet socket.
pub fn socket_addrs(pid: u32, fd: i32) -> Option<(SocketAddr, SocketAddr)> {
    let copy = copy_fd(pid, fd)?;
    let raw = std::os::fd::AsRawFd::as_raw_fd(&copy);
    // SAFETY: a descriptor we own.
    unsafe {
        let local = sockname(raw, libc::getsockname)?;
        let peer = sockname(raw, libc::getpeername)?;
        Some((local, peer))
    }
}

/// The local address of another process's socket (a listening socket
/// gives the local address of the connections it accepts).
pub fn socket_addrs_local(pid: u32, fd: i32) -> Option<SocketAddr> {
    let copy = copy_fd(pid, fd)?;
    // SAFETY: a descriptor we own.
    unsafe { sockname(std::os::fd::AsRawFd::as_raw_fd(&copy), libc::getsockname) }
}

/// A copy of another process's descriptor (pidfd_getfd, Linux 5.6+).
fn copy_fd(pid: u32, fd: i32) -> Option<OwnedFd> {
    // SAFETY: plain syscalls; returned descriptors are owned and closed.
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0);
        if pidfd < 0 {
            return None;
        }
        let pidfd = OwnedFd::from_raw_fd(pidfd as i32);
        let copy = libc::syscall(libc::SYS_pidfd_getfd, std::os::fd::AsRawFd::as_raw_fd(&pidfd), fd, 0);
        if copy < 0 {
            return None;
        }
        Some(OwnedFd::from_raw_fd(copy as i32))
    }
}

type NameFn = unsafe extern "C" fn(libc::c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> libc::c_int;

unsafe fn sockname(fd: i32, f: NameFn) -> Option<SocketAddr> {
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    if unsafe { f(fd, (&raw mut storage).cast(), &mut len) } != 0 {
        return None;
    }
    match storage.ss_family as i32 {
        libc::AF_INET => {
            let a: &libc::sockaddr_in = unsafe { &*(&raw const storage).cast() };
            Some(SocketAddr::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)).into(),
                u16::from_be(a.sin_port),
            ))
        }
        libc::AF_INET6 => {
            let a: &libc::sockaddr_in6 = unsafe { &*(&raw const storage).cast() };
            let v6 = Ipv6Addr::from(a.sin6_addr.s6_addr);
            let ip: IpAddr = match v6.to_ipv4_mapped() {
                Some(v4) => v4.into(),
                None => v6.into(),
            };
            Some(SocketAddr::new(ip, u16::from_be(a.sin6_port)))
        }
        _ => None,
    }
}

/// Finds which process holds a socket inode, scanning /proc/*/fd. Costly
/// on a big host: callers cache and rate-limit.
pub fn inode_owner(proc_root: &Path, inode: u64) -> Option<u32> {
    let want = format!("socket:[{inode}]");
    let dir = fs::read_dir(proc_root).ok()?;
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == want.as_str()) {
                return Some(pid);
            }
        }
    }
    None
}

/// The process at the other end of a loopback connection seen from `pid`
/// as (local, peer): the socket whose local address is our peer and whose
/// peer is us.
#[cfg(test)]
fn loopback_peer(proc_root: &Path, pid: u32, local: SocketAddr, peer: SocketAddr) -> Option<u32> {
    if !peer.ip().is_loopback() {
        return None;
    }
    let table = tcp_table(proc_root, pid);
    let other = table.iter().find(|e| e.local == peer && e.remote == local)?;
    inode_owner(proc_root, other.inode)
}

/// Listening ports of every network namespace, by owning process:
/// `(pid, port)` for each listening socket of each process.
pub fn listeners(proc_root: &Path) -> Vec<(u32, u16)> {
    let mut tables: HashMap<u64, Vec<TcpEntry>> = HashMap::new();
    let mut out = Vec::new();
    let Ok(dir) = fs::read_dir(proc_root) else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let fds = socket_fds(proc_root, pid);
        if fds.is_empty() {
            continue;
        }
        let Some(ns) = netns(proc_root, pid) else { continue };
        let table = tables.entry(ns).or_insert_with(|| tcp_table(proc_root, pid));
        for (_, ino) in fds {
            if let Some(e) = table.iter().find(|e| e.inode == ino && e.state == LISTEN) {
                out.push((pid, e.local.port()));
            }
        }
    }
    out
}

/// The network namespace inode of a process.
pub fn netns(proc_root: &Path, pid: u32) -> Option<u64> {
    let link = fs::read_link(proc_root.join(pid.to_string()).join("ns/net")).ok()?;
    link.to_str()?.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ipv4_and_ipv6_lines() {
        let e = parse_tcp_line(
            "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0",
        )
        .unwrap();
        assert_eq!(e.local, "127.0.0.1:8080".parse().unwrap());
        assert_eq!((e.state, e.inode), (LISTEN, 12345));
        let e = parse_tcp_line(
            "   1: 00000000000000000000000001000000:0050 0000000000000000FFFF00000100007F:D431 01 00000000:00000000 00:00000000 00000000  1000        0 777 1",
        )
        .unwrap();
        assert_eq!(e.local, "[::1]:80".parse().unwrap());
        assert_eq!(
            e.remote,
            "127.0.0.1:54321".parse().unwrap(),
            "v4-mapped peers read as v4"
        );
        assert_eq!(e.state, ESTABLISHED);
        assert!(parse_tcp_line("garbage").is_none());
    }

    #[test]
    fn resolves_a_real_loopback_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client = std::net::TcpStream::connect(addr).unwrap();
        let (server, _) = listener.accept().unwrap();
        let me = std::process::id();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&server);
        let (local, peer) = socket_addrs(me, fd).expect("pidfd_getfd on our own socket");
        assert_eq!(local, addr);
        assert_eq!(peer, client.local_addr().unwrap());
        let ino = socket_inode(Path::new("/proc"), me, fd).unwrap();
        assert!(tcp_table(Path::new("/proc"), me).iter().any(|e| e.inode == ino));
        // The other end of the connection is this very process.
        assert_eq!(loopback_peer(Path::new("/proc"), me, local, peer), Some(me));
        assert!(listeners(Path::new("/proc")).contains(&(me, addr.port())));
    }
}

#[cfg(test)]
mod connect_tests {
    use super::*;

    #[test]
    fn local_address_of_a_connect_in_progress() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // SAFETY: plain socket calls on a descriptor we own.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0);
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: addr.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
                },
                sin_zero: [0; 8],
            };
            let rc = libc::connect(fd, (&raw const sin).cast(), std::mem::size_of_val(&sin) as u32);
            eprintln!("connect rc {rc} errno {}", std::io::Error::last_os_error());
            let local = socket_addrs_local(std::process::id(), fd);
            eprintln!("local {local:?} full {:?}", socket_addrs(std::process::id(), fd));
            assert!(local.is_some_and(|l| l.port() != 0));
            libc::close(fd);
        }
    }
}
