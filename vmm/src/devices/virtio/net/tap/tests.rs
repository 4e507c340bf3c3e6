use std::fs::OpenOptions;
use std::os::unix::io::FromRawFd;
use std::time::{Duration, Instant};

use keel_sys::tun::TUN_PATH;

use super::*;
use crate::devices::virtio::net::{Net, BACKEND_EVENT, TX_QUEUE};
use crate::devices::virtio::testing::{add_chain, event, guest_mem, irq, kick, used, R, W};
use crate::devices::virtio::VirtioDevice;
use keel_common::guest::MacAddr;
use virtio_bindings::virtio_net::{VIRTIO_NET_F_CSUM, VIRTIO_NET_F_HOST_TSO4};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::epoll::EventSet;

const MAC: [u8; 6] = [0x02, 0x4b, 0x45, 0x45, 0x4c, 0x02];
/// IEEE local experimental ethertype: nothing else on the host uses it.
const ETHERTYPE: [u8; 2] = [0x88, 0xb5];

/// Opens a fresh tap, or says loudly why this host cannot.
fn open_tap_or_skip(test: &str) -> Option<Tap> {
    match Tap::open("keeltap%d") {
        Ok(tap) => Some(tap),
        Err(e) => {
            eprintln!(
                "SKIPPED {test}: cannot create a tap through {TUN_PATH} ({e}); \
                 the real tap backend is NOT tested on this host"
            );
            None
        }
    }
}

fn ioctl_ifreq(
    name: &str,
    request: libc::Ioctl,
    flags: libc::c_short,
) -> io::Result<libc::c_short> {
    // SAFETY: plain socket(2) call; the result is checked.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh socket nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut req = ifreq_named(name).ok_or_else(|| io::Error::other("bad tap name"))?;
    req.ifr_ifru.ifru_flags = flags;
    // SAFETY: SIOC[GS]IFFLAGS read and write the ifreq in place.
    if unsafe { libc::ioctl(sock.as_raw_fd(), request, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the flags member is what these requests use.
    Ok(unsafe { req.ifr_ifru.ifru_flags })
}

fn set_link_up(name: &str) -> io::Result<()> {
    let flags = ioctl_ifreq(name, libc::SIOCGIFFLAGS, 0)?;
    ioctl_ifreq(
        name,
        libc::SIOCSIFFLAGS,
        flags | libc::IFF_UP as libc::c_short,
    )
    .map(|_| ())
}

/// A raw packet socket on interface `name`, seeing every frame.
fn packet_socket(name: &str) -> io::Result<OwnedFd> {
    let cname = std::ffi::CString::new(name).map_err(io::Error::other)?;
    // SAFETY: `cname` is a valid C string for the duration of the call.
    let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error());
    }
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2) call; the result is checked.
    let raw = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            i32::from(proto),
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh socket nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: sockaddr_ll is plain old data; all zeros is valid.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = proto;
    addr.sll_ifindex = index as i32;
    // SAFETY: `addr` is an initialised sockaddr_ll of the given size.
    let ret = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sock)
}

fn wait_readable(fd: RawFd, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `pfd` is one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as libc::c_int) };
    n > 0
}

/// A 60-byte test frame carrying `marker`.
fn test_frame(dst: [u8; 6], src: [u8; 6], marker: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ETHERTYPE);
    f.extend_from_slice(marker);
    f.resize(60, 0);
    f
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn real_tap_is_set_up_for_virtio_net() {
    let Some(mut tap) = open_tap_or_skip("real_tap_is_set_up_for_virtio_net") else {
        return;
    };
    assert!(tap.name().starts_with("keeltap"), "{}", tap.name());
    let fd = tap.raw_fd().expect("fd");
    // SAFETY: F_GETFL on an open fd touches no memory.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    assert_ne!(fl & libc::O_NONBLOCK, 0);
    let mut size: libc::c_int = 0;
    // SAFETY: TUNGETVNETHDRSZ writes one int through the pointer.
    let ret = unsafe { libc::ioctl(fd, libc::TUNGETVNETHDRSZ, &mut size) };
    assert_eq!(ret, 0);
    assert_eq!(size as usize, VNET_HDR_LEN);
    // Every combination the device can ask for is accepted.
    tap.set_offload(OFFLOAD_FEATURES).expect("all offloads");
    tap.set_offload(1 << VIRTIO_NET_F_GUEST_TSO4)
        .expect("no offloads");
    tap.set_offload(0).expect("no offloads");
    assert!(matches!(
        tap.read_frame(&mut [0u8; 128]),
        Err(NetBackendError::WouldBlock)
    ));
    assert_eq!(tap.offload_features(), OFFLOAD_FEATURES);

    // The same tap handed over as an fd.
    // SAFETY: dup of an open fd; the result is checked.
    let dup = unsafe { libc::dup(fd) };
    assert!(dup >= 0);
    // SAFETY: `dup` is a fresh fd nobody else owns.
    let inherited = Tap::from_fd(unsafe { OwnedFd::from_raw_fd(dup) }).expect("from_fd");
    assert_eq!(inherited.name(), tap.name());
}

#[test]
fn inherited_tap_without_vnet_header_is_refused() {
    if open_tap_or_skip("inherited_tap_without_vnet_header_is_refused").is_none() {
        return;
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(TUN_PATH)
        .expect("open tun");
    let mut req = ifreq_named("keelbad%d").expect("name");
    req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF on an open tun fd with a valid ifreq.
    let ret = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
    assert_eq!(ret, 0);
    assert!(matches!(
        Tap::from_fd(OwnedFd::from(file)),
        Err(TapError::WrongMode(_))
    ));
}

/// A guest TSO frame must cross the tap as one GSO packet: that is what
/// keeps bulk TCP from costing a VM exit and a syscall per segment.
#[test]
fn real_tap_carries_guest_tso_frames_whole() {
    const TEST: &str = "real_tap_carries_guest_tso_frames_whole";
    // linux/if_packet.h; not in the libc crate.
    const PACKET_VNET_HDR: libc::c_int = 15;
    let Some(tap) = open_tap_or_skip(TEST) else {
        return;
    };
    let name = tap.name().to_string();
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1");
    let sock = match set_link_up(&name).and_then(|()| packet_socket(&name)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("SKIPPED {TEST}: cannot bring {name} up and watch it ({e}); GSO through the tap is NOT tested");
            return;
        }
    };
    let on: libc::c_int = 1;
    // SAFETY: the option value is one int, valid for the call.
    let ret = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_PACKET,
            PACKET_VNET_HDR,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(ret, 0, "{}", io::Error::last_os_error());

    let mem = guest_mem(&[(0, 0x10_0000)]);
    let rxq = MockSplitQueue::create(&mem, GuestAddress(0), 16);
    let txq = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
    let mut net = Net::new(Box::new(tap), MacAddr(MAC)).expect("net");
    let queues: Vec<Queue> = vec![
        rxq.create_queue().expect("queue"),
        txq.create_queue().expect("queue"),
    ];
    let features = net.device_features();
    net.activate(mem.clone(), irq(), queues, features)
        .expect("activate");

    // Ethernet, IPv4 (10.0.0.2 -> 10.0.0.1), TCP 12345 -> 80, 20000
    // bytes of payload: fourteen segments' worth.
    const PAYLOAD: usize = 20_000;
    let mut frame = Vec::new();
    frame.extend_from_slice(&[0xff; 6]);
    frame.extend_from_slice(&MAC);
    frame.extend_from_slice(&[0x08, 0x00]);
    let ip_len = (20 + 20 + PAYLOAD) as u16;
    frame.extend_from_slice(&[0x45, 0, (ip_len >> 8) as u8, ip_len as u8]);
    frame.extend_from_slice(&[0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 2, 10, 0, 0, 1]);
    frame.extend_from_slice(&[0x30, 0x39, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0]);
    frame.extend_from_slice(&[0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    frame.extend((0..PAYLOAD).map(|i| (i % 251) as u8));
    // virtio_net_hdr_v1: NEEDS_CSUM, GSO_TCPV4, hdr_len 54, gso_size
    // 1448, checksum from offset 34, stored at +16.
    let mut hdr = vec![1u8, 1];
    for v in [54u16, 1448, 34, 16, 0] {
        hdr.extend_from_slice(&v.to_le_bytes());
    }
    mem.write_slice(&hdr, GuestAddress(0x1_0000))
        .expect("write");
    mem.write_slice(&frame, GuestAddress(0x2_0000))
        .expect("write");
    add_chain(
        &txq,
        0,
        &[
            (0x1_0000, hdr.len() as u32, R),
            (0x2_0000, frame.len() as u32, R),
        ],
    );
    assert!(kick(&mut net, TX_QUEUE));
    let counters = net.counters();
    assert!(counters.contains(&("tx_frames", 1)), "{counters:?}");

    let deadline = Instant::now() + Duration::from_secs(3);
    let mut gso = None;
    let mut buf = vec![0u8; 70_000];
    while gso.is_none() && Instant::now() < deadline {
        if !wait_readable(sock.as_raw_fd(), Duration::from_millis(200)) {
            continue;
        }
        // SAFETY: `buf` is writable for its whole length.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        let Ok(n) = usize::try_from(n) else {
            continue;
        };
        // A 10-byte virtio_net_hdr, then the frame.
        if n >= 10 + frame.len() && buf[10..10 + frame.len()] == frame[..] {
            gso = Some((buf[1], u16::from_le_bytes([buf[4], buf[5]])));
        }
    }
    let (gso_type, gso_size) = gso.expect("the TSO frame never showed up whole");
    assert_eq!(gso_type, 1, "GSO_TCPV4");
    assert_eq!(gso_size, 1448);
}

#[test]
fn real_tap_round_trip_through_the_device() {
    const TEST: &str = "real_tap_round_trip_through_the_device";
    let Some(tap) = open_tap_or_skip(TEST) else {
        return;
    };
    let name = tap.name().to_string();
    // Fewer unrelated frames (router solicitations, MLD) on the link.
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1");
    if let Err(e) = set_link_up(&name) {
        eprintln!("SKIPPED {TEST}: cannot bring {name} up ({e}); the tap data path is NOT tested");
        return;
    }
    let sock = match packet_socket(&name) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "SKIPPED {TEST}: no packet socket on {name} ({e}); the tap data path is NOT tested"
            );
            return;
        }
    };
    let tap_fd = tap.raw_fd().expect("fd");

    let mem = guest_mem(&[(0, 0x10_0000)]);
    let rxq = MockSplitQueue::create(&mem, GuestAddress(0), 16);
    let txq = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
    let mut net = Net::new(Box::new(tap), MacAddr(MAC)).expect("net");
    assert_eq!(net.backend_fd(), Some(tap_fd));
    let queues: Vec<Queue> = vec![
        rxq.create_queue().expect("queue"),
        txq.create_queue().expect("queue"),
    ];
    let features = net.device_features();
    net.activate(mem.clone(), irq(), queues, features)
        .expect("activate");

    // Guest to host.
    let out = test_frame([0xff; 6], MAC, b"keel-guest-to-host");
    let mut pkt = vec![0u8; VNET_HDR_LEN];
    pkt.extend_from_slice(&out);
    mem.write_slice(&pkt, GuestAddress(0x1_0000))
        .expect("write");
    add_chain(&txq, 0, &[(0x1_0000, pkt.len() as u32, R)]);
    assert!(kick(&mut net, TX_QUEUE));
    assert_eq!(used(&txq, 0), (1, 0, 0));
    let sent = net.counters();
    assert!(sent.contains(&("tx_frames", 1)), "{sent:?}");
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut seen = false;
    while !seen && Instant::now() < deadline {
        if !wait_readable(sock.as_raw_fd(), Duration::from_millis(200)) {
            continue;
        }
        let mut buf = [0u8; 2048];
        // SAFETY: `buf` is writable for its whole length.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if let Ok(n) = usize::try_from(n) {
            seen = contains(&buf[..n], b"keel-guest-to-host");
        }
    }
    assert!(seen, "the guest's frame never showed up on {name}");

    // Host to guest.
    for i in 0..8u16 {
        add_chain(&rxq, i, &[(0x2_0000 + u64::from(i) * 0x1000, 4096, W)]);
    }
    let back = test_frame(MAC, [0x02, 0, 0, 0, 0, 9], b"keel-host-to-guest");
    // SAFETY: `back` is readable for its whole length.
    let n = unsafe { libc::send(sock.as_raw_fd(), back.as_ptr().cast(), back.len(), 0) };
    assert_eq!(n, back.len() as isize, "{}", io::Error::last_os_error());
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut delivered = None;
    let mut checked = 0;
    while delivered.is_none() && Instant::now() < deadline {
        wait_readable(tap_fd, Duration::from_millis(200));
        event(&mut net, BACKEND_EVENT, EventSet::IN);
        let idx = rxq.used().idx().load();
        while checked < idx {
            let (_, id, len) = used(&rxq, usize::from(checked));
            let mut buf = vec![0u8; len as usize];
            mem.read_slice(&mut buf, GuestAddress(0x2_0000 + u64::from(id) * 0x1000))
                .expect("read");
            if contains(&buf, b"keel-host-to-guest") {
                delivered = Some(buf);
            }
            checked += 1;
        }
    }
    let buf = delivered.expect("the host's frame never reached the guest");
    // One buffer, and the frame right after the 12-byte header.
    assert_eq!(&buf[10..12], &[1, 0]);
    assert_eq!(&buf[VNET_HDR_LEN..VNET_HDR_LEN + 60], &back[..]);
}

#[test]
fn offload_flags_follow_the_guest_features() {
    let bit = |b: u32| 1u64 << b;
    assert_eq!(tun_offload_flags(0), 0);
    assert_eq!(
        tun_offload_flags(bit(VIRTIO_NET_F_GUEST_CSUM)),
        libc::TUN_F_CSUM
    );
    assert_eq!(
        tun_offload_flags(
            bit(VIRTIO_NET_F_GUEST_CSUM)
                | bit(VIRTIO_NET_F_GUEST_TSO4)
                | bit(VIRTIO_NET_F_GUEST_TSO6)
                | bit(VIRTIO_NET_F_GUEST_UFO)
        ),
        libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_UFO
    );
    // Segmentation without checksum offload would make TUNSETOFFLOAD fail.
    assert_eq!(
        tun_offload_flags(bit(VIRTIO_NET_F_GUEST_TSO4) | bit(VIRTIO_NET_F_GUEST_TSO6)),
        0
    );
    // Transmit-side bits say nothing about what the tap may hand us.
    assert_eq!(
        tun_offload_flags(bit(VIRTIO_NET_F_CSUM) | bit(VIRTIO_NET_F_HOST_TSO4)),
        0
    );
}

#[test]
fn names_that_do_not_fit_ifreq_are_refused() {
    assert!(matches!(
        Tap::open("a-name-of-16-chr"),
        Err(TapError::Tun(TunError::InvalidName(_)))
    ));
    assert!(matches!(
        Tap::open("ta\0p"),
        Err(TapError::Tun(TunError::InvalidName(_)))
    ));
}

#[test]
fn an_fd_that_is_not_a_tap_is_refused() {
    let file = std::fs::File::open("/dev/null").expect("open /dev/null");
    assert!(matches!(
        Tap::from_fd(OwnedFd::from(file)),
        Err(TapError::Query(_))
    ));
}
