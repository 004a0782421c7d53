#!/usr/bin/env bash
# Builds the default microVM guest kernel from Debian's linux-source-6.12
# (called by build.sh, which also builds the root disk image):
#   vmlinux          uncompressed ELF kernel (the one `vmm run` boots by default)
#   bzImage          the same kernel, compressed, in the x86 boot format
#   config           its .config
#   gen_init_cpio    the kernel's initramfs packer, for build-initramfs.sh
#
# Outputs are cached outside the repository, in
#   ${VMM_GUEST_CACHE:-$HOME/.cache/vmm-guest}/kernel-<hash>/
# keyed by a hash of everything that goes into them (this script, the config
# fragment, the patches and the kernel source package version). A miss
# rebuilds; a hit only prints the path.
#
# Prints KERNEL_DIR=PATH on stdout; progress goes to stderr.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache_root=${VMM_GUEST_CACHE:-$HOME/.cache/vmm-guest}
src_pkg=linux-source-6.12
src_tar=/usr/src/linux-source-6.12.tar.xz
packages=(linux-source-6.12 bc flex bison libelf-dev libssl-dev gcc make cpio xz-utils python3)

log() { echo "guest-kernels: $*" >&2; }

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    log "installing Debian packages: ${missing[*]}"
    if [[ $(id -u) -ne 0 ]]; then
        log "not root: run as root or install them first: apt-get install ${missing[*]}"
        exit 1
    fi
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
fi

src_version=$(dpkg-query -W -f='${Version}' "$src_pkg")
key=$( {
    echo "source $src_pkg $src_version"
    cd "$here"
    for f in build-kernel.sh microvm.config patches/*.patch; do
        echo "file $f"
        cat "$f"
    done
} | sha256sum | cut -c1-16)
out=$cache_root/kernel-$key

print_paths() {
    echo "KERNEL_DIR=$out"
}

if [[ -f $out/complete ]]; then
    log "cache hit: $out"
    print_paths
    exit 0
fi

log "cache miss ($key): building the guest kernel, about 8 minutes on 2 cores"
mkdir -p "$cache_root"
work=$(mktemp -d "$cache_root/build.XXXXXX")
trap 'rm -rf "$work"' EXIT

tar -C "$work" -xf "$src_tar"
ksrc=$work/linux-source-6.12
for p in "$here"/patches/*.patch; do
    log "applying $(basename "$p")"
    patch -d "$ksrc" -p1 --quiet < "$p"
done

make -C "$ksrc" -s tinyconfig >&2
"$ksrc/scripts/kconfig/merge_config.sh" -m -O "$ksrc" "$ksrc/.config" "$here/microvm.config" >/dev/null
make -C "$ksrc" -s olddefconfig >&2

# Every line of the fragment must have survived the merge.
bad=0
while IFS= read -r line; do
    case "$line" in
        CONFIG_*=*) want=$line ;;
        "# CONFIG_"*" is not set") want=$line ;;
        *) continue ;;
    esac
    if ! grep -qxF "$want" "$ksrc/.config"; then
        sym=${want#\# }; sym=${sym%%[= ]*}
        if [[ $want == "# "* ]] && ! grep -q "^$sym=" "$ksrc/.config"; then
            continue # off, or not offered at all: both mean off
        fi
        log "config: wanted '$want', got '$(grep -E "^(# )?$sym[= ]" "$ksrc/.config" || echo absent)'"
        bad=1
    fi
done < "$here/microvm.config"
((bad == 0)) || { log "config fragment did not apply"; exit 1; }

log "compiling (make -j$(nproc) vmlinux bzImage)"
make -C "$ksrc" -s -j"$(nproc)" vmlinux bzImage >&2
[[ -x $ksrc/usr/gen_init_cpio ]] || make -C "$ksrc" -s usr/gen_init_cpio >&2

stage=$cache_root/kernel-$key.tmp
rm -rf "$stage"
mkdir -p "$stage"
cp "$ksrc/vmlinux" "$stage/vmlinux"
cp "$ksrc/arch/x86/boot/bzImage" "$stage/bzImage"
cp "$ksrc/.config" "$stage/config"
cp "$ksrc/usr/gen_init_cpio" "$stage/gen_init_cpio"
echo "$src_pkg $src_version" > "$stage/complete"
rm -rf "$out"
mv "$stage" "$out"
log "built: $out"
print_paths
