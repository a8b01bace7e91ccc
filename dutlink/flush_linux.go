package dutlink

import (
	"os"

	"golang.org/x/sys/unix"
)

// flushBuffers drops a block device's buffer cache (BLKFLSBUF) after the
// data was synced; regular files (simulated disks) have none.
func flushBuffers(f *os.File) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.Mode()&os.ModeDevice == 0 {
		return nil
	}
	return unix.IoctlSetInt(int(f.Fd()), unix.BLKFLSBUF, 0)
}
