//! virtio-vsock against a hostile driver, with real host sockets on the
//! other side: a service listening on guest-visible host port 1024 and
//! host clients connecting through the device's listener.
//!
//! Input: the driver's setup header and ops (see the crate docs).
//! Device-specific ops: 0 a host client connects and sends a `CONNECT`
//! line (u8 selector: port 1024, 1025, or a u32 port from the input),
//! 1 a host client or accepted service stream writes a blob, 2 one of
//! them is closed, 3 the service accepts what is waiting, 4 the device
//! gets whatever its epoll set reports, 5 the device gets an event with
//! an id and event bits from the input.
#![no_main]

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use keel_vmm::devices::virtio::{DeviceEvents, VirtioDevice, Vsock};
use keel_vmm_fuzz::{Driver, Input, Step, DEVICE_OPS};
use libfuzzer_sys::fuzz_target;
use vmm_sys_util::epoll::{Epoll, EpollEvent, EventSet};

const GUEST_CID: u64 = 3;
const SERVICE_PORT: u32 = 1024;
/// Host-side streams kept open at once, at most.
const MAX_STREAMS: usize = 16;

/// A directory of this process's own for the sockets, and the service
/// listening in it.
struct Host {
    dir: PathBuf,
    service: UnixListener,
}

fn host() -> &'static Host {
    static HOST: OnceLock<Host> = OnceLock::new();
    HOST.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("keel-vmm-fuzz-vsock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("cannot create the socket directory");
        let service = UnixListener::bind(dir.join(format!("v.sock_{SERVICE_PORT}")))
            .expect("cannot bind the service socket");
        service
            .set_nonblocking(true)
            .expect("cannot make the service non-blocking");
        Host { dir, service }
    })
}

/// What the device's epoll set reports now, as (id, events). The id is the
/// low 32 bits of the event data (keel-vmm's `Token::Device` layout).
fn ready(epoll: &Epoll) -> Vec<(u32, EventSet)> {
    let mut events = [EpollEvent::default(); 32];
    let n = epoll.wait(0, &mut events).unwrap_or(0);
    events[..n]
        .iter()
        .map(|e| (e.data() as u32, EventSet::from_bits_truncate(e.events())))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let host = host();
    let uds = host.dir.join("v.sock");
    let _ = std::fs::remove_file(&uds);
    let mut input = Input::new(data);
    let mut vsock = Vsock::new(GUEST_CID, &uds).expect("cannot create the vsock device");
    let epoll = Arc::new(Epoll::new().expect("cannot create an epoll set"));
    vsock
        .register_events(DeviceEvents::new(epoll.clone(), 0))
        .expect("cannot register the device's sockets");
    let mut streams: Vec<UnixStream> = Vec::new();
    let mut driver = Driver::new(&mut input, 3, vsock.device_features());
    driver.activate(&mut vsock);
    loop {
        match driver.step(&mut input, Some(&mut vsock)) {
            Step::Done => {}
            Step::Device(tag, input) => match (tag - DEVICE_OPS) % 6 {
                0 => {
                    let port = match input.u8() % 3 {
                        0 => SERVICE_PORT,
                        1 => SERVICE_PORT + 1,
                        _ => input.u32(),
                    };
                    if streams.len() < MAX_STREAMS {
                        if let Ok(mut stream) = UnixStream::connect(&uds) {
                            let _ = stream.set_nonblocking(true);
                            let _ = writeln!(stream, "CONNECT {port}");
                            streams.push(stream);
                        }
                    }
                }
                1 => {
                    let i = usize::from(input.u8()) % streams.len().max(1);
                    let bytes = input.blob();
                    if let Some(stream) = streams.get_mut(i) {
                        let _ = stream.write(bytes);
                        // Drain what the device sent, so it never blocks on us.
                        let mut sink = [0u8; 4096];
                        while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
                    }
                }
                2 => {
                    let i = usize::from(input.u8());
                    if !streams.is_empty() {
                        streams.swap_remove(i % streams.len());
                    }
                }
                3 => {
                    while let Ok((stream, _)) = host.service.accept() {
                        let _ = stream.set_nonblocking(true);
                        if streams.len() < MAX_STREAMS {
                            streams.push(stream);
                        }
                    }
                }
                4 => {
                    for (id, events) in ready(&epoll) {
                        vsock.handle_event(id, events);
                    }
                    driver.check_used();
                }
                5 => {
                    let id = input.u32();
                    let events = EventSet::from_bits_truncate(input.u32());
                    vsock.handle_event(id, events);
                    driver.check_used();
                }
                _ => {}
            },
            Step::End => break,
        }
    }
    driver.reset(&mut vsock);
    // Connections the device made to the service and nobody accepted.
    while host.service.accept().is_ok() {}
});
