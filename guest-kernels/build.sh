#!/usr/bin/env bash
# Builds the default guest: the kernel and initramfs (build-kernel.sh, about
# 8 minutes on a cache miss) and an ext4 root disk image holding the same
# init (build-rootfs.sh, about a second). Both are cached outside the
# repository under ${VMM_GUEST_CACHE:-$HOME/.cache/vmm-guest}, each keyed by
# a hash of its own inputs. The link `current` points at the newest kernel
# directory, which also links the root image as rootfs.ext4; that is where
# `vmm run` looks for its default guest.
#
# Prints KEY=PATH lines on stdout (VMLINUX, BZIMAGE, INITRAMFS, ROOTFS,
# GUEST_DIR); progress goes to stderr.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache_root=${VMM_GUEST_CACHE:-$HOME/.cache/vmm-guest}

kernel_out=$("$here/build-kernel.sh")
guest_dir=$(sed -n 's/^GUEST_DIR=//p' <<<"$kernel_out")
rootfs=$("$here/build-rootfs.sh" "$guest_dir/init")
ln -sfn "$rootfs" "$guest_dir/rootfs.ext4"
ln -sfn "$(basename "$guest_dir")" "$cache_root/current"
echo "$kernel_out" | grep -v '^GUEST_DIR='
echo "ROOTFS=$guest_dir/rootfs.ext4"
echo "GUEST_DIR=$guest_dir"
