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
	s := newSpool(1000, 1, t.TempDir(), 0)
	r := rand.New(rand.NewPCG(1, 2))
	var want []byte
	for range 500 {
		p := make([]byte, r.IntN(300))
		for i := range p {
			p[i] = byte(r.IntN(256))
		}
		s.write(p)
		s.maybeSpill()
		s.sendPending()
		s.waitSpilled()
		s.reclaim()
		want = append(want, p...)
		require.Equal(t, len(want), s.len())
		assert.LessOrEqual(t, s.inMemory(), 1000+2*s.bsize+300, "memory stays bounded")
	}
	require.NoError(t, s.spillErr())
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
	s := newSpool(100, stampSize, t.TempDir(), 0)
	for i := range 1000 {
		var rec [stampSize]byte
		putStamp(rec[:], stamp{clean: i, raw: 2 * i})
		s.write(rec[:])
		s.maybeSpill()
		s.sendPending()
		if i%100 == 0 {
			s.waitSpilled()
		}
		s.reclaim()
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

// TestSpoolViewsAcrossBlocks reads random ranges, growing and shifting as a
// search's would, of a spool of small blocks, some spilled, some queued.
func TestSpoolViewsAcrossBlocks(t *testing.T) {
	for _, bsize := range []int{1, 16, 100} {
		s := newSpool(300, 1, t.TempDir(), bsize)
		r := rand.New(rand.NewPCG(uint64(bsize), 3))
		var want []byte
		lo := 0
		for i := range 3000 {
			p := make([]byte, r.IntN(40))
			for i := range p {
				p[i] = byte(r.IntN(256))
			}
			s.commit(append(s.reserve(len(p)), p...))
			want = append(want, p...)
			s.maybeSpill()
			s.sendPending()
			if i%50 == 0 {
				s.waitSpilled()
			}
			if r.IntN(20) == 0 {
				lo = r.IntN(len(want) + 1)
			}
			lo = max(lo, len(want)-r.IntN(200)-1, 0)
			v, base := s.view(lo, len(want))
			require.Equal(t, lo, base)
			require.True(t, bytes.Equal(want[lo:], v), "bsize %d: [%d,%d) with base %d", bsize, lo, len(want), s.base)
			if s.base <= lo {
				end := s.stepEnd(lo)
				require.Greater(t, end, min(lo, len(want)-1))
				v, _ := s.view(lo, end)
				require.True(t, bytes.Equal(want[lo:end], v))
			}
		}
		require.NoError(t, s.spillErr())
		s.waitSpilled()
		s.maybeSpill()
		require.Greater(t, s.base, 0, "it spilled")
		got, err := s.copyRange(0, len(want))
		require.NoError(t, err)
		require.True(t, bytes.Equal(want, got))
	}
}
