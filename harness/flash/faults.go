package flash

import "time"

// faults are the fault-injection hooks of one [Write], set by this
// package's tests through Options.faults (nil in production). Being per
// call, tests that inject faults run in parallel.
type faults struct {
	// write is called before each write to the target, whose error it
	// can fake (a disk that goes away).
	write func(off int64, n int) error
	// synced is called after each sync of the target with the bytes
	// written so far.
	synced func(written int64)
	// zero is called before each zeroing and may fake an error, or skip
	// the zeroing while claiming success (a device that lies).
	zero func(off, n int64) (skip bool, err error)
	// refuseZero makes the target refuse a zeroMethod.
	refuseZero func(m zeroMethod) bool
	// readBack sees (and may corrupt) what is read back.
	readBack func(p []byte, off int64)
	// verifyFailed is told when the verifier fails.
	verifyFailed func(error)
	// hashed is called when the image's SHA-256 is computed, before the
	// check that the file did not change meanwhile.
	hashed func()
	// racyWindow, when set, replaces the hash cache's racyWindow.
	racyWindow *time.Duration
}

func (f *faults) onWrite(off int64, n int) error {
	if f == nil || f.write == nil {
		return nil
	}
	return f.write(off, n)
}

func (f *faults) onSync(written int64) {
	if f != nil && f.synced != nil {
		f.synced(written)
	}
}

func (f *faults) onZero(off, n int64) (bool, error) {
	if f == nil || f.zero == nil {
		return false, nil
	}
	return f.zero(off, n)
}

func (f *faults) refuses(m zeroMethod) bool {
	return f != nil && f.refuseZero != nil && f.refuseZero(m)
}

func (f *faults) onReadBack(p []byte, off int64) {
	if f != nil && f.readBack != nil {
		f.readBack(p, off)
	}
}

func (f *faults) onVerifyFailed(err error) {
	if f != nil && f.verifyFailed != nil {
		f.verifyFailed(err)
	}
}

func (f *faults) onHashed() {
	if f != nil && f.hashed != nil {
		f.hashed()
	}
}
