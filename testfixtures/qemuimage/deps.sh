#!/usr/bin/env bash
# deps.sh - install the Debian packages that build.sh (the QEMU virtual DUT's images), booting
# those images with QEMU, the DUTlink driver's libusb (cgo) and the flash engine's tests against real
# tools need, and protoc for the protocol's generated code (make proto-check).
#
# Usage: testfixtures/qemuimage/deps.sh        (as root; CI: sudo testfixtures/qemuimage/deps.sh)
#
# Checks first and does nothing, and no apt at all, when everything is there (a few ms).
# Otherwise, as root: apt-get update, then apt-get install -y --no-install-recommends of the
# missing packages, non-interactively (works with CI=true and no stdin). Not root: prints the
# commands to run and exits 1. build.sh also needs the apt package lists (to find and download
# the kernel package): when there are none, this script runs apt-get update even if every
# package is installed.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

PKGS=(
  # build.sh
  busybox-static  # the DUT's userland and initramfs (static: no libraries in the images)
  kmod            # depmod, modprobe --show-depends (which modules the initramfs carries)
  cpio            # the initramfs
  e2fsprogs       # mke2fs -d, debugfs (the ext2 root file system, without mounting)
  dosfstools      # mkfs.vfat (the boot partition)
  mtools          # mcopy (files into the boot partition, without mounting)
  fdisk           # sfdisk (the partition table)
  syslinux        # syslinux --install (the boot partition's boot loader)
  syslinux-common # mbr.bin
  zstd            # .zst images
  # booting the images (tests)
  qemu-system-x86 # qemu-system-x86_64 with SeaBIOS
  qemu-utils      # qemu-img (overlays, conversions)
  # the flash engine's tests against real tools, and make bench-flash (cmd/flashbench)
  bmap-tools      # bmaptool create / copy
  gzip
  bzip2           # bzip2 (the flash engine's last system decoder of .bz2 images)
  lbzip2          # lbzip2 -dc: what the flash engine unpacks .bz2 images with, on every core
  pbzip2          # pbzip2: the engine's second .bz2 decoder, multi-stream test images; bmaptool's .bz2 decoder
  xz-utils        # xz (also what the flash engine unpacks .xz images with, when present)
  # the DUTlink driver's USB transport (github.com/google/gousb, cgo)
  libusb-1.0-0-dev
  pkg-config
  # the Tekton checks: the JUnit schema validation
  libxml2-utils   # xmllint
  # the bare baseline of make bench-qemu (cmd/bootbench)
  expect          # bare.exp
  socat           # bare.exp: QEMU's console and QMP sockets
  # make proto, make proto-check (proto/gen.sh): the compiler and its well-known types
  protobuf-compiler # protoc 3.21.12
  libprotobuf-dev   # google/protobuf/*.proto (timestamp, duration)
  # the remote end-to-end tests (e2e/remote): the exporter in a network namespace, a veth pair
  iproute2          # ip netns, ip link
)

command -v dpkg-query >/dev/null || { echo "deps.sh: this needs a Debian-based system (no dpkg-query)" >&2; exit 1; }

missing=()
declare -A installed=()
while read -r p st; do
  [[ $st == ii ]] && installed[$p]=1
done < <(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "${PKGS[@]}" 2>/dev/null || true)
for p in "${PKGS[@]}"; do
  [[ -n ${installed[$p]:-} ]] || missing+=("$p")
done
need_update=0
compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null || need_update=1

if [[ ${#missing[@]} -eq 0 && $need_update -eq 0 ]]; then
  exit 0
fi

if [[ $EUID -ne 0 ]]; then
  echo "deps.sh: not root; run:" >&2
  if [[ ${#missing[@]} -gt 0 ]]; then
    echo "  sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}" >&2
  else
    echo "  sudo apt-get update" >&2
  fi
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
echo "deps.sh: apt-get update"
apt-get update -q </dev/null
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "deps.sh: installing ${missing[*]}"
  apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
fi
