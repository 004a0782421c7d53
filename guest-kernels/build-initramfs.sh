#!/usr/bin/env bash
# Builds the default guest's user space (called by build.sh):
#   init             the guest's init (init.c): mounts /proc, /sys, /dev and
#                    /tmp, greets, runs the command the VMM hands it and
#                    reports its exit status, or ends the VM
#   idle             freestanding init that never ends and makes no system
#                    call (idle.c), for guests that must stay up
#   disktest         freestanding init for the root-disk tests (disktest.c),
#                    on the root image only
#   guestbench       freestanding disk and network benchmark run from the
#                    guest's user space (guestbench.c), for bench-guest.py
#   busybox          Debian's busybox-static, with a link for each applet
#                    (applets.txt) and udhcpc's lease script
#   initramfs.cpio   uncompressed initramfs holding all of that: /init,
#                    /idle, /usr/bin/guestbench, /bin/busybox and the applet links
# with the gen_init_cpio of the kernel directory given as $1. Cached under
# ${VMM_GUEST_CACHE:-$HOME/.cache/vmm-guest}/initramfs-<hash of this script,
# the sources, the list, busybox's version and the compiler version>/.
# Prints INITRAMFS_DIR=PATH.
set -euo pipefail

kernel_dir=${1:?usage: build-initramfs.sh KERNEL_DIR}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache_root=${VMM_GUEST_CACHE:-$HOME/.cache/vmm-guest}
log() { echo "guest-kernels: $*" >&2; }

key=$( {
    cd "$here"
    for f in build-initramfs.sh sys.h init.c idle.c disktest.c guestbench.c initramfs.list udhcpc.script \
        poweroff.sh; do
        echo "file $f"
        cat "$f"
    done
    dpkg-query -W -f='${Version}' busybox-static
    gcc --version | head -1
    echo "packer $(basename "$kernel_dir")"
} | sha256sum | cut -c1-16)
out=$cache_root/initramfs-$key
if [[ ! -f $out/initramfs.cpio ]]; then
    work=$(mktemp -d "$cache_root/initramfs-build.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    for prog in init idle disktest guestbench; do
        gcc -static -nostdlib -ffreestanding -O2 -fno-stack-protector -fno-pie -no-pie \
            -Wl,--build-id=none -o "$work/$prog" "$here/$prog.c"
    done
    cp /bin/busybox "$work/busybox"
    cp "$here/udhcpc.script" "$work/udhcpc.script"
    # Every applet as a link to /bin/busybox (bin/sh, sbin/ip, usr/bin/nc,
    # ...), as Debian's busybox lists them, but init and linuxrc: the init
    # is the project's own.
    # poweroff, reboot and halt are poweroff.sh (a microVM has no ACPI).
    "$work/busybox" --list-full |
        grep -vxE 'bin/busybox|sbin/init|linuxrc|sbin/(poweroff|reboot|halt)' |
        sort > "$work/applets.txt"
    cp "$here/poweroff.sh" "$work/poweroff.sh"
    {
        sed -e "s#@INIT@#$work/init#" -e "s#@IDLE@#$work/idle#" \
            -e "s#@BUSYBOX@#$work/busybox#" -e "s#@GUESTBENCH@#$work/guestbench#" -e "s#@UDHCPC_SCRIPT@#$work/udhcpc.script#" \
            "$here/initramfs.list"
        sed 's#.*#slink /& /bin/busybox 0777 0 0#' "$work/applets.txt"
        for p in poweroff reboot halt; do
            echo "file /sbin/$p $work/poweroff.sh 0755 0 0"
        done
    } > "$work/initramfs.list"
    "$kernel_dir/gen_init_cpio" "$work/initramfs.list" > "$work/initramfs.cpio"
    mkdir -p "$out.tmp"
    mv "$work/init" "$work/idle" "$work/disktest" "$work/guestbench" "$work/busybox" "$work/udhcpc.script" \
        "$work/poweroff.sh" "$work/applets.txt" "$work/initramfs.cpio" "$out.tmp/"
    rm -rf "$out"
    mv "$out.tmp" "$out"
    log "built initramfs: $out"
fi
echo "INITRAMFS_DIR=$out"
