package dutlink

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A USB 3 hub appears on both buses; its SuperSpeed side is found through
// the peer link of the port it hangs from, below a root hub and below
// another hub.
func TestPeerHubFollowsTheUpstreamPortsPeerLink(t *testing.T) {
	pci := t.TempDir()
	mk := func(p string) string {
		require.NoError(t, os.MkdirAll(filepath.Join(pci, p), 0o755))
		return filepath.Join(pci, p)
	}
	link := func(from, to string) {
		require.NoError(t, os.Symlink(filepath.Join(pci, to), filepath.Join(pci, from)))
	}
	// Root ports: usb1-port2 <-> usb2-port2.
	mk("usb1/1-0:1.0/usb1-port2")
	mk("usb2/2-0:1.0/usb2-port2")
	link("usb1/1-0:1.0/usb1-port2/peer", "usb2/2-0:1.0/usb2-port2")
	link("usb2/2-0:1.0/usb2-port2/peer", "usb1/1-0:1.0/usb1-port2")
	hs := mk("usb1/1-2")
	ss := mk("usb2/2-2")
	// A hub at port 4 of a hub at 1-3 / 2-3.
	mk("usb1/1-3/1-3:1.0/1-3-port4")
	mk("usb2/2-3/2-3:1.0/2-3-port4")
	link("usb1/1-3/1-3:1.0/1-3-port4/peer", "usb2/2-3/2-3:1.0/2-3-port4")
	hs2 := mk("usb1/1-3/1-3.4")
	ss2 := mk("usb2/2-3/2-3.4")
	// A USB 2-only hub: no peer.
	mk("usb1/1-0:1.0/usb1-port5")
	hs3 := mk("usb1/1-5")

	assert.Equal(t, ss, peerHub(hs))
	assert.Equal(t, hs, peerHub(ss))
	assert.Equal(t, ss2, peerHub(hs2))
	assert.Equal(t, "", peerHub(hs3))
}

// A board on a root port has no hub of its own to tell its disk by: only a
// filter that is the board's own identifies its disk, and only when it names
// exactly one disk. A filter for every board never does, whatever appears
// when.
func TestRootPortBoardNeedsItsOwnFilterNamingOneDisk(t *testing.T) {
	root := t.TempDir()
	sysfs, dev := filepath.Join(root, "sys"), filepath.Join(root, "dev")
	usb := filepath.Join(sysfs, "devices", "pci0000:00", "usb1")
	board := filepath.Join(usb, "1-2")
	byID := filepath.Join(dev, "disk", "by-id")
	for _, d := range []string{board, filepath.Join(sysfs, "class", "block"), byID} {
		require.NoError(t, os.MkdirAll(d, 0o755))
	}
	addDisk := func(name, id, port string) {
		blk := filepath.Join(usb, port, "block", name)
		require.NoError(t, os.MkdirAll(blk, 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(blk, "size"), []byte("2048\n"), 0o644))
		require.NoError(t, os.Symlink(blk, filepath.Join(sysfs, "class", "block", name)))
		require.NoError(t, os.WriteFile(filepath.Join(dev, name), nil, 0o644))
		require.NoError(t, os.Symlink("../../"+name, filepath.Join(byID, "usb-"+id+"-0:0")))
	}
	b := Board{Serial: "0a0b0c0d", SysPath: board}
	shared := storageLocator{sysfs: sysfs, dev: dev, board: b, filter: "Lab_Stick", from: EnvStorageFilter}
	require.Nil(t, shared.hubs(), "a root port: topology cannot tell")
	_, err := shared.wait(context.Background(), time.Second)
	require.ErrorIs(t, err, ErrUnprovenDisk, "a filter for every board is not an identity")
	assert.Contains(t, err.Error(), "dut config 0a0b0c0d set storage_filter")
	assert.Contains(t, err.Error(), EnvStorageFilter+"=0a0b0c0d=")

	addDisk("sdb", "Lab_Stick_4C53B", "1-4") // the board's stick
	own := storageLocator{sysfs: sysfs, dev: dev, board: b, filter: "4C53B", own: true}
	d, err := own.wait(context.Background(), time.Second)
	require.NoError(t, err)
	assert.Equal(t, "sdb", d.name)

	addDisk("sda", "Lab_Stick_77AA", "1-3") // someone else's stick
	d, err = own.wait(context.Background(), time.Second)
	require.NoError(t, err, "a stranger the filter does not name changes nothing")
	assert.Equal(t, "sdb", d.name)
	broad := storageLocator{sysfs: sysfs, dev: dev, board: b, filter: "Lab_Stick", own: true}
	_, err = broad.wait(context.Background(), time.Second)
	require.ErrorIs(t, err, ErrAmbiguousDisk, "a board's own filter that names two disks names neither")
	assert.Contains(t, err.Error(), "nothing was written")
	assert.Error(t, broad.stillOnly(d), "and a write to the disk it named before is refused")
}

// Topology counts only on the board's own hub (hardware 2.0.0): the
// controller on port 6, the disk on port 3. A board on another hub's port
// (hardware 1.1.0 behind an external hub) needs its own filter, and on its
// own hub a disk on any port but 3 is a stranger's.
func TestTopologyCountsOnlyOnTheBoardsOwnHub(t *testing.T) {
	root := t.TempDir()
	sysfs, dev := filepath.Join(root, "sys"), filepath.Join(root, "dev")
	usb := filepath.Join(sysfs, "devices", "pci0000:00", "usb1")
	require.NoError(t, os.MkdirAll(filepath.Join(sysfs, "class", "block"), 0o755))
	addDisk := func(name, port string) {
		blk := filepath.Join(usb, port, "block", name)
		require.NoError(t, os.MkdirAll(blk, 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(blk, "size"), []byte("2048\n"), 0o644))
		require.NoError(t, os.Symlink(blk, filepath.Join(sysfs, "class", "block", name)))
	}
	addDisk("sda", "1-2/1-2.4") // a stranger's stick on the same hub
	external := storageLocator{sysfs: sysfs, dev: dev, board: Board{Serial: "0a0b0c0d", SysPath: filepath.Join(usb, "1-2", "1-2.1")}}
	require.ErrorIs(t, external.identity(), ErrUnprovenDisk)
	assert.Contains(t, external.identity().Error(), "not off port 6 of a hub of its own")

	own := storageLocator{sysfs: sysfs, dev: dev, board: Board{Serial: "0a0b0c0d", SysPath: filepath.Join(usb, "1-2", "1-2.6")}}
	require.NoError(t, own.identity())
	c, err := own.candidates()
	require.NoError(t, err)
	assert.Empty(t, c, "a disk on port 4 is not the board's")
	addDisk("sdb", "1-2/1-2.3") // the mux's port
	c, err = own.candidates()
	require.NoError(t, err)
	require.Len(t, c, 1)
	assert.Equal(t, "sdb", c[0].name)
}
