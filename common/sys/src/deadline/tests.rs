use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use super::{connect_unix, Deadline, TimeoutStream};

/// Reads 100 bytes from `server` while the peer trickles one every 50 ms:
/// the 300 ms deadline ends it, however many bytes came.
fn trickled_read_times_out<S: TimeoutStream>(server: &S, mut peer: impl Write + Send + 'static) {
    let trickle = std::thread::spawn(move || {
        for _ in 0..20 {
            if peer.write_all(b"x").is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let started = Instant::now();
    let mut d = Deadline::new(server, Duration::from_millis(300));
    let e = d.read_exact(&mut [0u8; 100]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
    assert!(started.elapsed() < Duration::from_millis(600));
    trickle.join().unwrap();
}

#[test]
fn trickled_bytes_do_not_extend_the_deadline() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    trickled_read_times_out(&server, client);

    let (a, b) = UnixStream::pair().unwrap();
    trickled_read_times_out(&a, b);
}

#[test]
fn a_listener_that_never_accepts_does_not_hold_connect() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wedged.sock");
    let listener = UnixListener::bind(&path).unwrap();
    // SAFETY: listen(2) again on our listening socket, to shrink its backlog.
    assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 0) }, 0);
    // Fill the backlog; then connect waits for room that never comes.
    let mut held = Vec::new();
    let started = Instant::now();
    let e = loop {
        match connect_unix(&path, Duration::from_millis(200)) {
            Ok(s) => held.push(s),
            Err(e) => break e,
        }
        assert!(held.len() < 64, "the backlog never filled");
    };
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
    assert!(started.elapsed() < Duration::from_secs(2));

    // A listener that accepts is reached, and the stream has no timeout left.
    drop(held);
    drop(listener);
    std::fs::remove_file(&path).unwrap();
    let listener = UnixListener::bind(&path).unwrap();
    let s = connect_unix(&path, Duration::from_secs(1)).unwrap();
    assert_eq!(s.write_timeout().unwrap(), None);
    listener.accept().unwrap();
}

#[test]
fn addresses_that_do_not_fit_are_refused() {
    let long = std::path::PathBuf::from("/".repeat(200));
    let e = connect_unix(&long, Duration::from_secs(1)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}
