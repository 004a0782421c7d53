#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian 12 machine (as root):
# the Debian packages for building the guest kernel, the tests and the
# benchmarks, and a Rust toolchain (rustup's stable) when there is no cargo.
# Idempotent: installs only what is missing. Callers source ~/.cargo/env
# afterwards so a fresh rustup install is on PATH.
set -euo pipefail

packages=(build-essential pkg-config curl ca-certificates linux-source-6.12 bc flex bison libelf-dev libssl-dev
          cpio xz-utils python3 qemu-system-x86 procps e2fsprogs iproute2 iputils-ping dnsmasq-base
          runc busybox-static util-linux kmod umoci skopeo tar strace mount
          podman containerd crun python3-jsonschema)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}" >&2
    if [[ $(id -u) -ne 0 ]]; then
        echo "setup: not root; run: sudo apt-get install ${missing[*]}" >&2
        exit 1
    fi
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
fi
[[ -f $HOME/.cargo/env ]] && . "$HOME/.cargo/env"
if ! command -v cargo >/dev/null; then
    # Debian 12's own cargo (1.63) is too old for the rust-vmm crates.
    echo "setup: installing Rust (rustup, stable toolchain)" >&2
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal \
        --component clippy,rustfmt >&2
fi
# cargo-fuzz for scripts/fuzz.sh (the fuzz targets build on this stable
# toolchain with --sanitizer none).
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "setup: installing cargo-fuzz" >&2
    cargo install --quiet --locked cargo-fuzz --version 0.13.2 >&2
fi
