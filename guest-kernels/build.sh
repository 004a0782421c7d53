#!/usr/bin/env bash
# Builds the default guest, each part cached outside the repository under
# ${VMM_GUEST_CACHE:-$HOME/.cache/vmm-guest} and keyed by a hash of its own
# inputs, so a change rebuilds only what it touches:
#   build-kernel.sh     the kernel (about 8 minutes on 2 cores on a miss)
#   build-initramfs.sh  init, idle and the initramfs (a second)
#   build-rootfs.sh     the ext4 root disk image with the same programs
# The guest directory guest-<hash>/ links them together (vmlinux, bzImage,
# config, initramfs.cpio, init, idle, rootfs.ext4), and the link `current`
# points at it: that is where `vmm run` looks for its default guest.
# guest-kernels/current (not in git) points there too, for examples/.
#
# Prints KEY=PATH lines on stdout (VMLINUX, BZIMAGE, INITRAMFS, ROOTFS,
# GUEST_DIR); progress goes to stderr.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache_root=${VMM_GUEST_CACHE:-$HOME/.cache/vmm-guest}

kernel_dir=$("$here/build-kernel.sh" | sed -n 's/^KERNEL_DIR=//p')
initramfs_dir=$("$here/build-initramfs.sh" "$kernel_dir" | sed -n 's/^INITRAMFS_DIR=//p')
rootfs=$("$here/build-rootfs.sh" "$initramfs_dir")

key=$(printf '%s\n' "$kernel_dir" "$initramfs_dir" "$rootfs" | sha256sum | cut -c1-16)
guest_dir=$cache_root/guest-$key
if [[ ! -d $guest_dir ]]; then
    mkdir -p "$guest_dir.tmp"
    for f in vmlinux bzImage config; do
        ln -sfn "$kernel_dir/$f" "$guest_dir.tmp/$f"
    done
    for f in init idle initramfs.cpio; do
        ln -sfn "$initramfs_dir/$f" "$guest_dir.tmp/$f"
    done
    ln -sfn "$rootfs" "$guest_dir.tmp/rootfs.ext4"
    mv "$guest_dir.tmp" "$guest_dir"
fi
ln -sfn "$(basename "$guest_dir")" "$cache_root/current"
# The same from the repository, for the config files in examples/ (their
# paths are relative to the repository root, where they are run from).
ln -sfn "$cache_root/current" "$here/current"
echo "VMLINUX=$guest_dir/vmlinux"
echo "BZIMAGE=$guest_dir/bzImage"
echo "INITRAMFS=$guest_dir/initramfs.cpio"
echo "ROOTFS=$guest_dir/rootfs.ext4"
echo "GUEST_DIR=$guest_dir"
