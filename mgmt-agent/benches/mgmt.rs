//! Loopback benchmarks of the management channel with an in-process
//! agent: handshake latency, request round trip, bulk upload throughput,
//! and a plain unencrypted TCP copy of the same file as the baseline.
//!
//! Run with `cargo bench -p keel-mgmt --bench mgmt`.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use keel_mgmt::agent::{serve, AgentConfig};
use keel_mgmt::client::{sha256_file, Client, ConnectOptions, Target};
use keel_mgmt::messages::MAX_CHUNK;
use keel_mgmt::{ClientKey, KnownHosts, Request, Response};

const HANDSHAKES: usize = 50;
const ROUND_TRIPS: usize = 1000;
const BULK_MIB: usize = 256;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn mib_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / d.as_secs_f64()
}

/// Writes `mib` MiB of pseudo-random data to `path`.
fn make_file(path: &Path, mib: usize) {
    let mut f = File::create(path).unwrap();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..mib {
        for w in block.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&block).unwrap();
    }
    f.sync_all().unwrap();
}

/// The baseline: the same file read, sent over a plain loopback TCP
/// stream, written to a file in the same directory and fsynced.
fn plain_copy(src: &Path, dst: &Path) -> Duration {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let dst = dst.to_path_buf();
    let receiver = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut out = File::create(&dst).unwrap();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n]).unwrap();
        }
        out.sync_all().unwrap();
        s.write_all(b"k").unwrap();
    });
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    let mut f = File::open(src).unwrap();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        s.write_all(&buf[..n]).unwrap();
    }
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut ack = [0u8; 1];
    s.read_exact(&mut ack).unwrap();
    let d = start.elapsed();
    receiver.join().unwrap();
    d
}

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let dir: PathBuf = std::env::temp_dir().join(format!("keel-mgmt-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("state");
    let handle = serve(
        TcpListener::bind("127.0.0.1:0").unwrap(),
        AgentConfig::new(&state),
    )
    .unwrap();
    let port = handle.local_addr().port();
    let target = Target {
        known_hosts_name: format!("127.0.0.1:{port}"),
        host: "127.0.0.1".into(),
        port,
    };
    let key = ClientKey::generate().unwrap();
    let mut kh = KnownHosts::default();
    let pair = ConnectOptions {
        trust_on_first_use: true,
        pairing_code: handle.pairing_code().map(str::to_string),
        timeout: Some(Duration::from_secs(60)),
    };
    drop(Client::connect(&target, &key, &mut kh, &pair).unwrap());
    let opts = ConnectOptions {
        timeout: Some(Duration::from_secs(60)),
        ..ConnectOptions::default()
    };

    println!("keel-mgmt loopback benchmark (in-process agent, 127.0.0.1)");

    // 1. Handshake latency, client authentication included.
    let mut times = Vec::new();
    for _ in 0..HANDSHAKES {
        let t = Instant::now();
        let c = Client::connect(&target, &key, &mut kh, &opts).unwrap();
        times.push(t.elapsed());
        drop(c);
    }
    println!(
        "handshake latency:        median {:>8.1} us  ({HANDSHAKES} handshakes incl. client auth)",
        median(times).as_secs_f64() * 1e6
    );

    // 2. Request round trip on one session.
    let mut c = Client::connect(&target, &key, &mut kh, &opts).unwrap();
    let mut times = Vec::with_capacity(ROUND_TRIPS);
    for _ in 0..ROUND_TRIPS {
        let t = Instant::now();
        let r = c.call(Request::HostInfo).unwrap();
        times.push(t.elapsed());
        assert!(matches!(r, Response::HostInfo(_)));
    }
    println!(
        "request round trip:       median {:>8.1} us  ({ROUND_TRIPS} HostInfo on one session)",
        median(times).as_secs_f64() * 1e6
    );

    // 3. Bulk upload vs a plain TCP copy of the same file.
    let src = dir.join("bulk.bin");
    make_file(&src, BULK_MIB);
    let bytes = (BULK_MIB as u64) << 20;
    let t = Instant::now();
    let (size, sha) = sha256_file(&src).unwrap();
    let hash_time = t.elapsed();
    assert_eq!(size, bytes);
    println!(
        "client pre-hash SHA-256:  {:>8.1} MiB/s  ({BULK_MIB} MiB, before the upload starts)",
        mib_per_s(bytes, hash_time)
    );

    let plain = plain_copy(&src, &dir.join("plain-copy.bin"));
    let plain_rate = mib_per_s(bytes, plain);
    println!(
        "plain TCP copy baseline:  {:>8.1} MiB/s  ({BULK_MIB} MiB file -> loopback -> file + fsync, {:.2} s)",
        plain_rate,
        plain.as_secs_f64()
    );

    let mut chunks = vec![64 * 1024];
    if MAX_CHUNK != 64 * 1024 {
        chunks.push(MAX_CHUNK);
    }
    for chunk in chunks {
        let mut f = File::open(&src).unwrap();
        let t = Instant::now();
        c.upload("bench/bulk.bin", size, sha, &mut f, chunk, &mut |_| {})
            .unwrap();
        let d = t.elapsed();
        let rate = mib_per_s(bytes, d);
        println!(
            "upload ({:>3} KiB chunks):  {:>8.1} MiB/s  ({BULK_MIB} MiB, encrypted, verified, fsynced, {:.2} s; ratio to plain {:.2}x, goal >= 0.80x)",
            chunk / 1024,
            rate,
            d.as_secs_f64(),
            rate / plain_rate
        );
        let with_hash = mib_per_s(bytes, d + hash_time);
        println!(
            "  incl. client pre-hash:  {:>8.1} MiB/s  (ratio {:.2}x)",
            with_hash,
            with_hash / plain_rate
        );
    }
    drop(c);
    drop(handle);
    let _ = std::fs::remove_dir_all(&dir);
}
