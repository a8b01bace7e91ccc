package console

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// floodChunk returns n bytes of console noise: lines of varying length,
// CRLF and CRCRLF, colour codes, a title string, progress bars redrawn with
// CR.
func floodChunk(r *rand.Rand, n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		switch r.IntN(6) {
		case 0:
			fmt.Fprintf(&b, "[%6d.%06d] \x1b[1;31mnoisy\x1b[0m driver line %d\r\n", i, r.IntN(1e6), i)
		case 1:
			fmt.Fprintf(&b, "\x1b]0;title %d\x07progress %d%%\r", i, r.IntN(100))
		case 2:
			b.WriteString(strings.Repeat("z", r.IntN(300)) + "\r\r\n")
		case 3:
			b.WriteString("\r\n")
		default:
			fmt.Fprintf(&b, "line %d of the flood\r\n", i)
		}
	}
	return b.Bytes()[:n]
}

var logPrefix = regexp.MustCompile(`(?m)^\d\d:\d\d:\d\d\.\d{6} \| `)

// TestHugeFloodLosesNoByte floods the console with more than its memory
// tail, so that most of the transcript is spilled, and checks that the raw
// log is byte-identical to what was sent, the cleaned log and Text are the
// cleaned stream, and expects still see every byte.
func TestHugeFloodLosesNoByte(t *testing.T) {
	size := 8 << 20
	if testing.Short() {
		size = 4 << 20
	}
	r := rand.New(rand.NewPCG(11, 12))
	input := append(floodChunk(r, size), "\r\n<end of flood>\r\n"...)
	c, p := newTestConsole(t, Options{MemoryTail: 1}) // the smallest tail
	go func() {
		for rest := input; len(rest) > 0; {
			k := min(len(rest), 1+r.IntN(64<<10))
			p.Emit(rest[:k])
			rest = rest[k:]
		}
	}()
	ctx := ctxFor(t, 2*time.Minute)
	// An expect that starts behind the reader and catches up.
	m, err := c.Expect(ctx, String("<end of flood>"))
	require.NoError(t, err)
	want := (&cleaner{stripANSI: true, newlines: true}).feed(nil, input)
	assert.Equal(t, len(want)-len("\n"), m.End, "the match is at the end")
	c.mu.Lock()
	c.clean.waitSpilled() // the writer does not take the lock
	c.clean.reclaim()
	spilled, inMemory := c.clean.base, c.clean.inMemory()
	c.mu.Unlock()
	require.Greater(t, spilled, size/4, "the transcript was spilled")
	assert.Less(t, inMemory, 3<<20, "the memory tail (2 MiB at least) and a block")

	var raw bytes.Buffer
	require.NoError(t, c.WriteRaw(&raw, Mark{}, Mark{}))
	require.True(t, bytes.Equal(input, raw.Bytes()), "raw log of %d bytes differs from the %d sent", raw.Len(), len(input))
	require.True(t, bytes.Equal(input, c.Raw(Mark{}, Mark{})))
	require.True(t, bytes.Equal(want, []byte(c.Text(Mark{}, Mark{}))))

	var log bytes.Buffer
	require.NoError(t, c.WriteLog(&log, Mark{}, Mark{}))
	lines := bytes.Count(log.Bytes(), []byte("\n"))
	stripped := logPrefix.ReplaceAll(log.Bytes(), nil)
	require.Equal(t, bytes.Count(want, []byte("\n")), lines, "one log line per line")
	require.True(t, bytes.Equal(want, stripped), "the cleaned log is the cleaned stream")

	// A slice from a mark in the spilled part.
	mid := Mark{Raw: len(input) / 3}
	var part bytes.Buffer
	require.NoError(t, c.WriteRaw(&part, mid, Mark{Raw: len(input) / 2}))
	require.True(t, bytes.Equal(input[len(input)/3:len(input)/2], part.Bytes()))
}

// blockingWriter blocks its first Write until released.
type blockingWriter struct {
	once    sync.Once
	entered chan struct{}
	release chan struct{}
	n       int
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	w.once.Do(func() {
		close(w.entered)
		<-w.release
	})
	w.n += len(p)
	return len(p), nil
}

func TestWriteLogDoesNotHoldTheConsole(t *testing.T) {
	for _, raw := range []bool{false, true} {
		t.Run(fmt.Sprintf("raw=%v", raw), func(t *testing.T) {
			c, p := newTestConsole(t, Options{})
			p.EmitString(strings.Repeat("boot line\r\n", 100_000))
			_, err := c.Expect(ctxFor(t, time.Minute), String("boot line\nboot line\n"))
			require.NoError(t, err)
			end := c.Mark()
			w := &blockingWriter{entered: make(chan struct{}), release: make(chan struct{})}
			done := make(chan error, 1)
			go func() {
				if raw {
					done <- c.WriteRaw(w, Mark{}, end)
				} else {
					done <- c.WriteLog(w, Mark{}, end)
				}
			}()
			<-w.entered
			// While the log's writer is stuck, the console goes on.
			p.EmitString("login: ")
			_, err = c.Expect(ctxFor(t, 10*time.Second), String("login: "))
			require.NoError(t, err, "an expect must not wait for a log being written")
			close(w.release)
			require.NoError(t, <-done)
			assert.GreaterOrEqual(t, w.n, end.Raw)
		})
	}
}

// BenchmarkFloodMemory floods the console with 100 MB (lines of noise in
// 32 KiB reads) while an expect waits for its end, then writes the whole
// console.log and console.raw as the harness does at the end of a test. It
// reports the peak of the heap in use (sampled every 5 ms with
// runtime.ReadMemStats) and the allocations per byte: the transcript's
// memory is bounded by Options.MemoryTail, not by the output.
//
//	go test -run '^$' -bench FloodMemory -benchtime 1x -count 3 ./harness/console/
func BenchmarkFloodMemory(b *testing.B) {
	const size = 100 << 20
	r := rand.New(rand.NewPCG(3, 4))
	chunk := floodChunk(r, 32<<10)
	for b.Loop() {
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		peak := before.HeapInuse
		stop := make(chan struct{})
		sampled := make(chan struct{})
		go func() {
			defer close(sampled)
			t := time.NewTicker(5 * time.Millisecond)
			defer t.Stop()
			for {
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				peak = max(peak, ms.HeapInuse)
				select {
				case <-stop:
					return
				case <-t.C:
				}
			}
		}()
		p := &benchPort{ch: make(chan []byte, 16)}
		c := New(p, Options{})
		go func() {
			for sent := 0; sent < size; sent += len(chunk) {
				p.ch <- chunk
			}
			p.ch <- []byte("\r\n<done>\r\n")
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		if _, err := c.Expect(ctx, String("<done>")); err != nil {
			b.Fatal(err)
		}
		cancel()
		if err := c.WriteLog(io.Discard, Mark{}, Mark{}); err != nil {
			b.Fatal(err)
		}
		if err := c.WriteRaw(io.Discard, Mark{}, Mark{}); err != nil {
			b.Fatal(err)
		}
		_ = c.Close()
		close(stop)
		<-sampled
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(peak-before.HeapInuse)/(1<<20), "peak-heap-MiB")
		b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/size, "alloc-bytes/byte")
	}
	b.SetBytes(size)
}
