# Keel: `make run` boots the appliance in QEMU, `make test` runs every test.
# Both start from a fresh Debian 12 machine as root: `make deps` installs
# what is missing, and nothing is downloaded from outside Debian and crates.io.

SHELL := /bin/bash
.DEFAULT_GOAL := run

OUT       := out
TARGET    := x86_64-unknown-linux-gnu
# Appliance binaries are static so the initramfs needs no shared libraries.
BIN_DIR   := target/$(TARGET)/release
APPLIANCE_BINS := keel-init keel-agent keel-vmm
# Static binaries for the Linux-guest test bed (QEMU TCG, see ovmf-tests/tests/linux_guest.rs).
TESTBED_BINS := keel-vmm keel-testbed keel-test-guest
KERNEL    := $(OUT)/kernel/bzImage
OVMF_CODE := /usr/share/OVMF/OVMF_CODE_4M.fd
# The demo guest's spec, shipped in the image; `make run` seeds it on the ESP.
DEMO_SPEC := rootfs/initramfs/usr/share/keel/demo/demo.toml
OVMF_VARS := /usr/share/OVMF/OVMF_VARS_4M.fd
# Reproducible builds: every timestamp in the image is the last commit's.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
export SOURCE_DATE_EPOCH

DEBIAN_PACKAGES := qemu-system-x86 ovmf linux-source-6.1 xorriso mtools dosfstools \
	e2fsprogs e2fsck-static systemd-boot-efi sbsigntool busybox-static binutils make gcc libc6-dev \
	flex bison bc libelf-dev libssl-dev cpio zstd xz-utils python3 git dnsmasq-base acpica-tools \
	mmdebstrap qemu-utils xfsprogs btrfs-progs util-linux python3-yaml openssh-client

.PHONY: all run test test-existing-guests deps kernel debian-guest binaries image install size check bench soak fuzz clean

all: image

## deps: install missing Debian packages (idempotent) and fetch crates.
# Two rounds: installing one package can remove another that conflicts
# with it (bookworm's qemu-system-x86 removes a backported qemu-utils), and
# the second round installs the version that fits. Then all must be there.
deps:
	@missing_packages() { for p in $(DEBIAN_PACKAGES); do \
		dpkg-query -W -f '$${Status}' $$p 2>/dev/null | grep -q "ok installed" || echo $$p; \
	done; }; \
	updated=""; for round in 1 2; do \
		missing=$$(missing_packages | tr '\n' ' '); \
		[ -n "$$missing" ] || break; \
		echo "deps: installing $$missing"; \
		[ -n "$$updated" ] || apt-get update -qq; updated=1; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing || exit 1; \
	done; \
	missing=$$(missing_packages | tr '\n' ' '); \
	if [ -n "$$missing" ]; then echo "error: deps: still missing: $$missing" >&2; exit 1; fi; \
	[ -n "$$updated" ] || echo "deps: all Debian packages present"
	@command -v cargo >/dev/null || { echo "error: cargo is missing; install a Rust toolchain (rustup)" >&2; exit 1; }
	@cargo fetch --locked -q 2>/dev/null || cargo fetch -q

## kernel: build the Keel kernel (cached in /var/cache/keel by source version + fragment).
kernel: deps
	kernel-config/build.sh $(OUT)/kernel

## debian-guest: the Debian 12 guest of the test bed (root disk, Debian's kernels and initrds; mmdebstrap, cached in /var/cache/keel by recipe).
debian-guest: deps
	testbed/debian/build.sh $(OUT)/debian

## binaries: the static release binaries for the image and the test bed.
binaries: deps
	CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static" \
		cargo build --release --locked --target $(TARGET) -p keel-init -p keel-mgmt -p keel-vmm -p keel-testbed -p keel-demo-guest -p keel-guest-loader

## image: out/keel.img (GPT disk for USB sticks) and out/keel.iso (hybrid ISO).
image: kernel binaries
	cargo run --release --locked -q -p keel-image -- \
		--kernel $(KERNEL) $(addprefix --binary $(BIN_DIR)/,$(APPLIANCE_BINS)) \
		--demo-guest $(BIN_DIR)/keel-demo-guest --loader $(BIN_DIR)/keel-loader \
		--rootfs rootfs --out $(OUT)

## install: put keelctl on PATH ($(PREFIX)/bin, default /usr/local/bin).
PREFIX ?= /usr/local
install: binaries
	install -D -m 0755 $(BIN_DIR)/keelctl $(DESTDIR)$(PREFIX)/bin/keelctl
	@echo "installed $(DESTDIR)$(PREFIX)/bin/keelctl"

## run: boot the appliance in QEMU (UEFI, TCG with nested virtualisation).
run: image install
	@mkdir -p $(OUT)/run
	@cp $(OVMF_VARS) $(OUT)/run/OVMF_VARS.fd
	@[ -f $(OUT)/run/disk.img ] && [ $(OUT)/run/disk.img -nt $(OUT)/keel.img ] || { \
		cp --sparse=always $(OUT)/keel.img $(OUT)/run/disk.img && \
		truncate -s 2G $(OUT)/run/disk.img && \
		mmd -D s -i $(OUT)/run/disk.img@@1M ::keel/guests && \
		mcopy -D o -i $(OUT)/run/disk.img@@1M $(DEMO_SPEC) ::keel/guests/demo.toml && \
		{ cat rootfs/esp/keel/host.toml; printf '\n[console]\nguests = true\n'; } > $(OUT)/run/host.toml && \
		mcopy -D o -i $(OUT)/run/disk.img@@1M $(OUT)/run/host.toml ::keel/host.toml; }
	@echo "The demo guest is seeded on the ESP (keel/guests/demo.toml) and starts at boot;"
	@echo "host.toml there copies guest consoles to this console ([console] guests = true)."
	@echo "Booting Keel in QEMU (serial console below). Quit: Ctrl-A then X."
	@echo "The agent port 7444 is forwarded to 127.0.0.1:7444. In another terminal on this"
	@echo "machine (keelctl is installed in $(PREFIX)/bin), pair with the code the console shows:"
	@echo "  keelctl keygen && keelctl pair 127.0.0.1 CODE && export KEEL_HOST=127.0.0.1"
	qemu-system-x86_64 -machine q35 -accel tcg -cpu max -smp 2 -m 2048 \
		-drive if=pflash,format=raw,unit=0,readonly=on,file=$(OVMF_CODE) \
		-drive if=pflash,format=raw,unit=1,file=$(OUT)/run/OVMF_VARS.fd \
		-device qemu-xhci -drive if=none,id=stick,format=raw,file=$(OUT)/run/disk.img \
		-device usb-storage,drive=stick,bootindex=1 \
		-nic user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:7444-:7444 \
		-display none -serial mon:stdio

## test: everything above, then every test (unit, integration, image boots).
test: image debian-guest
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -q -- -D warnings
	set -o pipefail; cargo test --workspace --locked 2>&1 | tee $(OUT)/test.log
	@awk '/^test result:/ {p += $$4; f += $$6} END {printf "%d passed, %d failed\n", p, f}' $(OUT)/test.log

## test-existing-guests: the appliance end-to-end test of a Xen guest imported with keelctl import xen and a cloud image with cloud-init and an ssh login (ignored by `make test`: flaky under nested TCG).
test-existing-guests: image debian-guest
	cargo test --locked -p keel-ovmf-tests --test existing_guests -- --ignored --nocapture

## size: kernel, initramfs, image and ISO sizes.
size: image
	@for f in $(KERNEL) $(OUT)/initramfs.cpio.zst $(OUT)/keel.efi $(OUT)/keel.img $(OUT)/keel.iso; do \
		printf '%-26s %8.2f MiB\n' "$$f" "$$(echo "$$(stat -c %s $$f) / 1048576" | bc -l)"; done
	@printf '%-26s %8.2f MiB  (zstd -19 of the ISO, what a download would be)\n' "keel.iso compressed" \
		"$$(echo "$$(zstd -19 -T0 -c $(OUT)/keel.iso | wc -c) / 1048576" | bc -l)"
	@printf '%-26s %8.2f MiB  (allocated blocks of the sparse disk image)\n' "keel.img on disk" \
		"$$(echo "$$(du -B1 $(OUT)/keel.img | cut -f1) / 1048576" | bc -l)"

## check: formatting and lints only.
check:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

## bench: appliance boot and guest start as an operator sees them; keel-vmm guest boot/memory/socket and guest network throughput (TCG test bed); exits and virtio-blk (host KVM); management channel handshake, round trip and upload.
bench: image
	cargo bench --locked -p keel-vmm --bench devices
	cargo bench --locked -p keel-mgmt --bench mgmt
	cargo bench --locked -p keel-ovmf-tests --bench boot
	cargo bench --locked -p keel-ovmf-tests --bench vmm_guest
	cargo bench --locked -p keel-ovmf-tests --bench net_guest
	cargo bench --locked -p keel-ovmf-tests --bench appliance

## soak: SOAK_CYCLES (default 100) boot-and-reboot cycles of a Linux guest under keel-vmm in the TCG test bed, each watched for a hang (SOAK_TRANSPORT=pci|mmio).
soak: image
	cargo bench --locked -p keel-ovmf-tests --bench soak

## fuzz: every cargo-fuzz target (nightly), FUZZ_SECONDS each: the management-protocol decoders, keel-vmm's virtio devices and transports; prints executions and crashes per target, fails on a crash.
FUZZ_SECONDS ?= 30
fuzz: deps
	scripts/fuzz.sh $(FUZZ_SECONDS) mgmt-agent/fuzz vmm/fuzz

clean:
	rm -rf $(OUT) target
