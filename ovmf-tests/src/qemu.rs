//! One QEMU process booting a Keel image under OVMF.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::accel::{self, Accel};

const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// How the image is attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootMedia {
    /// A USB stick on an xHCI controller: the documented way to install.
    UsbStick,
    /// A CD-ROM on the AHCI controller: BMC virtual media.
    Cdrom,
    /// The server's own boot disk (virtio-blk): where guests' disks are
    /// served from at disk speed rather than through emulated USB.
    BootDisk,
    /// No firmware and no disk: QEMU loads `image` as the kernel with the
    /// given initramfs and command line. The baseline for firmware overhead.
    DirectKernel { initrd: PathBuf, cmdline: String },
}

/// What to boot.
#[derive(Debug, Clone)]
pub struct QemuOptions {
    pub image: PathBuf,
    pub media: BootMedia,
    pub memory_mib: u32,
    pub cpus: u32,
    /// Exit instead of rebooting, so a reboot request ends the test run.
    pub no_reboot: bool,
    /// Forward this host port on 127.0.0.1 to the agent's port 7444 (the
    /// appliance always gets a NIC on QEMU's user network).
    pub agent_port: Option<u16>,
    /// More forwards from 127.0.0.1 to the appliance: (host port, the
    /// appliance's port), e.g. to a guest's own port forward.
    pub forwards: Vec<(u16, u16)>,
    /// The NIC's MAC address; QEMU's default is 52:54:00:12:34:56.
    pub nic_mac: Option<String>,
    /// Files written into the private copy's ESP before boot, as an
    /// operator edits the stick: (path in the ESP, content).
    pub esp_files: Vec<(String, String)>,
    /// Raw images attached as virtio-blk-pci disks with a serial each:
    /// (image, serial). Writes go to a temporary overlay (`snapshot=on`),
    /// so the image stays as built.
    pub snapshot_disks: Vec<(PathBuf, String)>,
    /// Grow the private copy of the image to this size, as writing it to
    /// a larger stick does (init then grows KEEL-DATA into the space).
    pub disk_size_mib: Option<u64>,
}

/// Where the ESP starts in keel.img (the first partition, 1 MiB aligned).
const ESP_OFFSET: &str = "@@1M";

impl QemuOptions {
    pub fn new(image: PathBuf, media: BootMedia) -> Self {
        QemuOptions {
            image,
            media,
            memory_mib: 1024,
            cpus: 2,
            no_reboot: true,
            agent_port: None,
            forwards: Vec::new(),
            nic_mac: None,
            esp_files: Vec::new(),
            snapshot_disks: Vec::new(),
            disk_size_mib: None,
        }
    }
}

/// A running QEMU. Dropping it kills the process, so a failing test never
/// leaves one behind.
pub struct Qemu {
    child: Option<Child>,
    serial: Arc<Mutex<String>>,
    monitor: PathBuf,
    workdir: PathBuf,
    pub accel: Accel,
    started: Instant,
    status: Option<ExitStatus>,
}

impl Qemu {
    /// Starts QEMU with a fresh copy of the OVMF variables and the image.
    pub fn start(name: &str, options: &QemuOptions) -> Qemu {
        let choice = accel::choose();
        eprintln!(
            "[{name}] accelerator: {:?} ({})",
            choice.accel, choice.reason
        );
        let workdir = std::env::temp_dir().join(format!("keel-ovmf-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&workdir);
        std::fs::create_dir_all(&workdir).expect("create the test's work directory");
        let vars = workdir.join("OVMF_VARS.fd");
        std::fs::copy(OVMF_VARS, &vars).expect("copy OVMF_VARS (is the ovmf package installed?)");
        // Boot a private copy: the image in out/ stays pristine.
        let disk = workdir.join("disk.img");
        let status = Command::new("cp")
            .arg("--sparse=always")
            .arg(&options.image)
            .arg(&disk)
            .status()
            .expect("run cp");
        assert!(status.success(), "copy {} failed", options.image.display());
        if let Some(mib) = options.disk_size_mib {
            let copy = std::fs::OpenOptions::new()
                .write(true)
                .open(&disk)
                .expect("open the image's copy");
            copy.set_len(mib << 20).expect("grow the image's copy");
        }
        for (path, content) in &options.esp_files {
            let local = workdir.join("esp-file");
            std::fs::write(&local, content).expect("write the ESP file");
            let status = Command::new("mcopy")
                .args(["-o", "-i"])
                .arg(format!("{}{ESP_OFFSET}", disk.display()))
                .arg(&local)
                .arg(format!("::{path}"))
                .status()
                .expect("run mcopy (mtools; run `make deps`)");
            assert!(status.success(), "mcopy {path} into the ESP failed");
        }
        let monitor = workdir.join("monitor.sock");

        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-machine", "q35", "-nodefaults", "-display", "none"])
            .args(choice.accel.qemu_args())
            .args([
                "-m",
                &options.memory_mib.to_string(),
                "-smp",
                &options.cpus.to_string(),
            ])
            .arg("-drive")
            .arg(format!(
                "if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"
            ))
            .arg("-drive")
            .arg(format!(
                "if=pflash,format=raw,unit=1,file={}",
                vars.display()
            ))
            .args(["-serial", "stdio"])
            .arg("-monitor")
            .arg(format!("unix:{},server=on,wait=off", monitor.display()));
        match &options.media {
            BootMedia::UsbStick => {
                cmd.args(["-device", "qemu-xhci,id=xhci"])
                    .arg("-drive")
                    .arg(format!(
                        "if=none,id=stick,format=raw,file={}",
                        disk.display()
                    ))
                    .args(["-device", "usb-storage,bus=xhci.0,drive=stick,bootindex=1"]);
            }
            BootMedia::BootDisk => {
                cmd.arg("-drive")
                    .arg(format!(
                        "if=none,id=boot,format=raw,file={}",
                        disk.display()
                    ))
                    .args(["-device", "virtio-blk-pci,drive=boot,bootindex=1"]);
            }
            BootMedia::Cdrom => {
                cmd.arg("-drive")
                    .arg(format!(
                        "if=none,id=cd,format=raw,media=cdrom,readonly=on,file={}",
                        disk.display()
                    ))
                    .args(["-device", "ide-cd,drive=cd,bootindex=1"]);
            }
            BootMedia::DirectKernel { initrd, cmdline } => {
                // Under TCG, keel-testbed runs a scenario whose guest hung or
                // triple-faulted once more (see `testbed::retries`).
                let cmdline = match choice.accel {
                    Accel::Tcg => format!("{cmdline} keel.retry=1"),
                    Accel::Kvm => cmdline.clone(),
                };
                cmd.arg("-kernel")
                    .arg(&disk)
                    .arg("-initrd")
                    .arg(initrd)
                    .arg("-append")
                    .arg(cmdline);
            }
        }
        for (image, serial) in &options.snapshot_disks {
            cmd.arg("-drive")
                .arg(format!(
                    "if=none,id={serial},format=raw,snapshot=on,file={}",
                    image.display()
                ))
                .arg("-device")
                .arg(format!("virtio-blk-pci,drive={serial},serial={serial}"));
        }
        if options.no_reboot {
            cmd.arg("-no-reboot");
        }
        // The appliance expects a management NIC (it asks DHCP for an
        // address at boot); QEMU's user network provides one.
        if !matches!(options.media, BootMedia::DirectKernel { .. }) {
            let forward: String = options
                .agent_port
                .map(|port| (port, 7444))
                .iter()
                .chain(&options.forwards)
                .map(|(host, guest)| format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"))
                .collect();
            let mac = options
                .nic_mac
                .as_ref()
                .map(|mac| format!(",mac={mac}"))
                .unwrap_or_default();
            cmd.arg("-nic")
                .arg(format!("user,model=virtio-net-pci{mac}{forward}"));
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .expect("start qemu-system-x86_64 (run `make deps`)");

        let serial = Arc::new(Mutex::new(String::new()));
        let log_path = workdir.join("serial.log");
        if let Some(mut stdout) = child.stdout.take() {
            let serial = Arc::clone(&serial);
            std::thread::spawn(move || {
                let mut log = std::fs::File::create(log_path).ok();
                let mut buf = [0u8; 4096];
                while let Ok(n) = stdout.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if let Some(log) = log.as_mut() {
                        let _ = log.write_all(&buf[..n]);
                    }
                    if let Ok(mut s) = serial.lock() {
                        s.push_str(&String::from_utf8_lossy(&buf[..n]));
                    }
                }
            });
        }
        if let Some(mut stderr) = child.stderr.take() {
            let serial = Arc::clone(&serial);
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = stderr.read_to_string(&mut text);
                if !text.trim().is_empty() {
                    if let Ok(mut s) = serial.lock() {
                        s.push_str(&format!("\n[qemu stderr] {text}"));
                    }
                }
            });
        }
        Qemu {
            child: Some(child),
            serial,
            monitor,
            workdir,
            accel: choice.accel,
            started: Instant::now(),
            status: None,
        }
    }

    /// Everything the serial console has printed so far.
    pub fn serial(&self) -> String {
        self.serial.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Seconds since QEMU started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Waits until the console shows a line containing `needle`; returns that
    /// line. Panics with the whole console on timeout or early exit.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        self.wait_for_from(0, needle, timeout).0
    }

    /// As [`Qemu::wait_for`], looking only at console output from byte
    /// `from` on (e.g. after a reboot); also returns where that line ends.
    pub fn wait_for_from(
        &mut self,
        from: usize,
        needle: &str,
        timeout: Duration,
    ) -> (String, usize) {
        let deadline = Instant::now() + timeout;
        loop {
            let exited = self.try_exit();
            let text = self.serial();
            let tail = text.get(from..).unwrap_or("");
            if let Some((start, end)) = crate::find_line(tail, needle) {
                // A whole line, unless no more output can come.
                if let Some(end) =
                    end.or((exited.is_some() || Instant::now() > deadline).then_some(tail.len()))
                {
                    let line = tail[start..end].trim_end_matches('\r').to_string();
                    return (line, from + end);
                }
            }
            if let Some(status) = exited {
                panic!("QEMU exited ({status}) before {needle:?} appeared; console:\n{text}");
            }
            if Instant::now() > deadline {
                panic!("{needle:?} did not appear within {timeout:?}; console:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends a human-monitor command such as `system_powerdown`.
    pub fn monitor(&self, command: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut stream = loop {
            match UnixStream::connect(&self.monitor) {
                Ok(s) => break s,
                Err(err) if Instant::now() > deadline => {
                    panic!("cannot reach the QEMU monitor: {err}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        // Wait for the prompt, send the command, and wait for the next
        // prompt: by then QEMU has carried the command out.
        read_until_prompt(&mut stream);
        stream
            .write_all(format!("{command}\n").as_bytes())
            .expect("write to the QEMU monitor");
        read_until_prompt(&mut stream);
    }

    fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Some(child) = self.child.as_mut() {
                self.status = child.try_wait().ok().flatten();
            }
        }
        self.status
    }

    /// Waits for QEMU to exit by itself; `None` if it is still running at the deadline.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.try_exit() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// The directory with the serial log and the private disk copy.
    pub fn workdir(&self) -> &Path {
        &self.workdir
    }
}

/// Reads monitor output up to the next `(qemu) ` prompt, or until EOF or a
/// read timeout (the `quit` command closes the socket instead).
fn read_until_prompt(stream: &mut UnixStream) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            return;
        }
        seen.extend_from_slice(&buf[..n]);
        if seen.ends_with(b"(qemu) ") {
            return;
        }
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.status.is_none() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.workdir);
        } else {
            eprintln!("kept {} for inspection", self.workdir.display());
        }
    }
}
