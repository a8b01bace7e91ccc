package console

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSpoolReadsBackWhatWasWritten(t *testing.T) {
	s := newSpool(1000, 1, t.TempDir())
	r := rand.New(rand.NewPCG(1, 2))
	var want []byte
	for range 500 {
		p := make([]byte, r.IntN(300))
		for i := range p {
			p[i] = byte(r.IntN(256))
		}
		s.write(p)
		s.maybeSpill()
		want = append(want, p...)
		require.Equal(t, len(want), s.len())
		assert.LessOrEqual(t, len(s.mem), 1000+300, "memory stays bounded")
	}
	require.NoError(t, s.err)
	require.Greater(t, s.base, 0, "it spilled")
	for range 2000 {
		lo := r.IntN(len(want))
		hi := lo + r.IntN(len(want)-lo+1)
		got, err := s.copyRange(lo, hi)
		require.NoError(t, err)
		require.True(t, bytes.Equal(want[lo:hi], got), "[%d,%d) with base %d", lo, hi, s.base)
		v, base := s.view(lo, hi)
		require.Equal(t, lo, base)
		require.True(t, bytes.Equal(want[lo:hi], v))
	}
}

func TestSpoolKeepsWholeRecords(t *testing.T) {
	s := newSpool(100, stampSize, t.TempDir())
	for i := range 1000 {
		var rec [stampSize]byte
		putStamp(rec[:], stamp{clean: i, raw: 2 * i})
		s.write(rec[:])
		s.maybeSpill()
		require.Zero(t, s.base%stampSize)
	}
	for _, i := range []int{0, 1, 500, 998, 999} {
		b, err := s.copyRange(i*stampSize, (i+1)*stampSize)
		require.NoError(t, err)
		st := getStamp(b, time.UTC)
		assert.Equal(t, i, st.clean)
		assert.Equal(t, 2*i, st.raw)
	}
}
