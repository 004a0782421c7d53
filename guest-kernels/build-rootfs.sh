#!/usr/bin/env bash
# Builds the default guest's root disk: a 32 MiB ext4 image (mkfs.ext4 -d,
# from Debian's e2fsprogs) with the same user space as the initramfs of the
# directory given as $1: init at /sbin/init, idle and disktest at
# /sbin/idle and /sbin/disktest, busybox at /bin/busybox with its applet
# links and udhcpc's lease script, and /dev, /proc, /sys, /tmp, /root, /etc.
# Cached under ${VMM_GUEST_CACHE:-$HOME/.cache/vmm-guest}/rootfs-<hash of
# this script, the programs and the e2fsprogs version>/. Prints the image's
# path.
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
key=$( { cat "${BASH_SOURCE[0]}" "$progs/init" "$progs/idle" "$progs/disktest" \
    "$progs/guestbench" "$progs/busybox" "$progs/applets.txt" "$progs/udhcpc.script" "$progs/poweroff.sh"; \
    dpkg-query -W -f='${Version}' e2fsprogs; } | sha256sum | cut -c1-16)
out=$cache_root/rootfs-$key
if [[ ! -f $out/rootfs.ext4 ]]; then
    work=$(mktemp -d "$cache_root/rootfs-build.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    r=$work/root
    mkdir -p "$r/bin" "$r/sbin" "$r/usr/bin" "$r/usr/sbin" "$r/usr/share/udhcpc" \
        "$r/dev" "$r/proc" "$r/sys" "$r/tmp" "$r/root" "$r/etc"
    chmod 1777 "$r/tmp"
    chmod 0700 "$r/root"
    install -m 0755 "$progs/init" "$r/sbin/init"
    install -m 0755 "$progs/idle" "$r/sbin/idle"
    install -m 0755 "$progs/disktest" "$r/sbin/disktest"
    install -m 0755 "$progs/guestbench" "$r/usr/bin/guestbench"
    install -m 0755 "$progs/busybox" "$r/bin/busybox"
    install -m 0755 "$progs/udhcpc.script" "$r/usr/share/udhcpc/default.script"
    while read -r applet; do
        ln -sfn /bin/busybox "$r/$applet"
    done < "$progs/applets.txt"
    for p in poweroff reboot halt; do
        install -m 0755 "$progs/poweroff.sh" "$r/sbin/$p"
    done
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
