//! An init that never answers, or trickles its answer, costs a call its
//! deadline and no more.

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use super::*;

fn client(socket: &std::path::Path, timeout: Duration) -> InitClient {
    InitClient {
        socket: socket.to_path_buf(),
        timeout,
    }
}

#[test]
fn a_wedged_init_costs_a_call_its_deadline() {
    let socket = std::env::temp_dir().join(format!("keel-wedged-init-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).unwrap();
    let init = client(&socket, Duration::from_millis(300));

    // Accepted (by the backlog) and never answered.
    let started = Instant::now();
    let (kind, message) = init.call(&InitRequest::GuestList).unwrap_err();
    assert_eq!(kind, ErrorCode::Unavailable);
    assert!(message.contains("Timed out"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(1));

    // An answer trickled a byte at a time is cut off at the deadline too.
    let trickle = std::thread::spawn(move || {
        drop(listener.accept().unwrap());
        let (mut peer, _) = listener.accept().unwrap();
        peer.write_all(&[0, 0, 0, 64]).unwrap();
        for _ in 0..30 {
            if peer.write_all(b"\0").is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let started = Instant::now();
    init.call(&InitRequest::GuestList).unwrap_err();
    assert!(started.elapsed() < Duration::from_millis(900));
    trickle.join().unwrap();
    std::fs::remove_file(&socket).unwrap();
}
