use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use keel_common::vmm_api::{
    read_frame, write_frame, VmInfo, VmState, VmStats, VmmRequest, VmmResponse,
};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::*;

/// A VM that only answers.
#[derive(Default)]
struct FakeVm {
    killed: AtomicBool,
    consoles: Mutex<Vec<Arc<Peer>>>,
}

impl VmControl for FakeVm {
    fn info(&self) -> VmInfo {
        VmInfo {
            name: "fake".into(),
            state: VmState::Running,
            vcpus: 1,
            memory_mib: 64,
            uptime_ms: 0,
            boot_marker_ms: None,
        }
    }
    fn stats(&self) -> VmStats {
        VmStats {
            devices: vec![],
            exits: vec![],
        }
    }
    fn pause(&self) -> Result<(), String> {
        Ok(())
    }
    fn resume(&self) {}
    fn shutdown(&self) -> bool {
        true
    }
    fn kill(&self) {
        self.killed.store(true, Ordering::Relaxed);
    }
    fn attach_console(&self, peer: Arc<Peer>) {
        self.consoles.lock().expect("lock").push(peer);
    }
    fn detach_console(&self, peer: &Arc<Peer>) {
        self.consoles
            .lock()
            .expect("lock")
            .retain(|p| !Arc::ptr_eq(p, peer));
    }
    fn console_input(&self, data: &[u8]) -> usize {
        data.len()
    }
}

/// The control server under an epoll loop of its own, as the VMM's event
/// loop runs it, on a thread until `stop` is set.
struct Served {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Arc<FakeVm>>>,
}

impl Served {
    fn start(tag: &str) -> Served {
        let path =
            std::env::temp_dir().join(format!("keel-control-{tag}-{}.sock", std::process::id()));
        let server = ControlServer::bind(&path).expect("bind");
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || serve_until(server, &stop))
        };
        Served {
            path,
            stop,
            thread: Some(thread),
        }
    }

    fn connect(&self) -> UnixStream {
        let stream = UnixStream::connect(&self.path).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        stream
    }

    fn stop(mut self) -> Arc<FakeVm> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .expect("running")
            .join()
            .expect("server thread")
    }
}

fn serve_until(mut server: ControlServer, stop: &AtomicBool) -> Arc<FakeVm> {
    let vm = Arc::new(FakeVm::default());
    let epoll = Epoll::new().expect("epoll");
    let add = |fd, id: u32, events| {
        epoll
            .ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(events, u64::from(id)),
            )
            .expect("epoll add")
    };
    for (fd, id) in server.fds() {
        add(fd, id, EventSet::IN);
    }
    let mut events = vec![EpollEvent::default(); 8];
    while !stop.load(Ordering::Relaxed) {
        let n = epoll.wait(50, &mut events).expect("epoll_wait");
        for event in &events[..n] {
            let id = u32::try_from(event.data()).expect("id");
            for change in server.handle(id, vm.as_ref()) {
                match change {
                    FdChange::Add { fd, id, events } => add(fd, id, events),
                    FdChange::Remove(peer) => epoll
                        .ctl(
                            ControlOperation::Delete,
                            peer.as_raw_fd(),
                            EpollEvent::default(),
                        )
                        .expect("epoll delete"),
                }
            }
        }
    }
    vm
}

fn ask(stream: &mut UnixStream, request: &VmmRequest) -> VmmResponse {
    write_frame(stream, request).expect("request");
    read_frame(stream).expect("answer")
}

#[test]
fn a_client_that_sends_nothing_does_not_hold_up_another() {
    let served = Served::start("silent");
    let _silent = served.connect();
    let mut half = served.connect();
    // Half a frame: the length only.
    half.write_all(&[0, 0]).expect("write");
    let started = Instant::now();
    let mut client = served.connect();
    for _ in 0..3 {
        match ask(&mut client, &VmmRequest::Info) {
            VmmResponse::Info(info) => assert_eq!(info.name, "fake"),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "answers took {:?}",
        started.elapsed()
    );
    assert_eq!(ask(&mut client, &VmmRequest::Kill), VmmResponse::Ok);
    let vm = served.stop();
    assert!(vm.killed.load(Ordering::Relaxed));
}

#[test]
fn a_request_that_arrives_in_pieces_is_served_whole() {
    let served = Served::start("pieces");
    let mut client = served.connect();
    let mut frame = Vec::new();
    write_frame(&mut frame, &VmmRequest::Info).expect("encode");
    write_frame(&mut frame, &VmmRequest::Resume).expect("encode");
    for byte in &frame {
        client.write_all(&[*byte]).expect("write");
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(matches!(read_frame(&mut client), Ok(VmmResponse::Info(_))));
    assert!(matches!(read_frame(&mut client), Ok(VmmResponse::Ok)));
    served.stop();
}

#[test]
fn a_malformed_frame_drops_only_its_client() {
    let served = Served::start("malformed");
    let mut good = served.connect();
    let mut bad = served.connect();
    bad.write_all(&[0, 0, 0, 1, 0xff]).expect("write");
    let mut rest = Vec::new();
    assert_eq!(bad.read_to_end(&mut rest).expect("hang-up"), 0);
    assert!(matches!(
        ask(&mut good, &VmmRequest::Info),
        VmmResponse::Info(_)
    ));
    served.stop();
}

#[test]
fn console_attach_is_answered_first_and_a_hang_up_detaches() {
    let served = Served::start("attach");
    let mut client = served.connect();
    assert_eq!(
        ask(&mut client, &VmmRequest::ConsoleAttach),
        VmmResponse::Ok
    );
    // Input the guest takes needs no answer; the next request still gets one.
    write_frame(&mut client, &VmmRequest::ConsoleInput(b"ls\n".to_vec())).expect("input");
    assert!(matches!(
        ask(&mut client, &VmmRequest::Info),
        VmmResponse::Info(_)
    ));
    drop(client);
    // The server notices the hang-up and lets the console go.
    let mut other = served.connect();
    assert!(matches!(
        ask(&mut other, &VmmRequest::Info),
        VmmResponse::Info(_)
    ));
    std::thread::sleep(Duration::from_millis(200));
    let vm = served.stop();
    assert!(vm.consoles.lock().expect("lock").is_empty());
}
