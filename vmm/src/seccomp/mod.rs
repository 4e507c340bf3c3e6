//! Seccomp-BPF filters, one per kind of thread, in the manner of Firecracker.
//!
//! The VMM has two kinds of threads once the guest runs:
//!
//! * [`ThreadKind::Vmm`], the main thread: the epoll event loop (virtio
//!   queue processing through the ioeventfds, console input from stdin, the
//!   control socket, pausing by kicking the vCPUs) and the process's exit;
//! * [`ThreadKind::Vcpu`], one per vCPU: the `KVM_RUN` loop and whatever a
//!   port or MMIO exit runs (serial output to stdout, the console log and
//!   attached clients; i8042, ACPI PM, pvpanic and boot-timer writes; virtio
//!   register accesses, including a QueueNotify write that processes a queue).
//!
//! Each filter is an allow-list: any other system call, or an allowed one
//! whose arguments fall outside its rules, makes the kernel kill the whole
//! process at once (`SECCOMP_RET_KILL_PROCESS`, seen by the parent as death
//! by `SIGSYS`). A compromised thread therefore takes down its own VMM and
//! nothing else; it never gets to use a system call the VMM does not need.
//! The filter also refuses any other architecture (e.g. the 32-bit
//! `int 0x80` ABI) and x32 system calls: their numbers match no rule.
//!
//! # How the filters are applied
//!
//! [`apply`] installs a filter on the calling thread only (no
//! `SECCOMP_FILTER_FLAG_TSYNC`). The kernel attaches a filter to one task;
//! threads created afterwards inherit it, threads that already exist do
//! not. The VMM relies on exactly that:
//!
//! 1. `Vm::new` does all setup unfiltered (opening `/dev/kvm`, disks and
//!    logs, creating the VM, memory, eventfds, irqfds and ioeventfds), and
//!    `main` binds the control socket before it.
//! 2. `Vm::run` installs the kick handler and spawns the vCPU threads; each
//!    calls `apply(ThreadKind::Vcpu)` as its first action, before `KVM_RUN`.
//! 3. Then the main thread calls `apply(ThreadKind::Vmm)` and enters the
//!    event loop. As the vCPU threads were spawned before, they carry only
//!    the vCPU filter, not both.
//!
//! Neither filter allows `clone`/`clone3`, `execve`, `fork` or `ptrace`:
//! every thread the VMM needs must be spawned before the filters are
//! applied (threads spawned after would inherit the filter and die at
//! `clone3` anyway), and no thread can start a program. Neither allows
//! opening files for reading, `socket` other than `AF_UNIX` stream sockets,
//! nor any KVM ioctl that creates or reconfigures the VM.
//!
//! A filter cannot be removed, so code that runs the VM in-process and goes
//! on afterwards (tests reading the console log, say) must not confine its
//! own thread: run the event loop on a thread of its own there, or in a
//! child process.
//!
//! # Why each system call is allowed
//!
//! The lists come from `strace -f` of the VMM running with both filters
//! (a Linux guest up to its internal-error exit; flat guests that drive
//! virtio-blk through ioeventfds and power off; a guest printing 1600
//! console bytes into a 1 KiB-capped log, then served info, stats, pause,
//! resume, shutdown, console attach and input, and kill on the control
//! socket), from the integration tests in `tests/seccomp.rs`, and from
//! reading the device code. Notes on the less obvious ones:
//!
//! * `fcntl(F_GETFD)`: debug builds of std check that a descriptor is open
//!   before closing it (`OwnedFd::drop`), on every thread. No other
//!   `fcntl`: nothing duplicates descriptors at run time (an attached
//!   console client shares its connection's stream).
//! * `sendto` with no address: std writes to a `UnixStream` with
//!   `send(MSG_NOSIGNAL)`, for control-socket replies, vsock streams, and
//!   console frames to attached clients, which the vCPU writing the UART
//!   sends. Reads are `recvfrom` (Vmm only). Control connections are
//!   non-blocking, so no socket timeouts: no `setsockopt` without
//!   user-mode networking.
//! * `openat` (vCPU; only with `O_WRONLY|O_CREAT|O_APPEND|O_CLOEXEC|O_NOFOLLOW`, the
//!   flags of `console::log::open_append`, which refuses links) and `rename`:
//!   the console log is rotated by the thread that writes the UART. No
//!   thread can open a file for reading.
//! * `ftruncate` and `fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)`
//!   on both kinds: a qcow2 disk's writes allocate clusters, and imago's
//!   file driver zeroes the part of a new cluster the guest did not write
//!   by growing the file or punching a hole in it (`write_zeroes`). Both
//!   reach only descriptors opened during setup; a disk is writable
//!   anyway. No other `fallocate` mode (imago's `FALLOC_FL_ZERO_RANGE` is
//!   preallocation, never done at run time). imago runs fully
//!   synchronously (its `sync` feature): no runtime, no threads, no
//!   io_uring, so nothing else is needed.
//! * `ioctl(KVM_SET_GSI_ROUTING)` and `ioctl(KVM_IOEVENTFD)` (vCPU): MSI-X
//!   table writes route a vector, and a moved PCI BAR takes its queue
//!   notify ioeventfds along; both are guest register writes. They reach
//!   only this guest's own interrupts and notifications.
//! * `ioctl(TUNSETOFFLOAD)` and `epoll_ctl(EPOLL_CTL_DEL)` (vCPU): device
//!   activation and reset are register writes, so they run on a vCPU
//!   thread: virtio-net sets the tap's offloads, virtio-vsock drops its
//!   host sockets from the event loop's epoll set (through its
//!   `DeviceEvents`). Adding and changing registrations (`EPOLL_CTL_ADD`,
//!   `EPOLL_CTL_MOD`) only happens while vsock serves a queue, which is
//!   main-thread work (below), so vCPUs may not. The main thread's only ioctl is
//!   `FIONBIO` (std's `set_nonblocking` on sockets): interrupts go through
//!   irqfds.
//! * `mmap`/`mprotect` are allowed for the allocator, but never with
//!   `PROT_EXEC`: no thread can map new code.
//! * `futex` is allowed for the wait/wake operations std and glibc use, not
//!   for the priority-inheritance or plain requeue ones.
//! * `tgkill` only with the vCPU kick signal (`SIGRTMIN`, used by pause) or
//!   `SIGABRT` (`abort()`); glibc's `pthread_kill` adds `getpid` and
//!   `rt_sigprocmask`. `rt_sigreturn` ends the kick handler.
//! * `restart_syscall`: the kernel restarts an interrupted sleep or timed
//!   wait this way after `SIGSTOP`/`SIGCONT` or a debugger attach.
//! * `sigaltstack`, `madvise`, `munmap`, `exit`: a thread ending (std tears
//!   down its alternate signal stack, glibc frees the stack).
//! * `pread64`/`pwrite64`/`preadv`/`pwritev`/`fdatasync`/`fsync`/`lseek`/
//!   `getrandom` on both kinds (qcow2 disks use the same calls): queues are processed on the event loop when
//!   an ioeventfd fires, but a QueueNotify register write that no ioeventfd
//!   catches is handled on the vCPU thread that made it. That covers
//!   virtio-blk, -rng and -net (tap `read`/`write`); virtio-vsock's host side
//!   (`accept4`, `socket`, `connect`, `epoll_ctl` add and modify) is allowed
//!   on the main thread only, so every vsock queue needs its ioeventfd.
//! * `unlink` (Vmm): the control socket and the vsock listener remove their
//!   paths when dropped at the end. `socket(AF_UNIX, SOCK_STREAM)` and
//!   `connect` (Vmm): virtio-vsock connecting to host services.
//! * No `epoll_create1`: the event loop's epoll set is created with the VM,
//!   so that devices register their descriptors in it before anything runs.
//!
//! A panic on a confined thread is fine as long as `RUST_BACKTRACE` is
//! unset: printing a backtrace reads the binary's debug information, which
//! no filter allows, so with it set a panic ends in `SIGSYS` instead.
//!
//! If new code needs another system call at run time, the VMM dies with
//! `SIGSYS` the first time it makes it; `strace -f` of the VMM shows the
//! call, and the kernel log (`dmesg`, audit) shows the syscall number.

use std::collections::BTreeMap;

use seccompiler::{
    BackendError, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};

/// Which filter a thread gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ThreadKind {
    /// The main thread: event loop, device queue processing, control
    /// socket, pausing the vCPUs, and the process's exit.
    Vmm,
    /// A vCPU thread: `KVM_RUN` and the port/MMIO exits it handles.
    Vcpu,
}

/// Why a filter could not be built or installed.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("cannot build the {kind:?} seccomp filter: {source}")]
    Build {
        kind: ThreadKind,
        #[source]
        source: BackendError,
    },
    #[error("cannot install the {kind:?} seccomp filter: {source}")]
    Apply {
        kind: ThreadKind,
        #[source]
        source: seccompiler::Error,
    },
}

/// Ioctl request numbers, computed like the kernel headers do.
mod ioctls {
    use kvm_bindings::{kvm_ioeventfd, kvm_irq_routing, kvm_regs, kvm_translation};
    use vmm_sys_util::{ioctl_io_nr, ioctl_ior_nr, ioctl_iow_nr, ioctl_iowr_nr};

    const KVMIO: u32 = 0xAE;
    const TUNTAP: u32 = b'T' as u32;

    ioctl_io_nr!(KVM_RUN, KVMIO, 0x80);
    ioctl_ior_nr!(KVM_GET_REGS, KVMIO, 0x81, kvm_regs);
    ioctl_iowr_nr!(KVM_TRANSLATE, KVMIO, 0x85, kvm_translation);
    ioctl_iow_nr!(KVM_SET_GSI_ROUTING, KVMIO, 0x6a, kvm_irq_routing);
    ioctl_iow_nr!(KVM_IOEVENTFD, KVMIO, 0x79, kvm_ioeventfd);
    ioctl_iow_nr!(TUNSETOFFLOAD, TUNTAP, 208, ::std::os::raw::c_uint);
}

/// The flags the console log's append-only, link-refusing (re)open passes
/// to `openat` (`console::log::open_append`).
const APPEND_CREATE_FLAGS: u64 =
    (libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND | libc::O_CLOEXEC | libc::O_NOFOLLOW) as u64;

/// Bits of socket(2)'s type argument that hold the type, not the flags.
const SOCK_TYPE_MASK: u64 = 0xf;

/// The futex operations std and glibc use (`FUTEX_PRIVATE_FLAG` and
/// `FUTEX_CLOCK_REALTIME` may be added); the PI and plain requeue ones are
/// refused.
const FUTEX_OPS: [i32; 6] = [
    libc::FUTEX_WAIT,
    libc::FUTEX_WAKE,
    libc::FUTEX_WAIT_BITSET,
    libc::FUTEX_WAKE_BITSET,
    libc::FUTEX_CMP_REQUEUE,
    libc::FUTEX_WAKE_OP,
];
/// Bits of the futex op word that select the command.
const FUTEX_CMD_MASK: u64 =
    !((libc::FUTEX_PRIVATE_FLAG | libc::FUTEX_CLOCK_REALTIME) as u32) as u64;

type Rules = Vec<(i64, Vec<SeccompRule>)>;

/// `arg == value`, comparing the low 32 bits: every argument constrained
/// here is an `int` or `unsigned int` in the kernel (ioctl's request too),
/// so the upper half is ignored by the kernel as well.
fn eq(arg: u8, value: u64) -> Result<SeccompCondition, BackendError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)
}

/// `arg == value`, comparing all 64 bits (pointers).
fn eq64(arg: u8, value: u64) -> Result<SeccompCondition, BackendError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Qword, SeccompCmpOp::Eq, value)
}

/// `arg & mask == value` on the low 32 bits.
fn masked(arg: u8, mask: u64, value: u64) -> Result<SeccompCondition, BackendError> {
    SeccompCondition::new(
        arg,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::MaskedEq(mask),
        value,
    )
}

/// One rule per value: `arg` must be one of `values`.
fn one_of(arg: u8, values: &[u64]) -> Result<Vec<SeccompRule>, BackendError> {
    values
        .iter()
        .map(|&v| SeccompRule::new(vec![eq(arg, v)?]))
        .collect()
}

/// Allowed whatever the arguments.
fn any(nr: i64) -> (i64, Vec<SeccompRule>) {
    (nr, Vec::new())
}

/// What both kinds of thread need at run time.
fn common_rules() -> Result<Rules, BackendError> {
    let no_exec = || -> Result<Vec<SeccompRule>, BackendError> {
        Ok(vec![SeccompRule::new(vec![masked(
            2,
            libc::PROT_EXEC as u64,
            0,
        )?])?])
    };
    let futex = FUTEX_OPS
        .iter()
        .map(|&op| SeccompRule::new(vec![masked(1, FUTEX_CMD_MASK, op as u64)?]))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(vec![
        // Memory: the allocator, thread stacks; never executable.
        any(libc::SYS_brk),
        (libc::SYS_mmap, no_exec()?),
        (libc::SYS_mprotect, no_exec()?),
        any(libc::SYS_munmap),
        any(libc::SYS_mremap),
        any(libc::SYS_madvise),
        // Locks, condition variables, channels.
        (libc::SYS_futex, futex),
        any(libc::SYS_sched_yield),
        // Signals: the kick handler returning, glibc's masking around
        // pthread_kill and thread exit, std's alternate stack teardown.
        any(libc::SYS_rt_sigreturn),
        any(libc::SYS_rt_sigprocmask),
        any(libc::SYS_sigaltstack),
        (
            libc::SYS_tgkill,
            one_of(2, &[libc::SIGRTMIN() as u64, libc::SIGABRT as u64])?,
        ),
        any(libc::SYS_getpid),
        any(libc::SYS_gettid),
        // Time: Instant::now when the vDSO falls back, sleeps, restarts.
        any(libc::SYS_clock_gettime),
        any(libc::SYS_clock_nanosleep),
        any(libc::SYS_nanosleep),
        any(libc::SYS_restart_syscall),
        // Ending a thread or the process.
        any(libc::SYS_exit),
        any(libc::SYS_exit_group),
        // I/O on descriptors opened during setup: eventfds (irqfds, the exit
        // signal), stdout/stderr, the console log and clients, disks.
        any(libc::SYS_read),
        any(libc::SYS_write),
        any(libc::SYS_writev),
        any(libc::SYS_close),
        any(libc::SYS_lseek),
        any(libc::SYS_pread64),
        any(libc::SYS_pwrite64),
        any(libc::SYS_preadv),
        any(libc::SYS_pwritev),
        any(libc::SYS_fsync),
        any(libc::SYS_fdatasync),
        // A qcow2 write that allocates a cluster zeroes the rest of it
        // (imago's file driver): growing the file, or punching a hole
        // inside it. No other fallocate mode.
        any(libc::SYS_ftruncate),
        (
            libc::SYS_fallocate,
            one_of(
                1,
                &[(libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE) as u64],
            )?,
        ),
        any(libc::SYS_getrandom),
        // std writes to a UnixStream with send(MSG_NOSIGNAL): console
        // frames to attached clients (from the vCPU writing the UART) and
        // control-socket replies. Connected sockets only: no address.
        (libc::SYS_sendto, vec![SeccompRule::new(vec![eq64(4, 0)?])?]),
    ])
}

/// The vCPU threads' extra rules.
fn vcpu_rules() -> Result<Rules, BackendError> {
    Ok(vec![
        (
            libc::SYS_ioctl,
            one_of(
                1,
                &[
                    // The run loop; KVM_GET_REGS and KVM_TRANSLATE describe
                    // an internal error (vcpu.rs). Nothing that changes the
                    // VM's configuration.
                    ioctls::KVM_RUN(),
                    ioctls::KVM_GET_REGS(),
                    ioctls::KVM_TRANSLATE(),
                    // virtio-net sets the tap's offloads when the driver
                    // activates or resets the device: a register write.
                    ioctls::TUNSETOFFLOAD(),
                    // virtio-pci: a driver programming an MSI-X table entry
                    // (or masking one) changes that vector's route, and a
                    // driver moving a BAR moves its queues' ioeventfds.
                    ioctls::KVM_SET_GSI_ROUTING(),
                    ioctls::KVM_IOEVENTFD(),
                ],
            )?,
        ),
        // Debug builds of std check a descriptor is open before closing it.
        (libc::SYS_fcntl, one_of(1, &[libc::F_GETFD as u64])?),
        // A virtio-vsock reset (a register write) takes its host sockets
        // out of the event loop's epoll set before closing them.
        (
            libc::SYS_epoll_ctl,
            one_of(1, &[libc::EPOLL_CTL_DEL as u64])?,
        ),
        // Console log rotation (an append-only reopen), by the thread that
        // writes the UART.
        (
            libc::SYS_openat,
            vec![SeccompRule::new(vec![eq(2, APPEND_CREATE_FLAGS)?])?],
        ),
        any(libc::SYS_rename),
    ])
}

/// The main thread's extra rules.
fn vmm_rules() -> Result<Rules, BackendError> {
    Ok(vec![
        // The event loop (its epoll set exists before the filter), and the
        // devices adding, changing and removing their host descriptors in
        // it while they serve a queue kicked through an ioeventfd.
        any(libc::SYS_epoll_ctl),
        any(libc::SYS_epoll_wait),
        any(libc::SYS_epoll_pwait),
        any(libc::SYS_readv),
        // The control socket and virtio-vsock's host side: accepting
        // clients, data in (recv) and out (send, in the common rules),
        // half-closing vsock streams, removing the socket paths at the end.
        any(libc::SYS_accept4),
        any(libc::SYS_recvfrom),
        any(libc::SYS_shutdown),
        any(libc::SYS_unlink),
        // virtio-vsock connecting to host services' Unix sockets: stream
        // sockets of that family only.
        (
            libc::SYS_socket,
            vec![SeccompRule::new(vec![
                eq(0, libc::AF_UNIX as u64)?,
                masked(1, SOCK_TYPE_MASK, libc::SOCK_STREAM as u64)?,
            ])?],
        ),
        any(libc::SYS_connect),
        // Debug builds of std check a descriptor is open before closing it.
        (libc::SYS_fcntl, one_of(1, &[libc::F_GETFD as u64])?),
        // std's set_nonblocking on sockets. No KVM or tap ioctl: interrupts
        // go through irqfds, and virtio-net changes the tap's offloads on
        // the vCPU thread that activates or resets the device.
        (libc::SYS_ioctl, one_of(1, &[libc::FIONBIO])?),
    ])
}

/// What the event loop needs on top when a NIC uses user-mode networking:
/// the NAT opens, binds and polls IPv4/IPv6 sockets to outside hosts and
/// answers UDP peers by address.
fn user_net_rules() -> Result<Rules, BackendError> {
    let mut socket = Vec::new();
    for family in [libc::AF_INET, libc::AF_INET6] {
        for kind in [libc::SOCK_STREAM, libc::SOCK_DGRAM] {
            socket.push(SeccompRule::new(vec![
                eq(0, family as u64)?,
                masked(1, SOCK_TYPE_MASK, kind as u64)?,
            ])?);
        }
    }
    Ok(vec![
        (libc::SYS_socket, socket),
        any(libc::SYS_sendto),
        any(libc::SYS_bind),
        any(libc::SYS_getsockopt),
        any(libc::SYS_setsockopt),
        any(libc::SYS_getpeername),
        any(libc::SYS_getsockname),
        any(libc::SYS_timerfd_settime),
    ])
}

/// Adds `rules` for `nr`; an unconditional entry stays unconditional.
fn merge(map: &mut BTreeMap<i64, Vec<SeccompRule>>, nr: i64, rules: Vec<SeccompRule>) {
    match map.get_mut(&nr) {
        Some(existing) if existing.is_empty() => {}
        Some(existing) if !rules.is_empty() => existing.extend(rules),
        _ => {
            map.insert(nr, rules);
        }
    }
}

fn rule_map(
    kind: ThreadKind,
    policy: Policy,
) -> Result<BTreeMap<i64, Vec<SeccompRule>>, BackendError> {
    let extra = match kind {
        ThreadKind::Vmm => vmm_rules()?,
        ThreadKind::Vcpu => vcpu_rules()?,
    };
    let mut map: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for (nr, rules) in common_rules()?.into_iter().chain(extra) {
        // A syscall listed twice would otherwise lose its first rules;
        // an unconditional entry must stay unconditional.
        debug_assert!(!map.contains_key(&nr), "syscall {nr} listed twice");
        map.insert(nr, rules);
    }
    if policy.user_net && kind == ThreadKind::Vmm {
        for (nr, rules) in user_net_rules()? {
            merge(&mut map, nr, rules);
        }
    }
    Ok(map)
}

/// Features that widen a filter because the VM's configuration uses them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    /// A NIC uses user-mode networking (outbound IP sockets).
    pub user_net: bool,
}

/// The compiled filter for `kind` (x86_64), widened by `policy`:
/// allow-listed system calls are allowed, everything else kills the
/// process.
pub fn filter_with(kind: ThreadKind, policy: Policy) -> Result<BpfProgram, SeccompError> {
    let build = |source| SeccompError::Build { kind, source };
    let rules = rule_map(kind, policy).map_err(build)?;
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(build)?;
    BpfProgram::try_from(filter).map_err(build)
}

/// Installs the filter for `kind` on the calling thread, and on threads it
/// creates later (which the filters forbid anyway). Other threads are not
/// affected. Sets `no_new_privs` on the calling thread, which the kernel
/// requires for an unprivileged filter. Cannot be undone.
pub fn apply(kind: ThreadKind) -> Result<(), SeccompError> {
    apply_with(kind, Policy::default())
}

/// As [`apply`], with the filter widened by `policy`.
pub fn apply_with(kind: ThreadKind, policy: Policy) -> Result<(), SeccompError> {
    let program = filter_with(kind, policy)?;
    keep_thread_heaps();
    seccompiler::apply_filter(&program).map_err(|source| SeccompError::Apply { kind, source })
}

/// Stops glibc from shrinking a thread's malloc heap. The first time it
/// would (a thread freeing more than the trim threshold at the top of its
/// arena, as a qcow2 disk's cluster caches and buffers do on a vCPU
/// thread), glibc opens `/proc/sys/vm/overcommit_memory` to decide
/// whether it may, and a confined thread dies at that `openat`. Freed
/// memory stays in the arena for reuse instead; allocations from the
/// mmap threshold up (128 KiB) still go back to the kernel with `munmap`.
/// Process-wide, idempotent, and done before any filter binds.
fn keep_thread_heaps() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter; it takes the
    // allocator's own lock.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
    }
}

#[cfg(test)]
mod tests;
