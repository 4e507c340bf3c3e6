//! Loading the chosen kernel with `kexec_file_load(2)` (the kernel reads and
//! checks the files itself) and rebooting into it.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use nix::errno::Errno;
use nix::sys::reboot::{reboot, RebootMode};

#[derive(Debug, thiserror::Error)]
pub enum KexecError {
    #[error("cannot open the {what} {name}: {source}")]
    Open {
        what: &'static str,
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the command line has a NUL byte, which the kernel cannot take: {0:?}")]
    NulInCmdline(String),
    #[error("kexec_file_load refused the kernel {name}: {errno}: {why}")]
    Refused {
        name: String,
        errno: Errno,
        why: &'static str,
    },
    #[error("the reboot into the loaded kernel failed: {0}")]
    Reboot(Errno),
}

/// What a `kexec_file_load` error means for the user.
pub fn explain(errno: Errno, uki: bool) -> &'static str {
    match errno {
        Errno::ENOEXEC if uki => {
            "the kernel is a unified kernel image (UKI), which the Keel kernel cannot kexec; \
             the guest needs a plain kernel (bzImage) entry"
        }
        Errno::ENOEXEC => {
            "the file is not a kernel the Keel kernel can load (not an x86-64 bzImage, \
             or one too old for the 64-bit boot protocol)"
        }
        Errno::EKEYREJECTED => {
            "the kernel's signature was rejected by a key the Keel kernel trusts"
        }
        Errno::ENOKEY => "the kernel is not signed by a key the Keel kernel trusts",
        Errno::EBADMSG => "the kernel's signature is malformed",
        Errno::EPERM => "kexec is not permitted here (kernel.kexec_load_disabled or lockdown)",
        Errno::ENOSYS => "the Keel kernel was built without CONFIG_KEXEC_FILE",
        Errno::ENOMEM => "the guest has too little memory for the kernel and its initrd",
        Errno::EFBIG => "the kernel or the initrd is too large to load",
        Errno::EINVAL => "the kernel, the initrd or the command line was refused as invalid",
        Errno::EBUSY => "another kexec load is in progress",
        _ => "the kernel could not be loaded",
    }
}

fn open(what: &'static str, name: &str, path: &Path) -> Result<File, KexecError> {
    File::open(path).map_err(|source| KexecError::Open {
        what,
        name: name.to_string(),
        source,
    })
}

/// Loads `kernel` (named `name` in messages) with `initrd` and `cmdline`
/// as the kernel to boot next.
pub fn load(
    name: &str,
    kernel: &Path,
    initrd: Option<&Path>,
    cmdline: &str,
    uki: bool,
) -> Result<(), KexecError> {
    let kernel_file = open("kernel", name, kernel)?;
    let initrd_file = initrd
        .map(|p| open("initrd", &p.display().to_string(), p))
        .transpose()?;
    let cmdline =
        CString::new(cmdline).map_err(|_| KexecError::NulInCmdline(cmdline.to_string()))?;
    let (initrd_fd, flags) = match &initrd_file {
        Some(f) => (f.as_raw_fd(), 0),
        None => (-1, libc::KEXEC_FILE_NO_INITRAMFS),
    };
    let len = cmdline.as_bytes_with_nul().len();
    // SAFETY: kexec_file_load reads `len` bytes at the command line pointer,
    // which is a live NUL-terminated CString of exactly that length; the fds
    // are open for the whole call (or -1 with KEXEC_FILE_NO_INITRAMFS).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_kexec_file_load,
            kernel_file.as_raw_fd(),
            initrd_fd,
            len,
            cmdline.as_ptr(),
            libc::c_ulong::try_from(flags).unwrap_or_default(),
        )
    };
    if rc != 0 {
        let errno = Errno::last();
        return Err(KexecError::Refused {
            name: name.to_string(),
            errno,
            why: explain(errno, uki),
        });
    }
    Ok(())
}

/// Boots the loaded kernel; returns only on failure.
pub fn execute() -> KexecError {
    nix::unistd::sync();
    match reboot(RebootMode::RB_KEXEC) {
        Ok(never) => match never {},
        Err(e) => KexecError::Reboot(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_and_format_errors_are_explained() {
        assert!(explain(Errno::EKEYREJECTED, false).contains("signature"));
        assert!(explain(Errno::ENOEXEC, true).contains("unified kernel image"));
        assert!(explain(Errno::ENOEXEC, false).contains("bzImage"));
        assert!(explain(Errno::ENOSYS, false).contains("CONFIG_KEXEC_FILE"));
    }

    #[test]
    fn missing_files_and_nul_bytes_fail_before_the_syscall() {
        let err = load(
            "/boot/vmlinuz on UUID=x",
            Path::new("/nonexistent/vmlinuz"),
            None,
            "ro",
            false,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot open the kernel /boot/vmlinuz on UUID=x: "),
            "{err}"
        );
        let kernel = tempfile::NamedTempFile::new().unwrap();
        let err = load("k", kernel.path(), None, "a\0b", false).unwrap_err();
        assert!(matches!(err, KexecError::NulInCmdline(_)), "{err}");
    }
}
