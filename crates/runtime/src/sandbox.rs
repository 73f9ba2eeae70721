//! The `basic` sandbox of an instance: a Landlock ruleset (read and execute the system,
//! the interpreters and the function's own code; write only its own directory) and a
//! seccomp filter that refuses the syscalls a function has no business making (ptrace,
//! mount, kexec, bpf, keyctl, module loading, namespaces, clock setting, …) with EPERM.
//!
//! Both are prepared in gust before the fork: the ruleset is an fd and the filter a BPF
//! program in memory, so the child, between fork and exec, only makes two syscalls on
//! data that already exists (see `spawn.rs`). The ruleset fd can restrict any number of
//! processes, so a `stdio` instance builds it once for all its calls.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

// Landlock filesystem access rights (linux/landlock.h).
const EXECUTE: u64 = 1 << 0;
const WRITE_FILE: u64 = 1 << 1;
const READ_FILE: u64 = 1 << 2;
const READ_DIR: u64 = 1 << 3;
const REFER: u64 = 1 << 13;
const TRUNCATE: u64 = 1 << 14;
/// Every right of ABI 1 (execute … make symlink).
const ABI1_ALL: u64 = (1 << 13) - 1;
const FILE_RIGHTS: u64 = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE;
const READ_ONLY: u64 = EXECUTE | READ_FILE | READ_DIR;
const RULE_PATH_BENEATH: libc::c_long = 1;
const CREATE_RULESET_VERSION: libc::c_uint = 1;

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    /// ABI 6: signals and abstract Unix sockets confined to the domain.
    scoped: u64,
}

const BIND_TCP: u64 = 1 << 0;
const CONNECT_TCP: u64 = 1 << 1;
const RULE_NET_PORT: libc::c_long = 2;

#[repr(C)]
struct NetPort {
    allowed_access: u64,
    port: u64,
}

const SCOPE_ABSTRACT_UNIX_SOCKET: u64 = 1 << 0;
const SCOPE_SIGNAL: u64 = 1 << 1;
/// The size of the ABI-1 attribute (`handled_access_fs` only).
const ATTR_V1: usize = 8;

#[repr(C, packed)]
struct PathBeneath {
    allowed_access: u64,
    parent_fd: i32,
}

/// The Landlock ABI the kernel offers, if any.
pub fn landlock_abi() -> Option<u32> {
    // SAFETY: landlock_create_ruleset(NULL, 0, VERSION) only returns a number.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<RulesetAttr>(),
            0usize,
            CREATE_RULESET_VERSION,
        )
    };
    u32::try_from(v).ok().filter(|v| *v > 0)
}

/// A prepared sandbox.
pub struct Sandbox {
    ruleset: OwnedFd,
    handled: u64,
    filter: Vec<libc::sock_filter>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").field("ruleset", &self.ruleset).field("filter_len", &self.filter.len()).finish()
    }
}

/// What an instance may reach.
#[derive(Debug, Default)]
pub struct Paths<'a> {
    /// Readable and executable, with everything beneath.
    pub read: Vec<&'a Path>,
    /// Readable, writable, and where it may create and remove.
    pub write: Vec<&'a Path>,
    /// `Some` for `network = "none"`: no TCP bind, no TCP connect but to these ports.
    pub tcp_only_to: Option<Vec<u16>>,
}

impl Sandbox {
    /// Builds the ruleset for `paths` (missing ones are skipped) and the seccomp filter.
    ///
    /// # Errors
    /// When Landlock is unavailable or refuses a rule.
    pub fn new(paths: &Paths<'_>) -> std::io::Result<Self> {
        let abi = landlock_abi().ok_or_else(|| std::io::Error::other("Landlock is not available"))?;
        let mut handled = ABI1_ALL;
        if abi >= 2 {
            handled |= REFER;
        }
        if abi >= 3 {
            handled |= TRUNCATE;
        }
        // From ABI 6 a process in the sandbox cannot signal, nor connect to the abstract
        // Unix sockets of, processes outside it (other instances, gust).
        let net = match &paths.tcp_only_to {
            Some(_) if abi < 4 => {
                return Err(std::io::Error::other(format!(
                    "network = \"none\" needs Landlock ABI 4 (Linux 6.7); this kernel has {abi}"
                )));
            }
            Some(_) => BIND_TCP | CONNECT_TCP,
            None => 0,
        };
        let (scoped, size) = if abi >= 6 {
            (SCOPE_SIGNAL | SCOPE_ABSTRACT_UNIX_SOCKET, std::mem::size_of::<RulesetAttr>())
        } else if net != 0 {
            // ABI 4–5: the net field, no scope field.
            (0, 16)
        } else {
            (0, ATTR_V1)
        };
        let attr = RulesetAttr { handled_access_fs: handled, handled_access_net: net, scoped };
        // SAFETY: `attr` is a valid ruleset attribute of the size passed.
        let fd = unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, &attr as *const RulesetAttr, size, 0u32) };
        let fd = RawFd::try_from(fd).ok().filter(|fd| *fd >= 0).ok_or_else(std::io::Error::last_os_error)?;
        // SAFETY: a new fd the syscall just returned, owned by nothing else.
        let ruleset = unsafe { OwnedFd::from_raw_fd(fd) };
        for (path, rights) in
            paths.read.iter().map(|p| (*p, READ_ONLY)).chain(paths.write.iter().map(|p| (*p, handled)))
        {
            add_rule(&ruleset, path, rights & handled)?;
        }
        for port in paths.tcp_only_to.iter().flatten() {
            let rule = NetPort { allowed_access: CONNECT_TCP, port: u64::from(*port) };
            // SAFETY: `rule` is a valid net-port attribute.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_landlock_add_rule,
                    ruleset.as_raw_fd(),
                    RULE_NET_PORT,
                    &rule as *const NetPort,
                    0u32,
                )
            };
            if r != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(Self { ruleset, handled, filter: seccomp_filter() })
    }

    /// The ruleset's fd, for `landlock_restrict_self` in the child.
    pub(crate) fn ruleset_fd(&self) -> RawFd {
        self.ruleset.as_raw_fd()
    }

    /// The access rights the ruleset handles (what a rule may grant).
    pub(crate) fn handled(&self) -> u64 {
        self.handled
    }

    /// A copy of the filter, moved into the child's `pre_exec` closure.
    pub(crate) fn filter(&self) -> Vec<libc::sock_filter> {
        self.filter.clone()
    }
}

fn add_rule(ruleset: &OwnedFd, path: &Path, rights: u64) -> std::io::Result<()> {
    let Ok(meta) = std::fs::metadata(path) else { return Ok(()) };
    let file = std::fs::File::options().read(true).custom_flags(libc::O_PATH).open(path);
    let Ok(file) = file else { return Ok(()) };
    let allowed = if meta.is_dir() { rights } else { rights & FILE_RIGHTS };
    let rule = PathBeneath { allowed_access: allowed, parent_fd: file.as_raw_fd() };
    // SAFETY: `rule` is a valid path-beneath attribute whose fd stays open for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_add_rule,
            ruleset.as_raw_fd(),
            RULE_PATH_BENEATH,
            &rule as *const PathBeneath,
            0u32,
        )
    };
    if r != 0 {
        return Err(std::io::Error::other(format!(
            "Landlock refused a rule for {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

use std::os::unix::fs::OpenOptionsExt as _;

/// The seccomp filter as bytes in hex (8 an instruction, in the kernel's layout), for a
/// zygote child that installs it itself at level `isolated`; the same for every child,
/// so encoded once.
pub(crate) fn filter_hex() -> &'static str {
    static HEX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HEX.get_or_init(|| {
        let mut bytes = Vec::new();
        for ins in seccomp_filter() {
            bytes.extend(ins.code.to_ne_bytes());
            bytes.extend([ins.jt, ins.jf]);
            bytes.extend(ins.k.to_ne_bytes());
        }
        hex::encode(bytes)
    })
}

/// The syscalls the filter refuses with EPERM.
fn denied() -> Vec<libc::c_long> {
    let mut v = vec![
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_chroot,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_reboot,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_bpf,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_perf_event_open,
        libc::SYS_acct,
        libc::SYS_settimeofday,
        libc::SYS_clock_settime,
        libc::SYS_clock_adjtime,
        libc::SYS_adjtimex,
        libc::SYS_sethostname,
        libc::SYS_setdomainname,
        libc::SYS_unshare,
        libc::SYS_setns,
        libc::SYS_open_by_handle_at,
        libc::SYS_name_to_handle_at,
        libc::SYS_userfaultfd,
        libc::SYS_quotactl,
        libc::SYS_syslog,
        libc::SYS_fsopen,
        libc::SYS_fsmount,
        libc::SYS_fsconfig,
        libc::SYS_move_mount,
        libc::SYS_open_tree,
        libc::SYS_fspick,
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([libc::SYS_iopl, libc::SYS_ioperm, libc::SYS_lookup_dcookie]);
    v
}

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

/// The BPF program: other architectures' syscalls kill the process (they would dodge the
/// numbers below), the denied syscalls (and, on x86_64, the x32 ABI) fail with EPERM,
/// everything else is allowed.
fn seccomp_filter() -> Vec<libc::sock_filter> {
    let stmt = |code: u32, k: u32| libc::sock_filter { code: code as u16, jt: 0, jf: 0, k };
    let jump = |code: u32, k: u32, jt: u8| libc::sock_filter { code: code as u16, jt, jf: 0, k };
    // seccomp_data: nr at offset 0, arch at offset 4.
    let mut prog = vec![
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 4),
        jump(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, AUDIT_ARCH, 1),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_KILL_PROCESS),
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0),
    ];
    let mut checks: Vec<(u32, u32)> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    checks.push((libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K, 0x4000_0000));
    checks.extend(
        denied()
            .into_iter()
            .filter_map(|nr| u32::try_from(nr).ok())
            .map(|nr| (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, nr)),
    );
    let n = checks.len();
    for (i, (code, k)) in checks.into_iter().enumerate() {
        // Past the remaining checks and the ALLOW, to the ERRNO.
        let jt = u8::try_from(n - i).unwrap_or(u8::MAX);
        prog.push(jump(code, k, jt));
    }
    prog.push(stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW));
    prog.push(stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32));
    prog
}

/// In the child between fork and exec, before [`apply`]: adds to the ruleset `fd` a rule
/// per path (read-only, or every right `handled` when `true`), for file systems mounted
/// after the fork. Every instance's process has a ruleset of its own, so this changes
/// no other instance's.
///
/// # Safety
/// Must run in a freshly forked child; it opens and closes descriptors and reads only
/// the C strings given.
pub(crate) unsafe fn add_rules_here(fd: RawFd, handled: u64, paths: &[(&std::ffi::CStr, bool)]) -> std::io::Result<()> {
    for (path, writable) in paths {
        let rights = if *writable { handled } else { READ_ONLY & handled };
        // SAFETY (caller): open, landlock_add_rule and close on a C string and an
        // attribute on the stack.
        unsafe {
            let dir = libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
            if dir < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let rule = PathBeneath { allowed_access: rights, parent_fd: dir };
            let r =
                libc::syscall(libc::SYS_landlock_add_rule, fd, RULE_PATH_BENEATH, &rule as *const PathBeneath, 0u32);
            libc::close(dir);
            if r != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// In the child between fork and exec, after `no_new_privs`: restricts the process with
/// the ruleset `fd`, then installs `filter`. Only syscalls, on memory the closure owns.
///
/// # Safety
/// Must run in a freshly forked child (it changes the calling process for good).
pub(crate) unsafe fn apply(fd: RawFd, filter: &[libc::sock_filter]) -> std::io::Result<()> {
    // SAFETY (caller): a forked child; the syscalls read only `fd` and `filter`.
    unsafe {
        if libc::syscall(libc::SYS_landlock_restrict_self, fd, 0u32) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let prog = libc::sock_fprog {
            len: u16::try_from(filter.len()).unwrap_or(u16::MAX),
            filter: filter.as_ptr().cast_mut(),
        };
        if libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog as *const libc::sock_fprog) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_jumps_land_on_the_errno_return() {
        let prog = seccomp_filter();
        let errno = prog.len() - 1;
        for (i, ins) in prog.iter().enumerate().skip(4).take(prog.len() - 6) {
            assert_eq!(i + 1 + usize::from(ins.jt), errno, "instruction {i}");
        }
        assert_eq!(prog[errno].k, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32);
        assert_eq!(prog[errno - 1].k, libc::SECCOMP_RET_ALLOW);
    }
}
