#!/usr/bin/env bash
# Builds the Debian 12 guest of the test bed with mmdebstrap: an ext4 root
# disk (minbase, systemd, initramfs-tools, systemd-networkd DHCP, Debian's
# linux-image-cloud-amd64 and linux-image-amd64, and cloud-init with
# openssh-server, as a cloud image has them) whose report unit prints one
# KEEL-DEBIAN line on ttyS0 at multi-user.target and powers off, unless
# the kernel command line says keel.stay (no login prompt on ttyS0, which
# the report shares). Each kernel's
# vmlinuz and initrd.img (made by initramfs-tools inside the image) are
# taken out beside the disk, for keel-vmm to boot as Debian made them.
# The result is cached outside the repo, keyed by this script and the
# files under rootfs/, so a second build is a copy.
#
# usage: testbed/debian/build.sh OUT_DIR
# KEEL_DEBIAN_MIRROR and KEEL_DEBIAN_SECURITY override the archives.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: build.sh OUT_DIR}
cache=${KEEL_CACHE:-/var/cache/keel}
mirror=${KEEL_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${KEEL_DEBIAN_SECURITY:-http://deb.debian.org/debian-security}
suite=bookworm
packages=systemd,systemd-sysv,udev,initramfs-tools,zstd,linux-image-cloud-amd64,linux-image-amd64,cloud-init,openssh-server
# Each flavour's name, then the glob that ends its kernel release (the
# generic one's ABI number stands right before -amd64).
flavours=("cloud -cloud-amd64" "generic [0-9]-amd64")

command -v mmdebstrap >/dev/null || { echo "error: mmdebstrap is missing; run 'make deps'" >&2; exit 1; }
key=$( { echo "$suite $packages"; cat "$0"; (cd "$here/rootfs" && find . -type f | LC_ALL=C sort | xargs sha256sum); } \
    | sha256sum | cut -c1-16)
result=$cache/debian/$key
mkdir -p "$out"

if [ -f "$result/root.img" ]; then
    echo "debian: cached build $key"
else
    echo "debian: building $key (mmdebstrap $suite); this takes several minutes"
    started=$(date +%s)
    work=$cache/debian/$key.tmp
    rm -rf "$work"
    mkdir -p "$work"
    tree=$work/tree
    # Small: no recommends (mmdebstrap's default), no docs, man pages or
    # translations, apt's lists and archives removed by mmdebstrap.
    mmdebstrap --mode=root --variant=minbase --include="$packages" \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/info/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --customize-hook="sync-in $here/rootfs /" \
        --customize-hook='chroot "$1" systemctl enable systemd-networkd.service keel-debian-report.service' \
        --customize-hook='chroot "$1" systemctl mask serial-getty@ttyS0.service' \
        --customize-hook='rm -f "$1"/etc/machine-id "$1"/var/lib/dbus/machine-id; touch "$1"/etc/machine-id' \
        "$suite" "$tree" \
        "deb $mirror $suite main" \
        "deb $mirror $suite-updates main" \
        "deb $security $suite-security main"

    : > "$work/kernels"
    for flavour in "${flavours[@]}"; do
        read -r name suffix <<<"$flavour"
        vmlinuz=$(ls "$tree"/boot/vmlinuz-*$suffix | sort -V | tail -n1)
        release=${vmlinuz##*/vmlinuz-}
        [ -f "$tree/boot/initrd.img-$release" ] || { echo "error: initramfs-tools made no initrd for $release" >&2; exit 1; }
        cp "$vmlinuz" "$work/vmlinuz-$name"
        cp "$tree/boot/initrd.img-$release" "$work/initrd.img-$name"
        echo "$name $release" >> "$work/kernels"
    done

    # An ext4 image with room to boot and write logs in: the tree plus a
    # quarter, at least 256 MiB more. Sparse, so only the tree is stored.
    used_mib=$(du -sm "$tree" | cut -f1)
    size_mib=$(( used_mib + (used_mib / 4 > 256 ? used_mib / 4 : 256) ))
    truncate -s "${size_mib}M" "$work/root.img"
    mkfs.ext4 -q -F -L keel-debian -m 0 -d "$tree" "$work/root.img"
    rm -rf "$tree"
    echo "built in $(( $(date +%s) - started )) s, tree ${used_mib} MiB, image ${size_mib} MiB" > "$work/build.log"
    rm -rf "$result"
    mv "$work" "$result"
fi
# The small files are copied; the disk is linked (tests attach it with
# snapshot=on, so nothing writes it).
for name in vmlinuz-cloud initrd.img-cloud vmlinuz-generic initrd.img-generic kernels; do
    cp "$result/$name" "$out/$name.tmp" && mv "$out/$name.tmp" "$out/$name"
done
ln -sfn "$result/root.img" "$out/root.img"
echo "debian: $out/root.img ($(du -m --apparent-size "$result/root.img" | cut -f1) MiB, $(du -m "$result/root.img" | cut -f1) MiB stored); $(tr '\n' ' ' < "$out/kernels")"
