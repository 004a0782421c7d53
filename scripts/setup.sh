#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian 12 machine (as root):
# the Rust toolchain check, and the Debian packages for building the guest
# kernel, the tests and the benchmarks. Idempotent: installs only what is
# missing.
set -euo pipefail

packages=(build-essential pkg-config linux-source-6.12 bc flex bison libelf-dev libssl-dev
          cpio xz-utils python3 qemu-system-x86 strace procps)
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
if ! command -v cargo >/dev/null; then
    echo "setup: cargo not found; install Rust (rustup, or Debian's cargo) first" >&2
    exit 1
fi
