//! Choosing between KVM and TCG for the QEMU boots.
//!
//! This machine's /dev/kvm is a nested shadow-paging KVM (kvm_pvm) on which
//! Linux guests stop with emulation failures (see the design page), so the
//! image tests use TCG there. On a host with real hardware KVM they use it.

use std::path::Path;

/// The QEMU accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

/// The accelerator picked and why.
#[derive(Debug, Clone)]
pub struct AccelChoice {
    pub accel: Accel,
    pub reason: String,
}

impl Accel {
    /// QEMU arguments for this accelerator. TCG uses `-cpu max`, which
    /// offers SVM so the appliance's own KVM works inside.
    pub fn qemu_args(self) -> Vec<&'static str> {
        match self {
            Accel::Kvm => vec!["-accel", "kvm", "-cpu", "host"],
            Accel::Tcg => vec!["-accel", "tcg,thread=multi", "-cpu", "max"],
        }
    }
}

/// Picks the accelerator: `KEEL_QEMU_ACCEL=kvm|tcg` wins; otherwise KVM if
/// /dev/kvm exists and is not kvm_pvm, else TCG.
pub fn choose() -> AccelChoice {
    match std::env::var("KEEL_QEMU_ACCEL").as_deref() {
        Ok("kvm") => {
            return AccelChoice {
                accel: Accel::Kvm,
                reason: "KEEL_QEMU_ACCEL=kvm".into(),
            }
        }
        Ok("tcg") => {
            return AccelChoice {
                accel: Accel::Tcg,
                reason: "KEEL_QEMU_ACCEL=tcg".into(),
            }
        }
        _ => {}
    }
    if !Path::new("/dev/kvm").exists() {
        return AccelChoice {
            accel: Accel::Tcg,
            reason: "/dev/kvm is absent".into(),
        };
    }
    if Path::new("/sys/module/kvm_pvm").exists() {
        return AccelChoice {
            accel: Accel::Tcg,
            reason: "host KVM is kvm_pvm, which cannot run Linux guests (emulation failures)"
                .into(),
        };
    }
    AccelChoice {
        accel: Accel::Kvm,
        reason: "/dev/kvm is hardware KVM".into(),
    }
}
