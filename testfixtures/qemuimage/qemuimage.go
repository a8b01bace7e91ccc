// Package qemuimage finds the bootable disk images of the QEMU virtual DUT:
// small raw disks that a test flashes and QEMU boots like a real board, from
// BIOS to a login prompt on the serial console.
//
// The images are not in the repository. build.sh in this directory builds
// them from Debian packages (make qemu-images; deps.sh installs the
// packages), into out/qemu-images under the repository root. [Dir] finds that
// directory, or the one named by the environment variable DUT_QEMU_IMAGES,
// and [Path] returns an image's path or an error that says how to build it.
//
// # Images
//
// Every image is a 48 MiB raw disk: an MBR, a FAT boot partition with
// syslinux, the Debian cloud kernel and an initramfs, and an ext2 root file
// system with busybox. Booted with SeaBIOS (qemu-system-x86_64 -nographic
// -serial stdio, disk if=virtio or if=ide), the serial console shows:
//
//   - [DUT] version (dut-1.0.0.img, dut-2.0.0.img; also .zst, and .gz for
//     1.0.0): the line [Banner] returns for the version, such as
//     "Jumpstarter QEMU DUT 1.0.0", then [LoginPrompt]. root logs in
//     without a password, to the prompt [ShellPrompt]. /etc/dut-release holds
//     the version and a newline, /etc/os-release has VERSION_ID. reboot
//     reboots the VM back to the login prompt, poweroff powers it off (QEMU
//     exits). The root file system is mounted read-write.
//   - [Blank]: all zeros; SeaBIOS prints [NoBootableDevice] (its serial
//     output needs -nographic or -machine graphics=off).
//   - [Corrupt]: a good boot partition but garbage in the root partition; the
//     initramfs prints [NoRootfs] and starts a shell with the prompt
//     [RescuePrompt].
//   - [Panic]: the root file system's init exits; the kernel prints
//     [KernelPanic] and the VM hangs (panic=0).
//   - [Hang]: the initramfs switches to the root file system, whose init
//     then prints nothing, forever: no login prompt.
//
// manifest.txt in the directory lists each image's format, version, expected
// outcome, size and SHA-256.
//
// Boot an image from a copy (the root file system is writable), so that the
// build output stays as built.
package qemuimage

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// EnvDir names the environment variable that, when set, is the images'
// directory.
const EnvDir = "DUT_QEMU_IMAGES"

// DefaultDir is the images' directory relative to the repository root, where
// make qemu-images puts them.
const DefaultDir = "out/qemu-images"

// modulePath identifies the repository root's go.mod.
const modulePath = "github.com/jumpstarter-dev/jumpstarter-go"

// The failure images and the manifest, by file name.
const (
	Blank    = "blank.img"
	Corrupt  = "corrupt.img"
	Panic    = "panic.img"
	Hang     = "hang.img"
	Manifest = "manifest.txt"
)

// What the serial console shows.
const (
	// LoginPrompt is getty's prompt on a bootable image.
	LoginPrompt = "dut login: "
	// ShellPrompt is root's shell prompt after logging in (busybox ash then
	// sends ESC [ 6 n, a cursor position query).
	ShellPrompt = "root@dut:~# "
	// NoBootableDevice is SeaBIOS's message for a disk without a boot loader.
	NoBootableDevice = "No bootable device."
	// NoRootfs starts the initramfs's message when partition 2 holds no
	// usable root file system; the rest of the line says why.
	NoRootfs = "stage1: ERROR: no bootable rootfs"
	// RescuePrompt is the initramfs's rescue shell's prompt.
	RescuePrompt = "rescue# "
	// KernelPanic is the kernel's message when init exits.
	KernelPanic = "Kernel panic - not syncing: Attempted to kill init!"
)

// Versions returns the versions of the bootable images, oldest first.
func Versions() []string { return []string{"1.0.0", "2.0.0"} }

// DUT returns the file name of the bootable raw image of a version, such as
// "dut-1.0.0.img". Its compressed copies add ".zst" or ".gz".
func DUT(version string) string { return "dut-" + version + ".img" }

// Banner returns the line a bootable image prints at boot, before the login
// prompt, such as "Jumpstarter QEMU DUT 1.0.0". It is followed by a line end.
func Banner(version string) string { return "Jumpstarter QEMU DUT " + version }

// Dir returns the images' directory: $DUT_QEMU_IMAGES when set, otherwise
// out/qemu-images in the repository root, found by walking up from the
// current directory to the go.mod of module
// github.com/jumpstarter-dev/jumpstarter-go. Outside the repository it
// returns out/qemu-images in the current directory. The directory may not
// exist; [Path] says so.
func Dir() string {
	if d := os.Getenv(EnvDir); d != "" {
		if abs, err := filepath.Abs(d); err == nil {
			return abs
		}
		return d
	}
	wd, err := os.Getwd()
	if err != nil {
		return DefaultDir
	}
	for d := wd; ; {
		if isRepoRoot(d) {
			return filepath.Join(d, DefaultDir)
		}
		parent := filepath.Dir(d)
		if parent == d {
			return filepath.Join(wd, DefaultDir)
		}
		d = parent
	}
}

// isRepoRoot reports whether dir holds this repository's go.mod (not that of
// a nested module such as tools/).
func isRepoRoot(dir string) bool {
	f, err := os.Open(filepath.Join(dir, "go.mod"))
	if err != nil {
		return false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if rest, ok := strings.CutPrefix(line, "module"); ok && rest != "" && (rest[0] == ' ' || rest[0] == '\t') {
			if i := strings.Index(rest, "//"); i >= 0 {
				rest = rest[:i]
			}
			return strings.Trim(strings.TrimSpace(rest), `"`+"`") == modulePath
		}
	}
	return false
}

// Path returns the path of the image (or other file) name in [Dir]. When the
// file does not exist, the error, which matches [fs.ErrNotExist], says to run
// make qemu-images.
func Path(name string) (string, error) {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, `/\`) {
		return "", fmt.Errorf("qemuimage: %q is not an image file name", name)
	}
	dir := Dir()
	p := filepath.Join(dir, name)
	if _, err := os.Stat(p); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("qemuimage: no %s in %s: build the QEMU DUT images with `make qemu-images` "+
				"(testfixtures/qemuimage/build.sh; root installs its packages with testfixtures/qemuimage/deps.sh), "+
				"or set %s to their directory: %w", name, dir, EnvDir, err)
		}
		return "", fmt.Errorf("qemuimage: %w", err)
	}
	return p, nil
}
