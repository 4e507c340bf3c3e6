#!/usr/bin/env bash
# Builds the Keel kernel (bzImage with the EFI stub) from Debian's
# linux-source-6.1 with kernel-config/keel.config applied on tinyconfig.
# The result is cached outside the repo, keyed by the source package version,
# the fragment and this script, so a second build is a copy.
#
# usage: kernel-config/build.sh OUT_DIR
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: build.sh OUT_DIR}
cache=${KEEL_CACHE:-/var/cache/keel}
tarball=/usr/src/linux-source-6.1.tar.xz
fragment=$here/keel.config

[ -f "$tarball" ] || { echo "error: $tarball is missing; run 'make deps'" >&2; exit 1; }
version=$(dpkg-query -W -f '${Version}' linux-source-6.1)
key=$( { echo "$version"; cat "$fragment" "$0"; } | sha256sum | cut -c1-16)
result=$cache/kernel/$key
mkdir -p "$out"

if [ -f "$result/bzImage" ]; then
    echo "kernel: cached build $key (linux-source-6.1 $version)"
else
    echo "kernel: building $key (linux-source-6.1 $version); this takes several minutes"
    src=$cache/src/linux-source-6.1
    stamp=$cache/src/.extracted-$version
    if [ ! -f "$stamp" ]; then
        rm -rf "$cache/src"
        mkdir -p "$cache/src"
        tar -C "$cache/src" -xf "$tarball"
        touch "$stamp"
    fi
    # Fixed build identity so the same inputs give the same bzImage.
    export KBUILD_BUILD_TIMESTAMP="1970-01-01 00:00:00 UTC" KBUILD_BUILD_USER=keel KBUILD_BUILD_HOST=keel
    make -C "$src" ARCH=x86_64 -s tinyconfig
    "$src/scripts/kconfig/merge_config.sh" -m -O "$src" "$src/.config" "$fragment" >/dev/null
    make -C "$src" ARCH=x86_64 -s olddefconfig
    # Every option in the fragment must have survived dependency resolution.
    missing=0
    while IFS= read -r line; do
        case "$line" in
            CONFIG_*=*)
                grep -qxF "$line" "$src/.config" || { echo "error: $line did not survive olddefconfig (check its dependencies)" >&2; missing=1; } ;;
            "# CONFIG_"*" is not set")
                opt=${line#\# }; opt=${opt%% *}
                if grep -q "^$opt=" "$src/.config"; then echo "error: $opt is set but the fragment disables it" >&2; missing=1; fi ;;
        esac
    done < "$fragment"
    [ "$missing" = 0 ] || exit 1
    if grep -q '^CONFIG_MODULES=y' "$src/.config"; then echo "error: modules are enabled" >&2; exit 1; fi
    make -C "$src" ARCH=x86_64 -j"$(nproc)" -s bzImage
    mkdir -p "$result.tmp"
    cp "$src/arch/x86/boot/bzImage" "$result.tmp/bzImage"
    cp "$src/.config" "$result.tmp/config"
    cp "$src/vmlinux" "$result.tmp/vmlinux"
    rm -rf "$result"
    mv "$result.tmp" "$result"
fi
cp "$result/bzImage" "$out/bzImage.tmp" && mv "$out/bzImage.tmp" "$out/bzImage"
cp "$result/config" "$out/config"
ln -sf "$result/vmlinux" "$out/vmlinux"
echo "kernel: $out/bzImage ($(stat -c %s "$out/bzImage") bytes)"
