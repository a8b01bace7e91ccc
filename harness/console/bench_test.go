package console

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

// BenchmarkExpectThroughput streams N bytes of boot-log-like output through a
// console while an expect with a string and two regexps (one anchored, one
// able to span lines) waits for a token at the very end. The ns/byte metric
// must stay flat as N grows from 1 MiB to 64 MiB: matching is linear in the
// bytes read.
//
//	go test -run '^$' -bench ExpectThroughput -benchmem ./harness/console/
func BenchmarkExpectThroughput(b *testing.B) {
	line := "[   12.345678] usb 1-1: new high-speed USB device number 2 using xhci_hcd\r\n"
	for _, mib := range []int{1, 8, 64} {
		for _, chunk := range []int{64, 4096} {
			size := mib << 20
			data := []byte(strings.Repeat(line, size/len(line)+1)[:size])
			b.Run(fmt.Sprintf("size=%dMiB/chunk=%d", mib, chunk), func(b *testing.B) {
				b.SetBytes(int64(size))
				for b.Loop() {
					p := &benchPort{ch: make(chan []byte, 64)}
					c := New(p, Options{})
					go func() {
						for rest := data; len(rest) > 0; {
							k := min(chunk, len(rest))
							p.ch <- rest[:k]
							rest = rest[k:]
						}
						p.ch <- []byte("\r\n<done>\r\n")
					}()
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
					_, err := c.Expect(ctx, String("<done>"), RE(`(?m)^FAIL: (\w+)$`), RE(`panic\s+at`))
					cancel()
					if err != nil {
						b.Fatal(err)
					}
					_ = c.Close()
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(size), "ns/byte")
			})
		}
	}
}

// benchPort hands the console chunks through a bounded queue, like a UART
// driver's buffer, so the benchmark measures the console, not a queue.
type benchPort struct {
	ch   chan []byte
	rest []byte
}

func (p *benchPort) Read(b []byte) (int, error) {
	if len(p.rest) == 0 {
		chunk, ok := <-p.ch
		if !ok {
			return 0, io.EOF
		}
		p.rest = chunk
	}
	n := copy(b, p.rest)
	p.rest = p.rest[n:]
	return n, nil
}

func (p *benchPort) Write(b []byte) (int, error) { return len(b), nil }

func (p *benchPort) Close() error { close(p.ch); return nil }

// BenchmarkLongLines streams 4 MiB without a newline every 4 KiB, one byte
// per read (a slow UART read byte by byte), through a console with the
// harness's default watchers and a pending expect with an unanchored regexp.
// ns/byte must stay far below the 87 µs a byte takes at 115200 baud.
//
//	go test -run '^$' -bench LongLines -benchtime 3x ./harness/console/
func BenchmarkLongLines(b *testing.B) {
	for _, lineLen := range []int{80, 4096, 1 << 20} {
		line := strings.Repeat("x", lineLen-2) + "\r\n"
		size := 1 << 20
		data := []byte(strings.Repeat(line, size/len(line)+1)[:size])
		b.Run(fmt.Sprintf("line=%d/chunk=1", lineLen), func(b *testing.B) {
			b.SetBytes(int64(size))
			for b.Loop() {
				p := &benchPort{ch: make(chan []byte, 1024)}
				c := New(p, Options{})
				c.Watch("kernel panic", RE(`Kernel panic - not syncing`))
				c.Watch("no boot device", RE(`No bootable device|Boot failed: |No boot device`))
				go func() {
					for i := range data {
						p.ch <- data[i : i+1]
					}
					p.ch <- []byte("\r\n<done>\r\n")
				}()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
				_, err := c.Expect(ctx, String("<done>"), RE(`login: ?`))
				cancel()
				if err != nil {
					b.Fatal(err)
				}
				_ = c.Close()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(size), "ns/byte")
		})
	}
}

// BenchmarkCleanerFeed cleans boot-log-like lines (CRLF, no escape codes)
// in 64-byte and 4 KiB reads: plain text must cost about a copy, and each
// read a small fixed cost.
//
//	go test -run '^$' -bench CleanerFeed ./harness/console/
func BenchmarkCleanerFeed(b *testing.B) {
	line := "[   12.345678] usb 1-1: new high-speed USB device number 2 using xhci_hcd\r\n"
	data := []byte(strings.Repeat(line, 1000))
	for _, chunk := range []int{64, 4096} {
		b.Run(fmt.Sprintf("chunk=%d", chunk), func(b *testing.B) {
			cl := cleaner{stripANSI: true, newlines: true}
			dst := make([]byte, 0, len(data)+1)
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				dst = dst[:0]
				for rest := data; len(rest) > 0; {
					k := min(chunk, len(rest))
					dst = cl.feed(dst, rest[:k])
					rest = rest[k:]
				}
			}
			reads := (len(data) + chunk - 1) / chunk
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(reads), "ns/read")
		})
	}
}
