//! Loopback benchmarks of the management channel with an in-process
//! agent: handshake latency, request round trip, bulk upload throughput,
//! and a plain unencrypted TCP copy of the same file as the baseline.
//!
//! Run with `cargo bench -p keel-mgmt --bench mgmt`.

// A failed assumption in a test is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use keel_mgmt::agent::{serve, AgentSettings};
use keel_mgmt::client::{Client, ConnectOptions, Target, UploadFile};
use keel_mgmt::messages::MAX_CHUNK;
use keel_mgmt::{ClientKey, KnownHosts, Request, Response};

const HANDSHAKES: usize = 50;
const ROUND_TRIPS: usize = 1000;
const BULK_MIB: usize = 256;
/// Plain-copy and upload runs, interleaved; medians are reported.
const ROUNDS: usize = 5;
/// Frame size for the primitive measurements: a full upload chunk.
const FRAME: usize = MAX_CHUNK + 16;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn mib_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / d.as_secs_f64()
}

/// CPU time (user + system) of this process so far, all threads
/// included, also those that have exited: the in-process agent's and the
/// client's. Resolution: one clock tick (10 ms).
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name, which is in parentheses: state is
    // field 3, utime 14 and stime 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // USER_HZ is 100 on every Linux architecture Keel runs on.
    Duration::from_millis(ticks * 10)
}

/// Busy CPU time of the whole machine so far (all CPUs, every process;
/// idle and iowait excluded), from /proc/stat.
fn machine_busy() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|t| t.parse().unwrap())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy: u64 = ticks.iter().sum::<u64>() - ticks[3] - ticks[4];
    Duration::from_millis(busy * 10)
}

#[derive(Clone, Copy)]
struct Run {
    wall: Duration,
    /// CPU time of this process (both ends of the transfer).
    cpu: Duration,
    /// CPU time of everything else on the machine meanwhile: other
    /// processes, and kernel work not charged to us (writeback).
    others: Duration,
}

/// Runs `f`, which returns its own wall time, and adds the process CPU
/// time it took and what the rest of the machine used meanwhile.
fn measure(f: impl FnOnce() -> Duration) -> Run {
    let cpu = process_cpu();
    let busy = machine_busy();
    let wall = f();
    let cpu = process_cpu() - cpu;
    Run {
        wall,
        cpu,
        others: (machine_busy() - busy).saturating_sub(cpu),
    }
}

struct Primitives {
    seal: f64,
    open: f64,
    sha256: f64,
}

/// Single-core throughput, in MiB/s, of ring's ChaCha20-Poly1305 (seal
/// and open in place, one full upload frame at a time, as the session
/// does) and SHA-256, each over `BULK_MIB` MiB; best of three.
fn primitives() -> Primitives {
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
    let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &[7; 32]).unwrap());
    let frames = (BULK_MIB << 20) / (FRAME - 16);
    let bytes = (frames * (FRAME - 16)) as u64;
    let nonce = |i: usize| {
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&(i as u64).to_be_bytes());
        Nonce::assume_unique_for_key(n)
    };
    let mut bufs: Vec<Vec<u8>> = (0..4).map(|i| vec![i as u8; FRAME - 16]).collect();
    let best = |f: &mut dyn FnMut()| {
        (0..3)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .min()
            .unwrap()
    };
    let seal = best(&mut || {
        for i in 0..frames {
            let b = &mut bufs[i % 4];
            b.truncate(FRAME - 16);
            let tag = key
                .seal_in_place_separate_tag(nonce(i), Aad::from([0u8; 4]), b)
                .unwrap();
            b.extend_from_slice(tag.as_ref());
        }
    });
    // Open frames sealed with matching nonces.
    let sealed: Vec<Vec<u8>> = (0..4)
        .map(|i| {
            let mut b = vec![i as u8; FRAME - 16];
            key.seal_in_place_append_tag(nonce(i), Aad::from([0u8; 4]), &mut b)
                .unwrap();
            b
        })
        .collect();
    let open = best(&mut || {
        for i in 0..frames {
            let b = &mut bufs[i % 4];
            b.clear();
            b.extend_from_slice(&sealed[i % 4]);
            key.open_in_place(nonce(i % 4), Aad::from([0u8; 4]), b)
                .unwrap();
        }
    });
    // The open loop also copies each frame in; take that copy out.
    let copy = best(&mut || {
        for i in 0..frames {
            let b = &mut bufs[i % 4];
            b.clear();
            b.extend_from_slice(&sealed[i % 4]);
            std::hint::black_box(&b);
        }
    });
    let sha = best(&mut || {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        for i in 0..frames {
            ctx.update(&bufs[i % 4][..FRAME - 16]);
        }
        std::hint::black_box(ctx.finish());
    });
    Primitives {
        seal: mib_per_s(bytes, seal),
        open: mib_per_s(bytes, open.saturating_sub(copy)),
        sha256: mib_per_s(bytes, sha),
    }
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
/// stream, written to a file in the same directory and fsynced. Returns
/// the total time and the time of the final fsync.
fn plain_copy(src: &Path, dst: &Path) -> (Duration, Duration) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let dst = dst.to_path_buf();
    let receiver = std::thread::Builder::new()
        .name("plain-recv".into())
        .spawn(move || {
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
            let t = Instant::now();
            out.sync_all().unwrap();
            let fsync = t.elapsed();
            s.write_all(b"k").unwrap();
            fsync
        })
        .unwrap();
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
    (d, receiver.join().unwrap())
}

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let dir: PathBuf = std::env::temp_dir().join(format!("keel-mgmt-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("state");
    let handle = serve(
        TcpListener::bind("127.0.0.1:0").unwrap(),
        AgentSettings::new(&state),
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
        pairing_code: handle.pairing_code(),
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

    // 3. What the upload must pay on top of a plain copy, per byte, on
    //    one core of this machine.
    let prim = primitives();
    println!(
        "one core: ChaCha20-Poly1305 seal {:>7.1} MiB/s, open {:>7.1} MiB/s; SHA-256 {:>7.1} MiB/s  (ring, {} KiB frames, in place)",
        prim.seal,
        prim.open,
        prim.sha256,
        FRAME / 1024
    );

    // 4. Bulk upload vs a plain TCP copy of the same file, interleaved
    //    round by round so that load from elsewhere hits both alike.
    let src = dir.join("bulk.bin");
    make_file(&src, BULK_MIB);
    let bytes = (BULK_MIB as u64) << 20;
    let target = UploadFile {
        remote: "images/bench-bulk.bin",
        replace: false,
    };

    let mut chunks = vec![MAX_CHUNK];
    if MAX_CHUNK != 64 * 1024 {
        chunks.push(64 * 1024);
    }
    let mut plain = Vec::new();
    let mut plain_fsync = Vec::new();
    let mut uploads: Vec<Vec<Run>> = vec![Vec::new(); chunks.len()];
    for _ in 0..ROUNDS {
        let mut fsync = Duration::ZERO;
        plain.push(measure(|| {
            let (d, f) = plain_copy(&src, &dir.join("plain-copy.bin"));
            fsync = f;
            d
        }));
        plain_fsync.push(fsync);
        for (i, &chunk) in chunks.iter().enumerate() {
            uploads[i].push(measure(|| {
                // What keelctl does: one pass, hashing while sending. A
                // new file each time: replacing one asks init whether a
                // guest uses it, and this agent has no init.
                let _ = std::fs::remove_file(state.join("uploads/images/bench-bulk.bin"));
                let f = File::open(&src).unwrap();
                let t = Instant::now();
                let done = c.upload_file(&target, &f, chunk, &mut |_| {}).unwrap();
                assert_eq!(done.data, bytes);
                t.elapsed()
            }));
        }
    }
    let plain_wall = median(plain.iter().map(|r| r.wall).collect());
    let plain_cpu = median(plain.iter().map(|r| r.cpu).collect());
    let fsync = median(plain_fsync);
    let plain_rate = mib_per_s(bytes, plain_wall);
    println!(
        "plain TCP copy baseline:  {:>8.1} MiB/s  ({BULK_MIB} MiB file -> loopback -> file + fsync, median of {ROUNDS}: {:.3} s of which fsync {:.3} s, {:.2} CPU s)",
        plain_rate,
        plain_wall.as_secs_f64(),
        fsync.as_secs_f64(),
        plain_cpu.as_secs_f64(),
    );
    for (runs, chunk) in uploads.iter().zip(&chunks) {
        let wall = median(runs.iter().map(|r| r.wall).collect());
        let cpu = median(runs.iter().map(|r| r.cpu).collect());
        let rate = mib_per_s(bytes, wall);
        let mut ratios: Vec<f64> = runs
            .iter()
            .zip(&plain)
            .map(|(u, p)| p.wall.as_secs_f64() / u.wall.as_secs_f64())
            .collect();
        ratios.sort_by(f64::total_cmp);
        println!(
            "upload ({:>3} KiB chunks):  {:>8.1} MiB/s  ({BULK_MIB} MiB, hashed while sent, encrypted, verified, fsynced, median of {ROUNDS}: {:.3} s, {:.2} CPU s; ratio to plain {:.2}x (per-round median {:.2}x, range {:.2}-{:.2}), goal >= 0.80x)",
            chunk / 1024,
            rate,
            wall.as_secs_f64(),
            cpu.as_secs_f64(),
            rate / plain_rate,
            ratios[ratios.len() / 2],
            ratios[0],
            ratios[ratios.len() - 1],
        );
    }

    // 5. The ceiling: both ends share this machine's cores, and the
    //    upload must do the plain copy's work (its measured CPU time) plus
    //    seal, open and SHA-256 every byte. Even perfectly parallel, it
    //    cannot take less than that CPU time spread over the cores it
    //    gets, and it is not expected to beat the plain copy (which could
    //    start writeback early too). Given twice: on idle cores, and on
    //    the cores the rest of the machine left free during the uploads.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mib = BULK_MIB as f64;
    let crypto = mib / prim.seal + mib / prim.open + mib / prim.sha256;
    let work = plain_cpu.as_secs_f64() + crypto;
    let plain_s = plain_wall.as_secs_f64();
    let ceiling = |free_cores: f64| plain_s.max(work / free_cores.max(0.1));
    let idle = ceiling(cores as f64);
    println!(
        "ceiling on {cores} idle cores:  {:>8.1} MiB/s  (ratio {:.2}x: plain copy's {:.2} CPU s + {:.2} CPU s of seal/open/SHA-256 = {:.2} s on {cores} cores, and no faster than the plain copy)",
        mib / idle,
        plain_s / idle,
        plain_cpu.as_secs_f64(),
        crypto,
        work / cores as f64,
    );
    if let Some(runs) = uploads.first() {
        let wall = median(runs.iter().map(|r| r.wall).collect()).as_secs_f64();
        let cpu = median(runs.iter().map(|r| r.cpu).collect()).as_secs_f64();
        let others = median(runs.iter().map(|r| r.others).collect()).as_secs_f64() / wall;
        let plain_others = median(plain.iter().map(|r| r.others).collect()).as_secs_f64() / plain_s;
        let loaded = ceiling(cores as f64 - others);
        println!(
            "ceiling under this load:  {:>8.1} MiB/s  (ratio {:.2}x: the rest of the machine, kernel writeback included, used {:.2} cores during the uploads, {:.2} during the plain copies)",
            mib / loaded,
            plain_s / loaded,
            others,
            plain_others,
        );
        println!(
            "  the upload used {:.2} CPU s (plain copy + crypto: {:.2}), {:.2} of {cores} cores over its {:.2} s",
            cpu,
            work,
            cpu / wall,
            wall,
        );
    }
    // 6. A sparse image: only its data is sent, and it lands sparse; the
    //    holes cost hashing zeros on both ends, nothing on the wire.
    let sparse = dir.join("sparse.img");
    let logical = 4 * bytes;
    {
        let f = File::create(&sparse).unwrap();
        f.set_len(logical).unwrap();
        let mut src = File::open(&src).unwrap();
        let mut block = vec![0u8; 1 << 20];
        for i in 0..BULK_MIB as u64 / 4 {
            src.read_exact(&mut block).unwrap();
            // Four 1 MiB pieces of data every 16 MiB.
            let at = (i / 4) * (16 << 20) + (i % 4) * (1 << 20);
            std::os::unix::fs::FileExt::write_all_at(&f, &block, at).unwrap();
        }
        f.sync_all().unwrap();
    }
    let f = File::open(&sparse).unwrap();
    let target = UploadFile {
        remote: "images/bench-sparse.img",
        replace: false,
    };
    let t = Instant::now();
    let done = c.upload_file(&target, &f, MAX_CHUNK, &mut |_| {}).unwrap();
    let wall = t.elapsed();
    println!(
        "sparse upload:            {:>8.1} MiB/s of file  ({} MiB holding {} MiB of data: {:.3} s, {:.1} MiB on the wire)",
        mib_per_s(logical, wall),
        logical >> 20,
        done.data >> 20,
        wall.as_secs_f64(),
        done.wire as f64 / (1 << 20) as f64,
    );
    drop(c);
    drop(handle);
    let _ = std::fs::remove_dir_all(&dir);
}
