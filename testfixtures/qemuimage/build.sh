#!/usr/bin/env bash
# build.sh - build the bootable disk images of the QEMU virtual DUT from Debian packages.
#
# Usage: testfixtures/qemuimage/build.sh [-f] [OUTDIR]
#
#   OUTDIR  where the images go; default out/qemu-images under the repository root (a relative
#           OUTDIR is relative to the current directory). Works from any directory.
#   -f      rebuild everything, ignoring the cache.
#
# Every image is a 48 MiB raw disk (sparse) that a test "flashes" and QEMU boots with SeaBIOS:
#
#   MBR (syslinux mbr.bin), p1 = FAT16 1..25 MiB: syslinux, the Debian cloud kernel, initrd.img
#                          p2 = ext2 25..48 MiB: the root file system (busybox)
#   BIOS -> syslinux -> kernel -> initrd ("stage1": loads the disk/fs modules, mounts p2 of the
#   first disk, switch_root) -> busybox init -> banner "Jumpstarter QEMU DUT <version>" ->
#   getty on ttyS0 -> "dut login: " (root, empty password) -> prompt "root@dut:~# ".
#
#   dut-1.0.0.img, dut-2.0.0.img   bootable releases; /etc/dut-release holds "<version>\n"
#   dut-*.img.zst, dut-1.0.0.img.gz  the same bytes compressed (zstd -19, gzip -9 -n)
#   blank.img      all zeros, one hole (sparse, no bmap): flashed, it replaces the previous image
#                  byte for byte (the flash engine zeroes a sparse image's holes); SeaBIOS prints
#                  "No bootable device."
#   corrupt.img    good boot partition, garbage root partition: stage1 prints
#                  "stage1: ERROR: no bootable rootfs: ..." and starts a rescue shell ("rescue# ")
#   panic.img      the root file system's init exits: "Kernel panic - not syncing: Attempted to
#                  kill init!", then the VM hangs (panic=0)
#   hang.img       stage1 switches to the root file system, whose init prints nothing, forever
#   manifest.txt   name, format, version, expected console outcome, size and sha256 of each image
#
# Booting (as qemuimage_test.go does; boot a copy: the root file system is mounted read-write):
#   qemu-system-x86_64 -accel tcg -m 128 -nodefaults -nographic -serial stdio \
#     -drive file=COPY.img,format=raw,if=virtio        (if=ide works too)
# -nographic (or -machine graphics=off) turns on SeaBIOS's serial console: without it SeaBIOS
# prints nothing and blank.img is silent. The guest needs about 80 MiB of RAM or more.
#
# Nothing here needs root, loop devices or mounts (mke2fs -d, mtools, syslinux on a file, sfdisk
# and dd on a file). Missing packages: run testfixtures/qemuimage/deps.sh as root.
#
# Caching: OUTDIR/.stamps/NAME holds a hash of everything that shapes NAME (this script, the
# kernel package and version, the versions of busybox and every tool that writes bytes into the
# image, SOURCE_DATE_EPOCH), NAME's kind and version, and the size, mtime and sha256 of the output. A run whose hashes
# all match, with every output untouched, does nothing. The kernel .deb and the few files used
# from it are kept in OUTDIR/.work. Outputs are deterministic: two builds from the same inputs are
# byte-identical (fixed timestamps, UUIDs, volume and disk ids, owners; gzip -n; cpio
# --reproducible). Builds months apart differ when Debian has replaced the kernel package.
set -Eeuo pipefail
umask 022
export LC_ALL=C TZ=UTC PATH="$PATH:/usr/sbin:/sbin"

SELF=$(readlink -f "${BASH_SOURCE[0]}")
HERE=$(dirname "$SELF")
REPO=$(cd "$HERE/../.." && pwd)

# ---- layout and contents (all of this is part of the cache key, since this file is) ----------
DISK_MIB=48                    # whole disk
P1_MIB=24                      # boot partition at 1 MiB
P2_MIB=$((DISK_MIB - 1 - P1_MIB)) # root partition right after it
VERSIONS=(1.0.0 2.0.0)
GZ_VERSIONS=(1.0.0)
PANIC_VERSION=9.9.9-panic
HANG_VERSION=9.9.9-hang
# Kernel modules stage1 loads (with their dependencies): virtio disks (PCI and microvm's MMIO),
# IDE/SATA-on-PIIX disks, and FAT for the boot partition. ext4 (which also mounts ext2) is built in.
MODULES="virtio_pci virtio_mmio virtio_blk ata_piix sd_mod ext4 vfat nls_cp437 nls_ascii nls_iso8859-1 nls_utf8"
CMDLINE="console=ttyS0,115200 quiet panic=0"
EPOCH=${SOURCE_DATE_EPOCH:-1704067200} # 2024-01-01T00:00:00Z: every timestamp in every image
DISK_ID=0x4a535444                      # MBR disk identifier ("JSTD")
FAT_ID=4a535444                         # FAT volume id
ROOT_UUID=6a756d70-7374-6172-7465-722d64757430
HASH_SEED=6a756d70-7374-6172-7465-722d64757431
# Debian packages whose files or behaviour end up in the images (their versions are cache keys).
BUILD_PKGS=(busybox-static kmod cpio e2fsprogs dosfstools mtools fdisk syslinux syslinux-common zstd gzip)

trap 'echo "build.sh: failed at line $LINENO: $BASH_COMMAND" >&2' ERR
die() { echo "build.sh: $*" >&2; exit 1; }
log() { echo "build.sh: $*"; }
sha() { sha256sum | cut -d' ' -f1; }

force=0
while [[ $# -gt 0 ]]; do
  case $1 in
    -f) force=1; shift ;;
    -h | --help) sed -n '2,/^set -Eeuo/p' "$SELF" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    --) shift; break ;;
    -*) die "unknown option $1 (usage: build.sh [-f] [OUTDIR])" ;;
    *) break ;;
  esac
done
[[ $# -le 1 ]] || die "usage: build.sh [-f] [OUTDIR]"
OUT=${1:-$REPO/out/qemu-images}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$OUT/.work
STAMPS=$OUT/.stamps
mkdir -p "$WORK" "$STAMPS"

# One build per OUTDIR at a time.
exec 9>"$OUT/.lock"
if ! flock -n 9; then
  log "waiting for another build.sh in $OUT"
  flock 9
fi

# ---- prerequisites ---------------------------------------------------------------------------
check_tools() {
  local missing=() p st
  command -v dpkg-query >/dev/null || die "this script needs a Debian system (dpkg-query not found)"
  local ver
  declare -gA PKGVER=()
  TOOLS=
  # One dpkg-query for status and version: this runs on every (cached) build.
  while read -r p st ver; do
    [[ $st == ii ]] && PKGVER[$p]=$ver && TOOLS+="$p=$ver "
  done < <(dpkg-query -W -f='${Package} ${db:Status-Abbrev}${Version}\n' "${BUILD_PKGS[@]}" 2>/dev/null || true)
  for p in "${BUILD_PKGS[@]}"; do
    [[ -n ${PKGVER[$p]:-} ]] || missing+=("$p")
  done
  for p in apt-get apt-cache dpkg-deb sha256sum flock; do
    command -v "$p" >/dev/null || die "$p not found (a Debian base system has it)"
  done
  if [[ ${#missing[@]} -gt 0 ]]; then
    die "missing Debian packages: ${missing[*]}
  install them with:  testfixtures/qemuimage/deps.sh   (as root)
  or:                 apt-get install -y --no-install-recommends ${missing[*]}"
  fi
  local f
  for f in /bin/busybox /usr/lib/syslinux/mbr/mbr.bin; do
    [[ -f $f ]] || die "$f is missing (reinstall busybox-static / syslinux-common)"
  done
  for f in mke2fs debugfs mkfs.vfat mcopy syslinux sfdisk depmod modprobe cpio zstd gzip; do
    command -v "$f" >/dev/null || die "$f not found although its package is installed; check PATH"
  done
}

# The kernel package: linux-image-cloud-amd64's dependency and its version. apt-cache takes about
# a second here (no pkgcache.bin in Docker images), so the answer is cached under a key made of
# the apt lists' names, sizes and mtimes: it is recomputed only after an apt-get update.
resolve_kernel() {
  local key cache dep lists
  lists=$(stat -c '%n %s %Y' /var/lib/apt/lists/*_Packages* /etc/apt/sources.list \
    /etc/apt/sources.list.d/* /etc/apt/preferences /etc/apt/preferences.d/* 2>/dev/null || true)
  grep -q _Packages <<<"$lists" ||
    die "no apt package lists: run testfixtures/qemuimage/deps.sh as root (it runs apt-get update)"
  key=$(sha <<<"$lists" | cut -c1-16)
  cache=$WORK/kernel-pkg.$key
  if [[ -s $cache ]]; then
    read -r KPKG KVERSION <"$cache"
    return
  fi
  dep=$(apt-cache show --no-all-versions linux-image-cloud-amd64 2>/dev/null | sed -n 's/^Depends: //p' | head -n1)
  [[ $dep =~ (linux-image-[0-9][^ ,]*)( \(= ([^\)]+)\))? ]] ||
    die "cannot resolve linux-image-cloud-amd64 (Depends: '${dep}'): run apt-get update, or testfixtures/qemuimage/deps.sh as root"
  KPKG=${BASH_REMATCH[1]}
  KVERSION=${BASH_REMATCH[3]}
  if [[ -z $KVERSION ]]; then
    KVERSION=$(apt-cache show --no-all-versions "$KPKG" 2>/dev/null | sed -n 's/^Version: //p' | head -n1)
  fi
  [[ -n $KVERSION ]] || die "cannot find the version of $KPKG in the apt lists"
  rm -f "$WORK"/kernel-pkg.*
  echo "$KPKG $KVERSION" >"$cache.tmp" && mv "$cache.tmp" "$cache"
}

# ---- cache bookkeeping -----------------------------------------------------------------------
# Stamp file: line 1 the input key (a hash of the common inputs plus what is particular to the
# output), line 2 "size mtime sha256" of the output. $CUR[NAME] holds "size mtime" of the output
# as it is now (one stat for all outputs: a cached run must cost next to nothing).
fresh() { # NAME KEY
  local st="$STAMPS/$1" key size mtime sum
  [[ $force -eq 0 && -f $st && -n ${CUR[$1]:-} ]] || return 1
  { read -r key && read -r size mtime sum; } <"$st" || return 1
  [[ $key == "$2" && ${CUR[$1]} == "$size $mtime" ]]
}
publish() { # TMPFILE NAME HASH: move into place, then record the stamp
  mv -f "$1" "$OUT/$2"
  printf '%s\n%s %s\n' "$3" "$(stat -c '%s %Y' "$OUT/$2")" "$(sha256sum "$OUT/$2" | cut -d' ' -f1)" >"$STAMPS/$2.tmp"
  mv -f "$STAMPS/$2.tmp" "$STAMPS/$2"
}

# ---- kernel ----------------------------------------------------------------------------------
# $KDIR: vmlinuz, modules/*.ko and modules/load-order (dependencies first), kver.
fetch_kernel() {
  KDIR=$WORK/kernel/${KPKG}_${KVERSION}_$(sha <<<"$MODULES" | cut -c1-8)
  [[ -f $KDIR/kver ]] && return
  local debs=$WORK/debs deb t=$WORK/tmp/kernel kver mroot
  mkdir -p "$debs"
  deb=$(ls "$debs/${KPKG}_${KVERSION}_"*.deb 2>/dev/null | head -n1 || true)
  if [[ -z $deb ]]; then
    log "downloading $KPKG $KVERSION"
    rm -rf "$debs"/*.deb "$debs/tmp"
    mkdir -p "$debs/tmp"
    local sandbox=()
    [[ $EUID -eq 0 ]] && sandbox=(-o APT::Sandbox::User=root)
    (cd "$debs/tmp" && apt-get -q "${sandbox[@]}" download "$KPKG=$KVERSION") >&2 ||
      die "apt-get download $KPKG=$KVERSION failed: run apt-get update (testfixtures/qemuimage/deps.sh as root) and check the network"
    mv "$debs"/tmp/*.deb "$debs/"
    rmdir "$debs/tmp"
    deb=$(ls "$debs/${KPKG}_${KVERSION}_"*.deb | head -n1)
  fi
  log "unpacking $(basename "$deb")"
  rm -rf "$t"
  mkdir -p "$t/root" "$t/k/modules"
  dpkg-deb -x "$deb" "$t/root"
  if [[ ! -d $t/root/lib/modules && -d $t/root/usr/lib/modules ]]; then
    ln -s usr/lib "$t/root/lib"
  fi
  kver=$(ls "$t/root/lib/modules")
  [[ -n $kver && -f $t/root/boot/vmlinuz-$kver ]] || die "$deb has no /boot/vmlinuz-$kver"
  depmod -b "$t/root" "$kver"
  mroot=$t/root/lib/modules/$kver
  # shellcheck disable=SC2086 # MODULES is a list
  modprobe -d "$t/root" -S "$kver" --show-depends -a $MODULES | awk '$1 == "insmod" && !seen[$2]++ {print $2}' |
    while read -r m; do
      local name=${m##*/}
      case $name in # decompress here: stage1's busybox insmod wants plain .ko files
        *.ko.xz) busybox unxz -c "$m" >"$t/k/modules/${name%.xz}"; name=${name%.xz} ;;
        *.ko.zst) zstd -q -d -c "$m" >"$t/k/modules/${name%.zst}"; name=${name%.zst} ;;
        *.ko.gz) gzip -d -c "$m" >"$t/k/modules/${name%.gz}"; name=${name%.gz} ;;
        *) cp "$m" "$t/k/modules/$name" ;;
      esac
      echo "$name"
    done >"$t/k/modules/load-order"
  [[ -s $t/k/modules/load-order ]] || die "no modules resolved from $mroot for: $MODULES"
  cp "$t/root/boot/vmlinuz-$kver" "$t/k/vmlinuz"
  echo "$kver" >"$t/k/kver"
  rm -rf "$t/root" "$WORK/kernel"
  mkdir -p "$WORK/kernel"
  mv "$t/k" "$KDIR"
  rm -rf "$t"
}

# ---- file trees ------------------------------------------------------------------------------
busybox_tree() { # DIR: /bin/busybox and a symlink for each applet at its usual place
  local d=$1 a
  mkdir -p "$d/bin" "$d/sbin" "$d/usr/bin" "$d/usr/sbin"
  cp /bin/busybox "$d/bin/busybox"
  for a in $(/bin/busybox --list-full); do
    [[ $a == bin/busybox || $a == linuxrc ]] && continue
    ln -s /bin/busybox "$d/$a"
  done
}

normalize_tree() { # DIR: fixed mtimes (owners are set by cpio -R / the debugfs pass)
  find "$1" -exec touch -h -d "@$EPOCH" {} +
}

build_initrd() { # -> $WORK/tmp/initrd.img
  local s=$WORK/tmp/stage1 kver
  kver=$(cat "$KDIR/kver")
  rm -rf "$s"
  mkdir -p "$s"/{dev,proc,sys,newroot,lib/modules}
  busybox_tree "$s"
  cp "$KDIR"/modules/* "$s/lib/modules/"
  cat >"$s/init" <<'EOF'
#!/bin/sh
# stage1: the DUT's initramfs. Loads the disk and file system modules, mounts partition 2 of the
# first disk (or dut.root=DEV from the kernel command line) and switch_root's into it.
export PATH=/sbin:/usr/sbin:/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "stage1: Jumpstarter QEMU DUT initramfs, kernel $(uname -r)"
while read -r m; do
  insmod "/lib/modules/$m" || echo "stage1: insmod $m failed"
done </lib/modules/load-order

rescue() {
  echo "stage1: ERROR: no bootable rootfs: $*"
  echo "stage1: the flashed image is blank or corrupt; starting a rescue shell"
  hostname dut-rescue
  export PS1='rescue# '
  while :; do setsid cttyhack sh; done # init must not exit: that would panic the kernel
}

root=$(sed -n 's/.*dut\.root=\([^ ]*\).*/\1/p' /proc/cmdline)
if [ -z "$root" ]; then
  disk=
  i=0
  while [ -z "$disk" ] && [ $i -lt 100 ]; do
    for d in /dev/vda /dev/sda; do
      if [ -b $d ]; then disk=$d; break; fi
    done
    [ -n "$disk" ] || { sleep 0.1; i=$((i + 1)); }
  done
  [ -n "$disk" ] || rescue "no disk (/dev/vda or /dev/sda) after 10 s"
  root=${disk}2
fi
[ -b "$root" ] || rescue "no partition $root"
mount -t ext2 -o ro "$root" /newroot || rescue "cannot mount $root (ext2)"
if [ ! -x /newroot/sbin/init ] && [ ! -L /newroot/sbin/init ]; then
  umount /newroot
  rescue "no /sbin/init on $root"
fi
echo "stage1: switching to the root file system on $root (release $(cat /newroot/etc/dut-release 2>/dev/null || echo unknown))"
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /sbin/init
EOF
  chmod 755 "$s/init"
  normalize_tree "$s"
  (cd "$s" && find . -print0 | sort -z | cpio -o -0 -H newc --reproducible -R 0:0 --quiet) |
    gzip -9 -n >"$WORK/tmp/initrd.img"
}

build_bootfs() { # -> $WORK/tmp/p1.img: FAT16 with syslinux, vmlinuz, initrd.img
  local b=$WORK/tmp/boot p1=$WORK/tmp/p1.img
  [[ -f $p1 ]] && return # once per run
  build_initrd
  rm -rf "$b"
  mkdir -p "$b"
  cp "$KDIR/vmlinuz" "$b/vmlinuz"
  mv "$WORK/tmp/initrd.img" "$b/initrd.img"
  cat >"$b/syslinux.cfg" <<EOF
SERIAL 0 115200
DEFAULT dut
PROMPT 0
TIMEOUT 0
LABEL dut
  KERNEL /vmlinuz
  APPEND initrd=/initrd.img $CMDLINE
EOF
  normalize_tree "$b"
  rm -f "$p1.tmp"
  SOURCE_DATE_EPOCH=$EPOCH mkfs.vfat --invariant -i "$FAT_ID" -n DUTBOOT -C "$p1.tmp" $((P1_MIB * 1024)) >/dev/null
  local f
  for f in vmlinuz initrd.img syslinux.cfg; do
    SOURCE_DATE_EPOCH=$EPOCH mcopy -m -i "$p1.tmp" "$b/$f" "::/$f"
  done
  SOURCE_DATE_EPOCH=$EPOCH syslinux --install "$p1.tmp"
  mv "$p1.tmp" "$p1"
}

rootfs_tree() { # DIR KIND VERSION
  local r=$1 kind=$2 ver=$3
  rm -rf "$r"
  mkdir -p "$r"/{dev,proc,sys,tmp,run,root,mnt,boot,var/log,etc/init.d}
  chmod 700 "$r/root"
  chmod 1777 "$r/tmp"
  busybox_tree "$r"
  printf '%s\n' "$ver" >"$r/etc/dut-release"
  cat >"$r/etc/os-release" <<EOF
NAME="Jumpstarter QEMU DUT"
ID=jumpstarter-qemu-dut
VERSION="$ver"
VERSION_ID="$ver"
PRETTY_NAME="Jumpstarter QEMU DUT $ver"
EOF
  echo dut >"$r/etc/hostname"
  printf '127.0.0.1\tlocalhost\n127.0.1.1\tdut\n' >"$r/etc/hosts"
  # root with an empty password: login asks for no password. (The empty field lives in
  # /etc/shadow: busybox's passwd parser rejects an entry with an empty password field.)
  echo 'root:x:0:0:root:/root:/bin/sh' >"$r/etc/passwd"
  echo "root::$((EPOCH / 86400)):0:99999:7:::" >"$r/etc/shadow"
  chmod 600 "$r/etc/shadow"
  echo 'root:x:0:' >"$r/etc/group"
  printf 'Welcome to Jumpstarter QEMU DUT %s.\n' "$ver" >"$r/etc/motd"
  cat >"$r/etc/profile" <<'EOF'
export PATH=/sbin:/usr/sbin:/bin:/usr/bin
export PS1='\u@\h:\w\$ '
EOF
  cat >"$r/etc/inittab" <<'EOF'
::sysinit:/etc/init.d/rcS
ttyS0::respawn:/sbin/getty -L 115200 ttyS0 vt100
::ctrlaltdel:/sbin/reboot
::shutdown:/bin/mount -o remount,ro /
EOF
  cat >"$r/etc/init.d/rcS" <<'EOF'
#!/bin/sh
export PATH=/sbin:/usr/sbin:/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
grep -q ' /dev ' /proc/mounts || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -o remount,rw /
hostname -F /etc/hostname
. /etc/os-release
echo
echo "$PRETTY_NAME"
echo "kernel $(uname -r), up $(cut -d' ' -f1 /proc/uptime) s"
EOF
  chmod 755 "$r/etc/init.d/rcS"
  case $kind in
    dut) ;; # /sbin/init is busybox init
    panic)
      rm "$r/sbin/init"
      cat >"$r/sbin/init" <<'EOF'
#!/bin/sh
# panic test image: init gives up at once, so the kernel panics ("Attempted to kill init!").
echo "init: cannot start the system (panic test image)"
exit 1
EOF
      chmod 755 "$r/sbin/init" ;;
    hang)
      rm "$r/sbin/init"
      cat >"$r/sbin/init" <<'EOF'
#!/bin/sh
# hang test image: init never starts anything and prints nothing.
while :; do sleep 3600; done
EOF
      chmod 755 "$r/sbin/init" ;;
    *) die "internal: rootfs kind $kind" ;;
  esac
  normalize_tree "$r"
}

build_rootfs() { # DIR OUTFILE: ext2 image of DIR, owners root, every timestamp $EPOCH
  local r=$1 out=$2
  rm -f "$out"
  truncate -s "${P2_MIB}M" "$out"
  E2FSPROGS_FAKE_TIME=$EPOCH mke2fs -q -F -t ext2 -L dutroot -U "$ROOT_UUID" \
    -E "root_owner=0:0,hash_seed=$HASH_SEED" -d "$r" "$out"
  # mke2fs -d copies owners and atime/ctime from the build tree: reset them.
  (cd "$r" && find . | sed 's/^\.//; s/^$/\//') | while read -r p; do
    printf 'sif "%s" uid 0\nsif "%s" gid 0\nsif "%s" atime %s\nsif "%s" ctime %s\nsif "%s" mtime %s\n' \
      "$p" "$p" "$p" "$EPOCH" "$p" "$EPOCH" "$p" "$EPOCH"
  done >"$out.debugfs"
  E2FSPROGS_FAKE_TIME=$EPOCH debugfs -w -f "$out.debugfs" "$out" >/dev/null 2>"$out.err" ||
    die "debugfs failed: $(cat "$out.err")"
  if grep -v '^debugfs [0-9]' "$out.err" | grep -q .; then die "debugfs: $(cat "$out.err")"; fi
  rm -f "$out.debugfs" "$out.err"
}

assemble() { # P2FILE OUTFILE: MBR + p1 (boot) + p2
  local p2=$1 out=$2
  rm -f "$out"
  truncate -s "${DISK_MIB}M" "$out"
  sfdisk -q --no-reread --no-tell-kernel "$out" >/dev/null <<EOF
label: dos
label-id: $DISK_ID
unit: sectors
start=2048, size=$((P1_MIB * 2048)), type=6, bootable
start=$((2048 + P1_MIB * 2048)), size=$((P2_MIB * 2048)), type=83
EOF
  dd if=/usr/lib/syslinux/mbr/mbr.bin of="$out" bs=440 count=1 conv=notrunc status=none
  # 4 KiB blocks with conv=sparse: runs of zeros stay holes in the output.
  dd if="$WORK/tmp/p1.img" of="$out" bs=4K seek=256 conv=notrunc,sparse status=none
  dd if="$p2" of="$out" bs=4K seek=$(((1 + P1_MIB) * 256)) conv=notrunc,sparse status=none
}

check_release() { # IMAGE VERSION: read /etc/dut-release back from p2
  local got
  got=$(debugfs -R 'cat /etc/dut-release' "$1?offset=$(((1 + P1_MIB) * 1048576))" 2>/dev/null)
  [[ $got == "$2" ]] || die "$1: /etc/dut-release reads '$got', want '$2'"
}

build_image() { # NAME KIND VERSION HASH
  local name=$1 kind=$2 ver=$3 h=$4 tmp=$WORK/tmp/$1
  log "building $name"
  case $kind in
    blank)
      # All hole: without a bmap the flash engine makes the target
      # byte-identical to the image, so this must wipe the image flashed
      # before it (e2e/qemu's TestBlankImageIsAnInfrastructureFailure
      # flashes a good one first).
      rm -f "$tmp"
      truncate -s "${DISK_MIB}M" "$tmp" ;;
    corrupt)
      build_bootfs
      # A root partition with garbage where the superblock and inode tables belong, zeros after.
      rm -f "$WORK/tmp/p2-corrupt.img"
      truncate -s "${P2_MIB}M" "$WORK/tmp/p2-corrupt.img"
      (set +o pipefail; yes 'jumpstarter: corrupt flash ' | head -c 1048576) |
        dd of="$WORK/tmp/p2-corrupt.img" conv=notrunc status=none
      assemble "$WORK/tmp/p2-corrupt.img" "$tmp"
      rm -f "$WORK/tmp/p2-corrupt.img" ;;
    dut | panic | hang)
      build_bootfs
      rootfs_tree "$WORK/tmp/rootfs-$name" "$kind" "$ver"
      build_rootfs "$WORK/tmp/rootfs-$name" "$WORK/tmp/p2-$name.img"
      assemble "$WORK/tmp/p2-$name.img" "$tmp"
      check_release "$tmp" "$ver"
      rm -rf "$WORK/tmp/rootfs-$name" "$WORK/tmp/p2-$name.img" ;;
  esac
  publish "$tmp" "$name" "$h"
}

compress() { # SRC NAME FORMAT HASH
  local src=$1 name=$2 fmt=$3 h=$4 tmp=$WORK/tmp/$2
  case $fmt in
    zst) zstd -q -19 --no-progress -c "$OUT/$src" >"$tmp" ;;
    gz) gzip -9 -n -c "$OUT/$src" >"$tmp" ;;
  esac
  publish "$tmp" "$name" "$h"
  log "built $name"
}

# ---- main ------------------------------------------------------------------------------------
t0=$EPOCHREALTIME
check_tools
resolve_kernel
COMMON=$(printf 'script %s\nkernel %s %s\ntools %s\nepoch %s\n' \
  "$(sha <"$SELF")" "$KPKG" "$KVERSION" "$TOOLS" "$EPOCH" | sha)

# name kind version expect
IMAGES=()
for v in "${VERSIONS[@]}"; do IMAGES+=("dut-$v.img dut $v login"); done
IMAGES+=("blank.img blank - no-bootable-device" "corrupt.img corrupt - rescue-shell"
  "panic.img panic $PANIC_VERSION kernel-panic" "hang.img hang $HANG_VERSION hang")
# compressed name, source, format
COMPRESSED=()
for v in "${VERSIONS[@]}"; do COMPRESSED+=("dut-$v.img.zst dut-$v.img zst"); done
for v in "${GZ_VERSIONS[@]}"; do COMPRESSED+=("dut-$v.img.gz dut-$v.img gz"); done

declare -A HASH=() VERSION=() EXPECT=() FORMAT=() CUR=()
while read -r name size mtime; do CUR[${name##*/}]="$size $mtime"; done < <(
  cd "$OUT" && stat -c '%n %s %Y' -- *.img *.img.* 2>/dev/null || true)
ORDER=()
todo_images=()
for e in "${IMAGES[@]}"; do
  read -r name kind ver expect <<<"$e"
  HASH[$name]="$COMMON $name $kind $ver"
  VERSION[$name]=$ver EXPECT[$name]=$expect FORMAT[$name]=raw
  ORDER+=("$name")
  fresh "$name" "${HASH[$name]}" || todo_images+=("$e")
done
todo_compressed=()
for e in "${COMPRESSED[@]}"; do
  read -r name src fmt <<<"$e"
  HASH[$name]="${HASH[$src]} $fmt"
  VERSION[$name]=${VERSION[$src]} EXPECT[$name]=${EXPECT[$src]} FORMAT[$name]=$fmt
  ORDER+=("$name")
  fresh "$name" "${HASH[$name]}" || todo_compressed+=("$e")
done

# Compression dominates a build (zstd -19: ~6 s per image): each image's compressed copies are
# made in the background as soon as the image is ready, while the next images are built.
pids=()
start_compress() { # SRC
  local e name src fmt
  for e in "${todo_compressed[@]}"; do
    read -r name src fmt <<<"$e"
    [[ $src == "$1" ]] || continue
    compress "$src" "$name" "$fmt" "${HASH[$name]}" &
    pids+=($!)
  done
}
if [[ ${#todo_images[@]} -gt 0 || ${#todo_compressed[@]} -gt 0 ]]; then
  rm -rf "$WORK/tmp"
  mkdir -p "$WORK/tmp"
  rebuilt=" "
  for e in "${todo_images[@]}"; do rebuilt+="${e%% *} "; done
  for e in "${IMAGES[@]}"; do # sources that are up to date already
    [[ $rebuilt == *" ${e%% *} "* ]] || start_compress "${e%% *}"
  done
  for e in "${todo_images[@]}"; do
    read -r name kind ver expect <<<"$e"
    [[ $kind == blank ]] || fetch_kernel
    build_image "$name" "$kind" "$ver" "${HASH[$name]}"
    start_compress "$name"
  done
  for p in "${pids[@]}"; do wait "$p" || die "compressing failed"; done
  rm -rf "$WORK/tmp"
fi

# manifest.txt: rewritten only when its content changes.
{
  echo "# Jumpstarter QEMU DUT disk images, built by testfixtures/qemuimage/build.sh."
  echo "# kernel: $KPKG $KVERSION; busybox-static ${PKGVER[busybox-static]}"
  echo "# expect: what the serial console shows when QEMU boots the image (see build.sh)."
  printf '%-20s %-6s %-12s %-19s %9s %s\n' "# name" format version expect size sha256
  for name in "${ORDER[@]}"; do
    { read -r _ && read -r size _ sum; } <"$STAMPS/$name"
    printf '%-20s %-6s %-12s %-19s %9s %s\n' "$name" "${FORMAT[$name]}" "${VERSION[$name]}" "${EXPECT[$name]}" "$size" "$sum"
  done
} >"$OUT/manifest.txt.tmp"
if cmp -s "$OUT/manifest.txt.tmp" "$OUT/manifest.txt"; then
  rm -f "$OUT/manifest.txt.tmp"
else
  mv -f "$OUT/manifest.txt.tmp" "$OUT/manifest.txt"
fi

built=$((${#todo_images[@]} + ${#todo_compressed[@]}))
if [[ $built -eq 0 ]]; then
  log "up to date: $OUT"
else
  log "built $built file(s) in $OUT in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b-a}') s"
fi
