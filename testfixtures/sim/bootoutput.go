package sim

import "strings"

// bootOutput is what sim-0 prints at power-on with image 1.0.0 on its
// disk, from the firmware to the login prompt.
const bootOutput = "SimBIOS 1.0 (sim-0)\r\nDRAM:  512 MiB\r\nBoot device: mmc0\r\nLoading kernel from mmc0 ...\r\nStarting kernel ...\r\n\r\n" +
	"[    0.000000] Booting Linux on physical CPU 0x0\r\n" +
	"[    0.000000] Linux version 6.1.0-sim (1.0.0) (gcc (Debian 12.2.0-14) 12.2.0) #1 SMP PREEMPT\r\n" +
	"[    0.000000] Machine model: Jumpstarter Sim Board\r\n" +
	"[    0.000000] Kernel command line: console=ttyS0,115200 root=/dev/mmcblk0p1 rootwait\r\n" +
	"[    0.612345] mmc0: new high speed SDHC card at address 0001\r\n" +
	"[    1.234567] EXT4-fs (mmcblk0p1): mounted filesystem with ordered data mode. Quota mode: none.\r\n" +
	"[    1.345678] Run /sbin/init as init process\r\n" +
	"[    1.456789] systemd[1]: Hostname set to <sim-0>.\r\n\r\n" +
	"Welcome to Jumpstarter Sim Linux 1.0.0!\r\n\r\n" +
	"[  OK  ] Reached target multi-user.target - Multi-User System.\r\n\r\n" +
	"Jumpstarter Sim Linux 1.0.0 sim-0 ttyS0\r\n\r\nsim-0 login: "

// BootOutput is every byte a device named name prints at power-on with
// image 1.0.0 on its disk (simimage.Spec{Version: "1.0.0"}), from the
// firmware to the login prompt, written out literally: what the driver
// contract (drivertest.ConsoleSpec.Boot) of anything carrying a simulated
// console expects, so that a lost or changed byte is noticed.
func BootOutput(name string) string { return strings.ReplaceAll(bootOutput, "sim-0", name) }
