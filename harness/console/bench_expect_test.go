package console

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// refMatcher is the reference that the console's string matching is
// measured against: the simplest correct streaming matcher. One goroutine
// reads the port into a growing buffer and bytes.Index-es each read's new
// bytes (with len(token)-1 bytes of overlap) for the token, and hands each
// match's end to the goroutine waiting for it. No cleaning, no timestamps,
// no watchers, no log.
type refMatcher struct {
	found chan int // offsets just after each match
}

func newRefMatcher(port io.Reader, token []byte) *refMatcher {
	m := &refMatcher{found: make(chan int, 1)}
	go func() {
		defer close(m.found)
		buf := make([]byte, 0, 64<<10)
		rd := make([]byte, 32<<10)
		searched, after := 0, 0 // searched: bytes looked at; after: end of the last match
		for {
			n, err := port.Read(rd)
			buf = append(buf, rd[:n]...)
			for {
				start := max(after, searched-len(token)+1)
				i := bytes.Index(buf[start:], token)
				if i < 0 {
					break
				}
				after = start + i + len(token)
				m.found <- after
			}
			searched = len(buf)
			if err != nil {
				return
			}
		}
	}()
	return m
}

// expect waits for the next match.
func (m *refMatcher) expect(ctx context.Context) error {
	select {
	case _, ok := <-m.found:
		if !ok {
			return io.EOF
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// BenchmarkStringExpect streams N bytes of boot-log-like output (CRLF lines,
// no escape codes) through the console while a string Expect waits for a
// token at the very end, side by side with the reference matcher (refMatcher)
// reading the same port. Both get the same chunks through the same port
// and pay for the same producer goroutine. ns/byte is the wall time;
// cpu-ns/byte the CPU time of the whole process (all goroutines, the
// garbage collector and the spill writer included; getrusage), which a
// loaded machine disturbs less. Goal: the console's within 1.1x of the
// reference's, flat from 1 to 64 MiB.
//
//	go test -run '^$' -bench StringExpect -benchtime 3x -count 5 ./harness/console/
func BenchmarkStringExpect(b *testing.B) {
	line := "[   12.345678] usb 1-1: new high-speed USB device number 2 using xhci_hcd\r\n"
	for _, mib := range []int{1, 8, 64} {
		for _, chunk := range []int{64, 4096} {
			size := mib << 20
			data := []byte(strings.Repeat(line, size/len(line)+1)[:size])
			for _, impl := range []string{"console", "reference"} {
				b.Run(fmt.Sprintf("size=%dMiB/chunk=%d/impl=%s", mib, chunk, impl), func(b *testing.B) {
					b.SetBytes(int64(size))
					runtime.GC() // the garbage of the one before is not this one's CPU
					cpu0 := cpuTime()
					for b.Loop() {
						p := &benchPort{ch: make(chan []byte, 64)}
						go func() {
							for rest := data; len(rest) > 0; {
								k := min(chunk, len(rest))
								p.ch <- rest[:k]
								rest = rest[k:]
							}
							p.ch <- []byte("\r\n<done>\r\n")
						}()
						ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
						var err error
						if impl == "console" {
							c := New(p, Options{})
							_, err = c.Expect(ctx, String("<done>"))
							_ = c.Close()
							waitSpilled(c) // its spill is its cost, not the next one's
						} else {
							err = newRefMatcher(p, []byte("<done>")).expect(ctx)
							_ = p.Close()
						}
						cancel()
						if err != nil {
							b.Fatal(err)
						}
					}
					b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(size), "ns/byte")
					b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N)/float64(size), "cpu-ns/byte")
				})
			}
		}
	}
}

// waitSpilled waits, after Close, until the console's spill writers have
// written all they were given.
func waitSpilled(c *Console) {
	<-c.Done()
	for _, s := range []*spool{&c.raw, &c.clean, &c.stamps} {
		if s.w != nil {
			<-s.w.idle
		}
	}
}

// pipePort is a console port over an OS pipe, like a pty or a socket: the
// benchmark writes the device's output into w.
type pipePort struct{ r, w *os.File }

func newPipePort(b *testing.B) *pipePort {
	r, w, err := os.Pipe()
	if err != nil {
		b.Fatal(err)
	}
	return &pipePort{r, w}
}

func (p *pipePort) Read(b []byte) (int, error)  { return p.r.Read(b) }
func (p *pipePort) Write(b []byte) (int, error) { return len(b), nil }
func (p *pipePort) Close() error                { _ = p.w.Close(); return p.r.Close() }

// BenchmarkWakeAfterBurst writes a 1 MiB burst of output ending in a token
// into a pipe while an expect waits for the token, and measures the wake-up
// latency: from the burst's last byte written (the pipe's Write returned)
// to Expect returning. It reports the median and the 90th percentile over
// the iterations (wake-p50-µs, wake-p90-µs), for the console and the
// reference matcher. Goal: under 1 ms.
//
//	go test -run '^$' -bench WakeAfterBurst -benchtime 100x -count 5 ./harness/console/
func BenchmarkWakeAfterBurst(b *testing.B) {
	line := "[   12.345678] usb 1-1: new high-speed USB device number 2 using xhci_hcd\r\n"
	burst := []byte(strings.Repeat(line, (1<<20)/len(line)) + "<done>\r\n")
	for _, impl := range []string{"console", "reference"} {
		b.Run("impl="+impl, func(b *testing.B) {
			p := newPipePort(b)
			var expect func(context.Context) error
			if impl == "console" {
				c := New(p, Options{})
				defer c.Close()
				expect = func(ctx context.Context) error { _, err := c.Expect(ctx, String("<done>")); return err }
			} else {
				defer p.Close()
				expect = newRefMatcher(p, []byte("<done>")).expect
			}
			var wakes []time.Duration
			b.SetBytes(int64(len(burst)))
			for b.Loop() {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				woke := make(chan time.Time, 1)
				errc := make(chan error, 1)
				go func() {
					err := expect(ctx)
					woke <- time.Now()
					errc <- err
				}()
				if _, err := p.w.Write(burst); err != nil {
					b.Fatal(err)
				}
				written := time.Now()
				at := <-woke
				if err := <-errc; err != nil {
					b.Fatal(err)
				}
				cancel()
				wakes = append(wakes, max(0, at.Sub(written)))
			}
			slices.Sort(wakes)
			b.ReportMetric(float64(wakes[len(wakes)/2].Nanoseconds())/1e3, "wake-p50-µs")
			b.ReportMetric(float64(wakes[len(wakes)*9/10].Nanoseconds())/1e3, "wake-p90-µs")
		})
	}
}
