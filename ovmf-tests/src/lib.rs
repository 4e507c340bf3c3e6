//! Harness for booting Keel images in QEMU with OVMF.
