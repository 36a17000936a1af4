//! Pinned XDP links in bpffs (`--state-dir`): the steering program stays attached while
//! xvsd restarts, and the next xvsd swaps its own program in through the same link.
//!
//! Layout: `<pin root>/<ifname>/link` (default root `/sys/fs/bpf/xvs`). Only links are
//! pinned, never maps: every xvsd fills fresh maps of its own program, so an upgrade whose
//! maps differ needs no migration.

use super::XdpMode;
use anyhow::{bail, Context, Result};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `BPF_FS_MAGIC` from linux/magic.h.
const BPF_FS_MAGIC: i64 = 0xcafe4a11;

fn cpath(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).with_context(|| format!("{}: NUL in path", p.display()))
}

fn is_bpffs(p: &Path) -> bool {
    let Ok(c) = cpath(p) else { return false };
    // SAFETY: c is NUL-terminated; st is a properly sized statfs for the kernel to fill.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC
    }
}

/// Makes sure `root` exists on a bpf filesystem. Under `/sys/fs/bpf` (the default) bpffs is
/// mounted there when it is not yet (as `mount -t bpf bpf /sys/fs/bpf`); any other root must
/// already be on bpffs.
pub fn ensure_root(root: &Path) -> Result<()> {
    let sysfs_bpf = Path::new("/sys/fs/bpf");
    if root.starts_with(sysfs_bpf) && !is_bpffs(sysfs_bpf) {
        let c = cpath(sysfs_bpf)?;
        let fstype = CString::new("bpf").expect("static");
        // SAFETY: all pointers are NUL-terminated strings that outlive the call; no data.
        let r = unsafe {
            libc::mount(
                fstype.as_ptr(),
                c.as_ptr(),
                fstype.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if r != 0 {
            bail!(
                "mounting bpffs on /sys/fs/bpf for the pinned XDP links: {}",
                std::io::Error::last_os_error()
            );
        }
        tracing::info!("mounted bpffs on /sys/fs/bpf");
        if private_mount_ns() {
            tracing::warn!(
                "this process has a mount namespace of its own (ip netns exec?): the bpffs just \
                 mounted, and the pins in it, end with it, so the next xvsd will not find them; \
                 pass --bpf-pin-dir on a bpffs mounted in the host's namespace"
            );
        }
    }
    std::fs::create_dir_all(root)
        .with_context(|| format!("creating the BPF pin directory {}", root.display()))?;
    if !is_bpffs(root) {
        bail!(
            "{} is not on a bpf filesystem (mount -t bpf bpf DIR, or pass --bpf-pin-dir)",
            root.display()
        );
    }
    Ok(())
}

/// Whether this process's mount namespace differs from init's.
fn private_mount_ns() -> bool {
    match (
        std::fs::read_link("/proc/self/ns/mnt"),
        std::fs::read_link("/proc/1/ns/mnt"),
    ) {
        (Ok(a), Ok(b)) => a != b,
        _ => false,
    }
}

/// Removes the pinned links of interfaces not in `keep` (an earlier xvsd served another
/// set): unpinning releases the link, which detaches that program from its interface.
pub fn remove_stale(root: &Path, keep: &[&str]) -> Result<()> {
    let Ok(rd) = std::fs::read_dir(root) else {
        return Ok(());
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        // Only what xvsd pins (a directory with a link) is touched: the root may be shared.
        if keep.contains(&name.as_str()) || !e.path().join("link").exists() {
            continue;
        }
        tracing::warn!(
            pin = %e.path().display(),
            interface = %name,
            "removing the pinned XDP link of an interface this xvsd does not serve (its program detaches)"
        );
        remove(&e.path())?;
    }
    Ok(())
}

/// Removes a pin directory and what is in it.
pub fn remove(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing the BPF pin {}", dir.display())),
    }
}

/// Opens the pinned link at `path`; `None` when nothing is pinned there.
pub fn open(path: &Path) -> Result<Option<OwnedFd>> {
    if !path.exists() {
        return Ok(None);
    }
    let c = cpath(path)?;
    // SAFETY: c is NUL-terminated.
    let fd = unsafe { libbpf_sys::bpf_obj_get(c.as_ptr()) };
    if fd < 0 {
        return Err(std::io::Error::from_raw_os_error(-fd))
            .with_context(|| format!("opening the pinned XDP link {}", path.display()));
    }
    // SAFETY: the kernel just returned this fd; nothing else owns it.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }))
}

fn link_info(link: &OwnedFd) -> Result<libbpf_sys::bpf_link_info> {
    // SAFETY: bpf_link_info is plain data; zeroed is a valid value.
    let mut info: libbpf_sys::bpf_link_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libbpf_sys::bpf_link_info>() as u32;
    // SAFETY: info and len describe a buffer of len bytes that lives across the call.
    let r = unsafe { libbpf_sys::bpf_link_get_info_by_fd(link.as_raw_fd(), &mut info, &mut len) };
    if r < 0 {
        return Err(std::io::Error::from_raw_os_error(-r)).context("reading the link's info");
    }
    Ok(info)
}

/// The interface an XDP link is attached to: `Some(0)` once the interface is gone (the
/// kernel detached the link), `None` when it is not an XDP link at all.
pub fn xdp_ifindex(link: &OwnedFd) -> Result<Option<u32>> {
    let info = link_info(link)?;
    if info.type_ != libbpf_sys::BPF_LINK_TYPE_XDP {
        return Ok(None);
    }
    // SAFETY: the kernel filled the xdp member for an XDP link (checked above).
    Ok(Some(unsafe { info.__bindgen_anon_1.xdp.ifindex }))
}

/// The id of the program the link runs.
pub fn prog_id(link: &OwnedFd) -> Result<u32> {
    Ok(link_info(link)?.prog_id)
}

/// `BPF_LINK_UPDATE`: the link runs `prog_fd` from now on, atomically for every frame.
pub fn update(link: &OwnedFd, prog_fd: i32) -> Result<()> {
    let opts = libbpf_sys::bpf_link_update_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_link_update_opts>() as _,
        ..Default::default()
    };
    // SAFETY: both fds are live; opts is properly sized and outlives the call.
    let r = unsafe { libbpf_sys::bpf_link_update(link.as_raw_fd(), prog_fd, &opts) };
    if r < 0 {
        return Err(std::io::Error::from_raw_os_error(-r).into());
    }
    Ok(())
}

/// How XDP is attached to `ifindex` now (the mode a link keeps across updates).
pub fn mode(ifindex: u32) -> Result<XdpMode> {
    // SAFETY: plain data; zeroed is valid, sz set below.
    let mut q: libbpf_sys::bpf_xdp_query_opts = unsafe { std::mem::zeroed() };
    q.sz = std::mem::size_of::<libbpf_sys::bpf_xdp_query_opts>() as _;
    // SAFETY: q is properly sized and outlives the call.
    let r = unsafe { libbpf_sys::bpf_xdp_query(ifindex as i32, 0, &mut q) };
    if r < 0 {
        return Err(std::io::Error::from_raw_os_error(-r)).context("querying the XDP mode");
    }
    Ok(if q.attach_mode as u32 == libbpf_sys::XDP_ATTACHED_SKB {
        XdpMode::Generic
    } else {
        XdpMode::Native
    })
}

/// Pins `link` at `path` (creating `dir`).
pub fn pin(link: &OwnedFd, dir: &Path, path: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the BPF pin directory {}", dir.display()))?;
    let c = cpath(path)?;
    // SAFETY: the fd is live, c is NUL-terminated.
    let r = unsafe { libbpf_sys::bpf_obj_pin(link.as_raw_fd(), c.as_ptr()) };
    if r < 0 {
        return Err(std::io::Error::from_raw_os_error(-r))
            .with_context(|| format!("pinning the XDP link at {}", path.display()));
    }
    Ok(())
}
