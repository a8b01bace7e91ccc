package dutlink

import (
	"os"
	"path/filepath"
	"testing"

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
