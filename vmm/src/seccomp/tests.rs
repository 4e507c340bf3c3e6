use super::*;
use seccompiler::sock_filter;

const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
const AUDIT_ARCH_I386: u32 = 3 | 0x4000_0000;

/// Runs a compiled filter on a `struct seccomp_data` the way the
/// kernel does (the classic-BPF subset seccompiler emits) and returns
/// the action.
fn run(program: &[sock_filter], arch: u32, nr: i64, args: [u64; 6]) -> u32 {
    let mut data = Vec::with_capacity(64);
    data.extend_from_slice(&(nr as i32).to_ne_bytes());
    data.extend_from_slice(&arch.to_ne_bytes());
    data.extend_from_slice(&0u64.to_ne_bytes());
    for a in args {
        data.extend_from_slice(&a.to_ne_bytes());
    }
    let mut acc: u32 = 0;
    let mut pc = 0usize;
    loop {
        let ins = &program[pc];
        pc += 1;
        match ins.code {
            // BPF_LD | BPF_W | BPF_ABS
            0x20 => {
                let k = ins.k as usize;
                acc = u32::from_ne_bytes(data[k..k + 4].try_into().expect("4 bytes"));
            }
            // BPF_ALU | BPF_AND | BPF_K
            0x54 => acc &= ins.k,
            // BPF_JMP | BPF_JA
            0x05 => pc += ins.k as usize,
            // BPF_JMP | BPF_JEQ/JGT/JGE | BPF_K
            0x15 | 0x25 | 0x35 => {
                let taken = match ins.code {
                    0x15 => acc == ins.k,
                    0x25 => acc > ins.k,
                    _ => acc >= ins.k,
                };
                pc += usize::from(if taken { ins.jt } else { ins.jf });
            }
            // BPF_RET | BPF_K
            0x06 => return ins.k,
            other => panic!("unexpected BPF opcode {other:#x}"),
        }
    }
}

fn filter(kind: ThreadKind) -> Result<BpfProgram, SeccompError> {
    filter_with(kind, Policy::default())
}

fn action(kind: ThreadKind, nr: i64, args: [u64; 6]) -> u32 {
    run(&filter(kind).expect("filter"), AUDIT_ARCH_X86_64, nr, args)
}

fn allowed(kind: ThreadKind, nr: i64, args: [u64; 6]) -> bool {
    match action(kind, nr, args) {
        libc::SECCOMP_RET_ALLOW => true,
        libc::SECCOMP_RET_KILL_PROCESS => false,
        other => panic!("unexpected action {other:#x}"),
    }
}

fn args1(a0: u64) -> [u64; 6] {
    [a0, 0, 0, 0, 0, 0]
}

fn args2(a1: u64) -> [u64; 6] {
    [3, a1, 0, 0, 0, 0]
}

const BOTH: [ThreadKind; 2] = [ThreadKind::Vmm, ThreadKind::Vcpu];

#[test]
fn ioctl_numbers_match_the_kernel_headers() {
    assert_eq!(ioctls::KVM_RUN(), 0xae80);
    assert_eq!(ioctls::KVM_GET_REGS(), 0x8090_ae81);
    assert_eq!(ioctls::KVM_TRANSLATE(), 0xc018_ae85);
    assert_eq!(ioctls::TUNSETOFFLOAD(), 0x4004_54d0);
    assert_eq!(ioctls::KVM_SET_GSI_ROUTING(), 0x4008_ae6a);
    assert_eq!(ioctls::KVM_IOEVENTFD(), 0x4040_ae79);
    // O_WRONLY|O_CREAT|O_APPEND|O_CLOEXEC|O_NOFOLLOW on x86_64.
    assert_eq!(APPEND_CREATE_FLAGS, 0o2_402_101);
}

#[test]
fn both_filters_compile_and_fit() {
    for kind in BOTH {
        let program = filter(kind).expect("filter");
        assert!(
            program.len() > 50 && program.len() < 1024,
            "{kind:?}: {}",
            program.len()
        );
    }
}

#[test]
fn no_syscall_is_listed_twice() {
    for kind in BOTH {
        let extra = match kind {
            ThreadKind::Vmm => vmm_rules(),
            ThreadKind::Vcpu => vcpu_rules(),
        }
        .expect("rules");
        let mut seen = std::collections::HashSet::new();
        for (nr, _) in common_rules().expect("rules").into_iter().chain(extra) {
            assert!(seen.insert(nr), "{kind:?}: syscall {nr} twice");
        }
    }
}

#[test]
fn other_architectures_and_x32_are_killed() {
    for kind in BOTH {
        let program = filter(kind).expect("filter");
        // write(2) is allowed on x86_64 ...
        assert_eq!(
            run(&program, AUDIT_ARCH_X86_64, libc::SYS_write, args1(1)),
            libc::SECCOMP_RET_ALLOW
        );
        // ... but not through the i386 ABI, nor as an x32 call.
        assert_eq!(
            run(&program, AUDIT_ARCH_I386, 4, args1(1)),
            libc::SECCOMP_RET_KILL_PROCESS
        );
        assert_eq!(
            run(
                &program,
                AUDIT_ARCH_X86_64,
                0x4000_0000 | libc::SYS_write,
                args1(1)
            ),
            libc::SECCOMP_RET_KILL_PROCESS
        );
    }
}

#[test]
fn dangerous_syscalls_are_killed_on_both() {
    for kind in BOTH {
        for nr in [
            libc::SYS_execve,
            libc::SYS_execveat,
            libc::SYS_fork,
            libc::SYS_vfork,
            libc::SYS_clone,
            libc::SYS_clone3,
            libc::SYS_ptrace,
            libc::SYS_process_vm_writev,
            libc::SYS_open,
            libc::SYS_mount,
            libc::SYS_setuid,
            libc::SYS_bpf,
            libc::SYS_seccomp,
            libc::SYS_prctl,
            libc::SYS_kill,
            libc::SYS_bind,
            libc::SYS_listen,
            libc::SYS_memfd_create,
            libc::SYS_userfaultfd,
            libc::SYS_io_uring_setup,
        ] {
            assert!(!allowed(kind, nr, [0; 6]), "{kind:?} allows syscall {nr}");
        }
    }
}

#[test]
fn vcpu_ioctls_are_limited_to_the_run_loop() {
    let vcpu = ThreadKind::Vcpu;
    for ok in [
        ioctls::KVM_RUN(),
        ioctls::KVM_GET_REGS(),
        ioctls::KVM_TRANSLATE(),
        ioctls::TUNSETOFFLOAD(),
        ioctls::KVM_SET_GSI_ROUTING(),
        ioctls::KVM_IOEVENTFD(),
    ] {
        assert!(allowed(vcpu, libc::SYS_ioctl, args2(ok)));
        // The kernel takes the request as an unsigned int.
        assert!(allowed(
            vcpu,
            libc::SYS_ioctl,
            args2(ok | 0xffff_ffff_0000_0000)
        ));
    }
    // KVM_CREATE_VM, KVM_SET_USER_MEMORY_REGION, KVM_SET_REGS,
    // KVM_SET_SREGS, KVM_GET_SREGS, FIONBIO, TUNSETIFF.
    for bad in [
        0xae01u64,
        0x4020_ae46,
        0x4090_ae82,
        0x4138_ae84,
        0x8138_ae83,
        libc::FIONBIO,
        0x4004_54ca,
    ] {
        assert!(!allowed(vcpu, libc::SYS_ioctl, args2(bad)), "{bad:#x}");
    }
}

#[test]
fn user_net_widens_only_the_event_loop_and_only_for_ip_sockets() {
    let policy = Policy { user_net: true };
    let run_with = |kind, nr, args| {
        run(
            &filter_with(kind, policy).expect("filter"),
            AUDIT_ARCH_X86_64,
            nr,
            args,
        )
    };
    let allow = libc::SECCOMP_RET_ALLOW;
    let inet = libc::AF_INET as u64;
    let stream = (libc::SOCK_STREAM | libc::SOCK_NONBLOCK) as u64;
    let dgram = libc::SOCK_DGRAM as u64;
    // Without user networking an IP socket kills the process.
    assert!(!allowed(
        ThreadKind::Vmm,
        libc::SYS_socket,
        [inet, stream, 0, 0, 0, 0]
    ));
    assert_eq!(
        run_with(
            ThreadKind::Vmm,
            libc::SYS_socket,
            [inet, stream, 0, 0, 0, 0]
        ),
        allow
    );
    assert_eq!(
        run_with(ThreadKind::Vmm, libc::SYS_socket, [inet, dgram, 0, 0, 0, 0]),
        allow
    );
    assert_eq!(
        run_with(ThreadKind::Vmm, libc::SYS_sendto, [4, 1, 7, 0, 1 << 40, 16]),
        allow
    );
    assert_eq!(
        run_with(ThreadKind::Vmm, libc::SYS_bind, [4, 0, 16, 0, 0, 0]),
        allow
    );
    // Unix stream sockets (vsock) still work; raw and packet sockets do not.
    let unix = libc::AF_UNIX as u64;
    assert_eq!(
        run_with(
            ThreadKind::Vmm,
            libc::SYS_socket,
            [unix, stream, 0, 0, 0, 0]
        ),
        allow
    );
    let raw = libc::SOCK_RAW as u64;
    assert_ne!(
        run_with(ThreadKind::Vmm, libc::SYS_socket, [inet, raw, 0, 0, 0, 0]),
        allow
    );
    let packet = libc::AF_PACKET as u64;
    assert_ne!(
        run_with(
            ThreadKind::Vmm,
            libc::SYS_socket,
            [packet, dgram, 0, 0, 0, 0]
        ),
        allow
    );
    // vCPU threads gain nothing.
    assert_ne!(
        run_with(
            ThreadKind::Vcpu,
            libc::SYS_socket,
            [inet, stream, 0, 0, 0, 0]
        ),
        allow
    );
    assert_ne!(
        run_with(ThreadKind::Vcpu, libc::SYS_bind, [4, 0, 16, 0, 0, 0]),
        allow
    );
}

#[test]
fn the_vmm_thread_only_sets_sockets_nonblocking() {
    let vmm = ThreadKind::Vmm;
    assert!(allowed(vmm, libc::SYS_ioctl, args2(libc::FIONBIO)));
    // KVM_RUN, KVM_CREATE_VM, KVM_SET_USER_MEMORY_REGION, KVM_IRQ_LINE,
    // TUNSETIFF, TUNSETOFFLOAD, TCSETS.
    for bad in [
        ioctls::KVM_RUN(),
        0xae01,
        0x4020_ae46,
        0x4008_ae61,
        0x4004_54ca,
        ioctls::TUNSETOFFLOAD(),
        ioctls::KVM_SET_GSI_ROUTING(),
        ioctls::KVM_IOEVENTFD(),
        libc::TCSETS,
    ] {
        assert!(!allowed(vmm, libc::SYS_ioctl, args2(bad)), "{bad:#x}");
    }
}

#[test]
fn only_unix_stream_sockets_on_the_vmm_thread_and_none_on_vcpus() {
    let vmm = ThreadKind::Vmm;
    let unix = libc::AF_UNIX as u64;
    let stream = (libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) as u64;
    assert!(allowed(vmm, libc::SYS_socket, [unix, stream, 0, 0, 0, 0]));
    let dgram = (libc::SOCK_DGRAM | libc::SOCK_CLOEXEC) as u64;
    assert!(!allowed(vmm, libc::SYS_socket, [unix, dgram, 0, 0, 0, 0]));
    for family in [
        libc::AF_INET,
        libc::AF_INET6,
        libc::AF_NETLINK,
        libc::AF_PACKET,
        libc::AF_VSOCK,
    ] {
        let args = [family as u64, stream, 0, 0, 0, 0];
        assert!(!allowed(vmm, libc::SYS_socket, args), "family {family}");
    }
    let vcpu = ThreadKind::Vcpu;
    assert!(!allowed(vcpu, libc::SYS_socket, [unix, stream, 0, 0, 0, 0]));
    assert!(!allowed(vcpu, libc::SYS_connect, [0; 6]));
    assert!(!allowed(vcpu, libc::SYS_accept4, [0; 6]));
    assert!(!allowed(vcpu, libc::SYS_epoll_wait, [0; 6]));
}

#[test]
fn sendto_only_on_connected_sockets() {
    for kind in BOTH {
        assert!(allowed(kind, libc::SYS_sendto, [4, 1, 7, 0x4000, 0, 0]));
        assert!(!allowed(
            kind,
            libc::SYS_sendto,
            [4, 1, 7, 0, 0x7fff_0000, 16]
        ));
        // The address is a pointer: all 64 bits count.
        assert!(!allowed(kind, libc::SYS_sendto, [4, 1, 7, 0, 1 << 40, 16]));
    }
}

#[test]
fn vcpus_may_only_remove_from_an_epoll_set() {
    let vcpu = ThreadKind::Vcpu;
    let del = libc::EPOLL_CTL_DEL as u64;
    assert!(allowed(vcpu, libc::SYS_epoll_ctl, [5, del, 6, 0, 0, 0]));
    for op in [libc::EPOLL_CTL_ADD, libc::EPOLL_CTL_MOD] {
        assert!(!allowed(
            vcpu,
            libc::SYS_epoll_ctl,
            [5, op as u64, 6, 0, 0, 0]
        ));
        assert!(allowed(
            ThreadKind::Vmm,
            libc::SYS_epoll_ctl,
            [5, op as u64, 6, 0, 0, 0]
        ));
    }
}

#[test]
fn no_thread_creates_an_epoll_set() {
    for kind in BOTH {
        assert!(!allowed(kind, libc::SYS_epoll_create1, [0; 6]));
        assert!(!allowed(kind, libc::SYS_epoll_create, [1, 0, 0, 0, 0, 0]));
    }
}

#[test]
fn no_executable_mappings() {
    for kind in BOTH {
        for nr in [libc::SYS_mmap, libc::SYS_mprotect] {
            let rw = (libc::PROT_READ | libc::PROT_WRITE) as u64;
            let rx = (libc::PROT_READ | libc::PROT_EXEC) as u64;
            assert!(allowed(kind, nr, [0, 4096, rw, 0, 0, 0]));
            assert!(allowed(kind, nr, [0, 4096, 0, 0, 0, 0]));
            assert!(!allowed(kind, nr, [0, 4096, rx, 0, 0, 0]));
        }
    }
}

#[test]
fn files_open_only_for_appending_and_only_on_vcpus() {
    let at = [libc::AT_FDCWD as u64, 0, APPEND_CREATE_FLAGS, 0o666, 0, 0];
    assert!(allowed(ThreadKind::Vcpu, libc::SYS_openat, at));
    assert!(!allowed(ThreadKind::Vmm, libc::SYS_openat, at));
    assert!(allowed(ThreadKind::Vcpu, libc::SYS_rename, [0; 6]));
    assert!(!allowed(ThreadKind::Vmm, libc::SYS_rename, [0; 6]));
    for kind in BOTH {
        for flags in [
            libc::O_RDONLY | libc::O_CLOEXEC,
            libc::O_RDWR | libc::O_CLOEXEC,
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
            libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND,
            // An append that would follow a link.
            libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND | libc::O_CLOEXEC,
        ] {
            let at = [libc::AT_FDCWD as u64, 0, flags as u64, 0o666, 0, 0];
            assert!(!allowed(kind, libc::SYS_openat, at), "{flags:#o}");
        }
    }
}

#[test]
fn futex_without_priority_inheritance() {
    for kind in BOTH {
        let wait = (libc::FUTEX_WAIT_BITSET | libc::FUTEX_PRIVATE_FLAG) as u64;
        let wake = (libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG) as u64;
        assert!(allowed(kind, libc::SYS_futex, [0, wait, 0, 0, 0, 0]));
        assert!(allowed(kind, libc::SYS_futex, [0, wake, 0, 0, 0, 0]));
        assert!(allowed(
            kind,
            libc::SYS_futex,
            [0, wait | libc::FUTEX_CLOCK_REALTIME as u64, 0, 0, 0, 0]
        ));
        for bad in [
            libc::FUTEX_LOCK_PI,
            libc::FUTEX_UNLOCK_PI,
            libc::FUTEX_TRYLOCK_PI,
            libc::FUTEX_WAIT_REQUEUE_PI,
            libc::FUTEX_CMP_REQUEUE_PI,
            libc::FUTEX_REQUEUE,
            libc::FUTEX_FD,
        ] {
            let op = (bad | libc::FUTEX_PRIVATE_FLAG) as u64;
            assert!(
                !allowed(kind, libc::SYS_futex, [0, op, 0, 0, 0, 0]),
                "op {bad}"
            );
        }
    }
}

#[test]
fn tgkill_only_kicks_or_aborts() {
    for kind in BOTH {
        let kick = libc::SIGRTMIN() as u64;
        assert!(allowed(kind, libc::SYS_tgkill, [1, 2, kick, 0, 0, 0]));
        assert!(allowed(
            kind,
            libc::SYS_tgkill,
            [1, 2, libc::SIGABRT as u64, 0, 0, 0]
        ));
        assert!(!allowed(
            kind,
            libc::SYS_tgkill,
            [1, 2, libc::SIGKILL as u64, 0, 0, 0]
        ));
        assert!(!allowed(
            kind,
            libc::SYS_tgkill,
            [1, 2, libc::SIGSTOP as u64, 0, 0, 0]
        ));
    }
}

#[test]
fn fcntl_commands() {
    let getfd = libc::F_GETFD as u64;
    let dup = libc::F_DUPFD_CLOEXEC as u64;
    assert!(allowed(ThreadKind::Vcpu, libc::SYS_fcntl, args2(getfd)));
    for kind in BOTH {
        assert!(allowed(kind, libc::SYS_fcntl, args2(getfd)), "{kind:?}");
        assert!(!allowed(kind, libc::SYS_fcntl, args2(dup)), "{kind:?}");
    }
    assert!(!allowed(
        ThreadKind::Vmm,
        libc::SYS_fcntl,
        args2(libc::F_SETFL as u64)
    ));
    assert!(!allowed(
        ThreadKind::Vmm,
        libc::SYS_fcntl,
        args2(libc::F_SETOWN as u64)
    ));
}

#[test]
fn setsockopt_only_with_user_net() {
    let sol = libc::SOL_SOCKET as u64;
    for option in [libc::SO_RCVTIMEO, libc::SO_SNDTIMEO, libc::SO_REUSEADDR] {
        let args = [3, sol, option as u64, 0, 0, 0];
        for kind in BOTH {
            assert!(!allowed(kind, libc::SYS_setsockopt, args), "{kind:?}");
        }
        let user_net = filter_with(ThreadKind::Vmm, Policy { user_net: true }).expect("filter");
        assert_eq!(
            run(&user_net, AUDIT_ARCH_X86_64, libc::SYS_setsockopt, args),
            libc::SECCOMP_RET_ALLOW
        );
    }
}

#[test]
fn qcow2_disks_may_grow_files_and_punch_holes_only() {
    let punch = (libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE) as u64;
    for kind in [ThreadKind::Vcpu, ThreadKind::Vmm] {
        assert!(allowed(kind, libc::SYS_ftruncate, [5, 1 << 20, 0, 0, 0, 0]));
        assert!(allowed(
            kind,
            libc::SYS_fallocate,
            [5, punch, 0, 4096, 0, 0]
        ));
        for mode in [
            0,
            libc::FALLOC_FL_KEEP_SIZE as u64,
            libc::FALLOC_FL_ZERO_RANGE as u64,
            libc::FALLOC_FL_COLLAPSE_RANGE as u64,
            libc::FALLOC_FL_INSERT_RANGE as u64,
        ] {
            assert!(
                !allowed(kind, libc::SYS_fallocate, [5, mode, 0, 4096, 0, 0]),
                "{kind:?} mode {mode:#x}"
            );
        }
        // Still no truncating by name.
        assert!(!allowed(kind, libc::SYS_truncate, [0, 0, 0, 0, 0, 0]));
    }
}
