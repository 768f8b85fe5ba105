//! Where a process runs, from its cgroup path (`/proc/PID/cgroup`): the
//! container and its runtime, the Kubernetes pod, the systemd unit. No
//! runtime or API credentials needed: runtimes and the kubelet name the
//! cgroups they create after what runs in them.
//!
//! - docker: `/docker/<id>` or `docker-<id>.scope`
//! - containerd (incl. Kubernetes): `cri-containerd-<id>.scope`,
//!   `/kubepods/.../<id>`, `/containerd/<id>`
//! - cri-o: `crio-<id>.scope`, `crio-conmon-<id>.scope`
//! - podman: `libpod-<id>.scope`, `libpod-conmon-<id>.scope`
//! - pods: `kubepods-<qos>-pod<uid>.slice` (systemd driver, `_` for `-`) or
//!   `/kubepods/<qos>/pod<uid>/` (cgroupfs driver); the namespace and name
//!   come from the kubelet's log directory `/var/log/pods/<ns>_<name>_<uid>`
//!   when the node has it;
//! - systemd: the last `*.service` component.

use std::{fs, path::Path};

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Placement {
    /// The process's cgroup (the v2 path when there is one).
    pub cgroup: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<Pod>,
    #[serde(rename = "systemd_unit", skip_serializing_if = "Option::is_none")]
    pub systemd_unit: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Container {
    pub id: String,
    /// `docker`, `containerd`, `cri-o`, `podman`.
    pub runtime: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pod {
    pub uid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Reads a process's placement; `None` when its cgroup cannot be read.
pub fn read(proc_root: &Path, pid: u32, pods_log_dir: &Path) -> Option<Placement> {
    let text = fs::read_to_string(proc_root.join(pid.to_string()).join("cgroup")).ok()?;
    let mut placement = from_cgroup_file(&text);
    if let Some(pod) = &mut placement.pod
        && let Some((ns, name)) = pod_names(pods_log_dir, &pod.uid)
    {
        pod.namespace = Some(ns);
        pod.name = Some(name);
    }
    Some(placement)
}

/// Placement from the text of `/proc/PID/cgroup` (`id:controllers:path`
/// lines; `0::path` is cgroup v2).
pub fn from_cgroup_file(text: &str) -> Placement {
    let paths: Vec<&str> = text
        .lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .filter(|p| !p.is_empty())
        .collect();
    let v2 = text.lines().find_map(|l| l.strip_prefix("0::"));
    let mut placement = Placement {
        cgroup: v2
            .filter(|p| *p != "/")
            .or_else(|| paths.iter().copied().find(|p| *p != "/"))
            .unwrap_or("/")
            .to_string(),
        ..Placement::default()
    };
    // The most specific facts win: look at every hierarchy.
    for path in &paths {
        if placement.container.is_none() {
            placement.container = container_of(path);
        }
        if placement.pod.is_none() {
            placement.pod = pod_of(path);
        }
        if placement.systemd_unit.is_none() {
            placement.systemd_unit = path.rsplit('/').find(|c| c.ends_with(".service")).map(str::to_string);
        }
    }
    placement
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn container_of(path: &str) -> Option<Container> {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    for (i, c) in components.iter().enumerate().rev() {
        let scope = c.strip_suffix(".scope").unwrap_or(c);
        for (prefix, runtime) in [
            ("docker-", "docker"),
            ("cri-containerd-", "containerd"),
            ("crio-conmon-", "cri-o"),
            ("crio-", "cri-o"),
            ("libpod-conmon-", "podman"),
            ("libpod-", "podman"),
        ] {
            if let Some(id) = scope.strip_prefix(prefix)
                && is_container_id(id)
            {
                return Some(Container {
                    id: id.to_string(),
                    runtime,
                });
            }
        }
        if is_container_id(c) {
            // cgroupfs drivers: the runtime is the parent directory.
            let runtime = match components[..i].iter().rev().find(|p| !p.starts_with("pod")) {
                Some(&"docker") => "docker",
                Some(p) if p.starts_with("kubepods") || p.contains("burstable") || p.contains("besteffort") => {
                    "containerd"
                }
                Some(&"containerd") => "containerd",
                Some(&"crio") => "cri-o",
                Some(&"libpod_parent") => "podman",
                _ => "containerd",
            };
            return Some(Container {
                id: c.to_string(),
                runtime,
            });
        }
    }
    None
}

fn pod_of(path: &str) -> Option<Pod> {
    for c in path.split('/') {
        // systemd driver: kubepods-burstable-pod1234_abcd.slice
        if let Some(rest) = c.strip_suffix(".slice")
            && let Some(i) = rest.rfind("-pod")
        {
            let uid = rest[i + 4..].replace('_', "-");
            if uid.len() >= 32 {
                return Some(Pod {
                    uid,
                    namespace: None,
                    name: None,
                });
            }
        }
        // cgroupfs driver: /kubepods/burstable/pod1234-abcd/
        if let Some(uid) = c.strip_prefix("pod")
            && uid.len() >= 32
            && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
        {
            return Some(Pod {
                uid: uid.to_string(),
                namespace: None,
                name: None,
            });
        }
    }
    None
}

/// `(namespace, name)` of a pod from the kubelet's log directories.
fn pod_names(pods_log_dir: &Path, uid: &str) -> Option<(String, String)> {
    for entry in fs::read_dir(pods_log_dir).ok()?.flatten() {
        let name = entry.file_name();
        let name = name.to_str()?;
        if let Some(rest) = name.strip_suffix(uid).and_then(|r| r.strip_suffix('_')) {
            let (ns, pod) = rest.split_once('_')?;
            return Some((ns.to_string(), pod.to_string()));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn runtimes_from_systemd_scopes() {
        for (scope, runtime) in [
            (format!("docker-{ID}.scope"), "docker"),
            (format!("cri-containerd-{ID}.scope"), "containerd"),
            (format!("crio-{ID}.scope"), "cri-o"),
            (format!("libpod-{ID}.scope"), "podman"),
        ] {
            let p = from_cgroup_file(&format!("0::/system.slice/{scope}\n"));
            assert_eq!(p.container, Some(Container { id: ID.into(), runtime }), "{scope}");
        }
    }

    #[test]
    fn cgroupfs_drivers_and_pods() {
        let p = from_cgroup_file(&format!("12:memory:/docker/{ID}\n0::/\n"));
        assert_eq!(p.container.unwrap().runtime, "docker");
        let uid = "8b7a5c1e-1f2a-4d3b-9c8d-7e6f5a4b3c2d";
        let p = from_cgroup_file(&format!("0::/kubepods/burstable/pod{uid}/{ID}\n"));
        assert_eq!(p.container.unwrap().runtime, "containerd");
        assert_eq!(p.pod.unwrap().uid, uid);
        let p = from_cgroup_file(&format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{ID}.scope\n",
            uid.replace('-', "_")
        ));
        assert_eq!(p.pod.unwrap().uid, uid);
        assert_eq!(p.container.unwrap().runtime, "containerd");
    }

    #[test]
    fn systemd_units_and_plain_processes() {
        let p = from_cgroup_file("0::/system.slice/mcp-github.service\n");
        assert_eq!(p.systemd_unit.as_deref(), Some("mcp-github.service"));
        assert!(p.container.is_none());
        let p = from_cgroup_file("0::/user.slice/user-1000.slice/user@1000.service/app.slice/code.scope\n");
        assert_eq!(p.systemd_unit.as_deref(), Some("user@1000.service"));
        let p = from_cgroup_file("0::/\n");
        assert_eq!((p.cgroup.as_str(), p.container, p.pod), ("/", None, None));
    }

    #[test]
    fn pod_names_from_kubelet_logs() {
        let dir = std::env::temp_dir().join(format!("mcptap-pods-{}", std::process::id()));
        let uid = "8b7a5c1e-1f2a-4d3b-9c8d-7e6f5a4b3c2d";
        fs::create_dir_all(dir.join(format!("agents_mcp-github-7d9f_{uid}"))).unwrap();
        assert_eq!(pod_names(&dir, uid), Some(("agents".into(), "mcp-github-7d9f".into())));
        let _ = fs::remove_dir_all(&dir);
    }
}
