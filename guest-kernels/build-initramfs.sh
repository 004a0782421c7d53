#!/usr/bin/env bash
# Builds the default guest's user space from source (called by build.sh):
#   init             freestanding init that greets and ends the VM (init.c)
#   idle             freestanding init that never ends and makes no system
#                    call (idle.c), for guests that must stay up
#   disktest         freestanding init for the root-disk tests (disktest.c),
#                    on the root image only
#   initramfs.cpio   uncompressed initramfs holding init and idle, as /init
#                    and /idle
# with the gen_init_cpio of the kernel directory given as $1. Cached under
# ${VMM_GUEST_CACHE:-$HOME/.cache/vmm-guest}/initramfs-<hash of this script,
# the sources, the list and the compiler version>/. Prints INITRAMFS_DIR=PATH.
set -euo pipefail

kernel_dir=${1:?usage: build-initramfs.sh KERNEL_DIR}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache_root=${VMM_GUEST_CACHE:-$HOME/.cache/vmm-guest}
log() { echo "guest-kernels: $*" >&2; }

key=$( {
    cd "$here"
    for f in build-initramfs.sh sys.h init.c idle.c disktest.c initramfs.list; do
        echo "file $f"
        cat "$f"
    done
    gcc --version | head -1
    echo "packer $(basename "$kernel_dir")"
} | sha256sum | cut -c1-16)
out=$cache_root/initramfs-$key
if [[ ! -f $out/initramfs.cpio ]]; then
    work=$(mktemp -d "$cache_root/initramfs-build.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    for prog in init idle disktest; do
        gcc -static -nostdlib -ffreestanding -O2 -fno-stack-protector -fno-pie -no-pie \
            -Wl,--build-id=none -o "$work/$prog" "$here/$prog.c"
    done
    sed -e "s#@INIT@#$work/init#" -e "s#@IDLE@#$work/idle#" \
        "$here/initramfs.list" > "$work/initramfs.list"
    "$kernel_dir/gen_init_cpio" "$work/initramfs.list" > "$work/initramfs.cpio"
    mkdir -p "$out.tmp"
    mv "$work/init" "$work/idle" "$work/disktest" "$work/initramfs.cpio" "$out.tmp/"
    rm -rf "$out"
    mv "$out.tmp" "$out"
    log "built initramfs: $out"
fi
echo "INITRAMFS_DIR=$out"
