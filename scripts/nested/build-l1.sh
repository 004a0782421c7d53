#!/usr/bin/env bash
# Builds the nested host's ("L1") boot files for scripts/nested.sh:
#   vmlinuz         Debian's packaged amd64 kernel (the pinned version below)
#   initramfs.cpio  busybox-static, the L1's init (scripts/nested/init.sh) and
#                   exactly the kernel modules it loads, in load order
# Cached outside the repository in ${VMM_NESTED_CACHE:-$HOME/.cache/vmm-nested}
# /l1-<hash>/, keyed by the pinned package and version, this script, the init
# and busybox's version. Prints L1_DIR=PATH on stdout; progress on stderr.
# Exit code 125 with the reason when the files cannot be had.
set -euo pipefail

# The pinned L1 kernel. Debian replaces these packages as its 6.1 kernel is
# updated: when the pin is gone, pick a current one from
#   apt-cache search --names-only 'linux-image-6.1.0-[0-9]+-amd64-unsigned'
# and put its name and `apt-cache show` Version here.
L1_KERNEL_PACKAGE=linux-image-6.1.0-57-amd64-unsigned
L1_KERNEL_VERSION=6.1.192-3

# What the L1 loads (their dependencies come first, from modules.dep):
# KVM on AMD-V, the 9p share of the machine's files over virtio-pci, the
# overlay that makes it writable, and TAP, bridge and veth for network tests;
# for the OCI runtime's tests, what podman's netavark and the CNI plugins
# program (iptables on nftables; libcrc32c wants crc32c, a soft dependency: NAT, masquerade, port forwards) and the tc
# ingress redirect between a container's interface and its VM's TAP.
L1_MODULES=(virtio_pci 9pnet_virtio 9p overlay kvm-amd tun bridge veth
            crc32c_generic nf_tables nft_compat nft_chain_nat nft_nat nft_masq nft_ct nft_fib_inet
            nft_reject_inet ip_tables iptable_nat xt_conntrack xt_MASQUERADE xt_nat
            xt_REDIRECT xt_comment xt_mark xt_addrtype xt_tcpudp xt_multiport br_netfilter
            sch_ingress act_mirred cls_u32 cls_matchall)

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache_root=${VMM_NESTED_CACHE:-$HOME/.cache/vmm-nested}
log() { echo "nested: $*" >&2; }
die() { log "$*"; exit 125; }

busybox=/bin/busybox
if [[ ! -x $busybox ]] || [[ $(LC_ALL=C ldd "$busybox" 2>&1 || true) != *"not a dynamic"* ]]; then
    die "a static busybox is needed at $busybox: apt-get install busybox-static (scripts/setup.sh does)"
fi
command -v depmod >/dev/null || die "depmod is needed: apt-get install kmod (scripts/setup.sh does)"

key=$( {
    echo "$L1_KERNEL_PACKAGE $L1_KERNEL_VERSION"
    printf '%s\n' "${L1_MODULES[@]}"
    cat "${BASH_SOURCE[0]}" "$here/init.sh"
    dpkg-query -W -f='${Version}' busybox-static 2>/dev/null || sha256sum "$busybox"
} | sha256sum | cut -c1-16)
out=$cache_root/l1-$key
if [[ -f $out/complete ]]; then
    echo "L1_DIR=$out"
    exit 0
fi

log "cache miss ($key): fetching $L1_KERNEL_PACKAGE $L1_KERNEL_VERSION and building the L1 initramfs"
mkdir -p "$cache_root"
work=$(mktemp -d "$cache_root/l1-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
if ! (cd "$work" && apt-get download -q "$L1_KERNEL_PACKAGE=$L1_KERNEL_VERSION") >"$work/apt.log" 2>&1; then
    if ! (cd "$work" && apt-get update -qq && apt-get download -q "$L1_KERNEL_PACKAGE=$L1_KERNEL_VERSION") >>"$work/apt.log" 2>&1; then
        sed 's/^/  /' "$work/apt.log" >&2
        die "cannot download the pinned L1 kernel $L1_KERNEL_PACKAGE=$L1_KERNEL_VERSION: it may be gone from Debian's archive; pin a current one in ${BASH_SOURCE[0]}"
    fi
fi
dpkg-deb -x "$work"/"$L1_KERNEL_PACKAGE"_*.deb "$work/pkg"
kver=$(basename "$(ls -d "$work"/pkg/lib/modules/*)")
depmod -b "$work/pkg" "$kver"

# Modules in load order: each one's dependencies (modules.dep lists them
# deepest last) before it, each once.
declare -A loaded=()
order=()
add_module() {
    local name=${1//-/_} line path dep
    line=$(grep -E "/${name//_/[-_]}\.ko:" "$work/pkg/lib/modules/$kver/modules.dep") ||
        die "module $1 is not in $L1_KERNEL_PACKAGE"
    path=${line%%:*}
    [[ -n ${loaded[$path]:-} ]] && return 0
    local deps=(${line#*:}) i
    for ((i = ${#deps[@]} - 1; i >= 0; i--)); do
        dep=$(basename "${deps[i]}" .ko)
        add_module "$dep"
    done
    loaded[$path]=1
    order+=("$path")
}
for m in "${L1_MODULES[@]}"; do add_module "$m"; done

root=$work/root
mkdir -p "$root"/{bin,dev,proc,sys,mnt,newroot,tmp,lib/modules}
cp "$busybox" "$root/bin/busybox"
install -m 0755 "$here/init.sh" "$root/init"
for path in "${order[@]}"; do
    cp "$work/pkg/lib/modules/$kver/$path" "$root/lib/modules/"
    basename "$path" >> "$root/lib/modules/order"
done
log "modules: $(tr '\n' ' ' < "$root/lib/modules/order")"
(cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet) > "$work/initramfs.cpio"

stage=$out.tmp
rm -rf "$stage"
mkdir -p "$stage"
cp "$work"/pkg/boot/vmlinuz-* "$stage/vmlinuz"
mv "$work/initramfs.cpio" "$stage/initramfs.cpio"
echo "$L1_KERNEL_PACKAGE $L1_KERNEL_VERSION $kver" > "$stage/complete"
rm -rf "$out"
mv "$stage" "$out"
log "built: $out"
echo "L1_DIR=$out"
