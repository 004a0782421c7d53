#!/usr/bin/env bash
# Builds the default guest's root disk: a 32 MiB ext4 image (mkfs.ext4 -d,
# from Debian's e2fsprogs) holding the init, idle and disktest programs
# of the initramfs directory given as $1 at /sbin/init, /sbin/idle and
# /sbin/disktest, with /dev,
# /proc and /sys. Cached under ${VMM_GUEST_CACHE:-$HOME/.cache/vmm-guest}
# /rootfs-<hash of this script, the programs and the e2fsprogs version>/.
# Prints the image's path.
#
# The image is the pristine copy: boot a copy of it (cp --sparse=always), as
# a guest that mounts it read-write changes it.
set -euo pipefail

progs=${1:?usage: build-rootfs.sh INITRAMFS_DIR}
cache_root=${VMM_GUEST_CACHE:-$HOME/.cache/vmm-guest}
log() { echo "guest-kernels: $*" >&2; }

if ! command -v mkfs.ext4 >/dev/null; then
    log "installing e2fsprogs"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq e2fsprogs >&2
fi
key=$( { cat "${BASH_SOURCE[0]}" "$progs/init" "$progs/idle" "$progs/disktest"; dpkg-query -W -f='${Version}' e2fsprogs; } | sha256sum | cut -c1-16)
out=$cache_root/rootfs-$key
if [[ ! -f $out/rootfs.ext4 ]]; then
    work=$(mktemp -d "$cache_root/rootfs-build.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    mkdir -p "$work/root/sbin" "$work/root/dev" "$work/root/proc" "$work/root/sys"
    install -m 0755 "$progs/init" "$work/root/sbin/init"
    install -m 0755 "$progs/idle" "$work/root/sbin/idle"
    install -m 0755 "$progs/disktest" "$work/root/sbin/disktest"
    truncate -s 32M "$work/rootfs.ext4"
    # A fixed UUID and hash seed keep the image the same from run to run.
    mkfs.ext4 -q -F -L vmm-root -U 6d6d7600-0000-4000-8000-000000000001 \
        -E hash_seed=6d6d7600-0000-4000-8000-000000000002 \
        -d "$work/root" "$work/rootfs.ext4" >&2
    mkdir -p "$out"
    mv "$work/rootfs.ext4" "$out/rootfs.ext4"
    log "built root image: $out/rootfs.ext4"
fi
echo "$out/rootfs.ext4"
