package console

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// byteShell plays a shell on a UART read one byte per Read: each framed
// command line it receives prints output and the markers.
type byteShell struct {
	mu     sync.Mutex
	cond   *sync.Cond
	out    []byte // waiting to be read
	line   []byte
	output []byte // what every command prints
	closed bool
	pace   time.Duration // sleep before each byte read
}

func newByteShell(output []byte) *byteShell {
	s := &byteShell{output: output}
	s.cond = sync.NewCond(&s.mu)
	return s
}

func (s *byteShell) Read(b []byte) (int, error) {
	if s.pace > 0 {
		time.Sleep(s.pace)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.out) == 0 && !s.closed {
		s.cond.Wait()
	}
	if s.closed {
		return 0, io.EOF
	}
	b[0] = s.out[0]
	s.out = s.out[1:]
	return 1, nil
}

func (s *byteShell) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ch := range b {
		if ch != '\n' {
			s.line = append(s.line, ch)
			continue
		}
		s.out = append(s.out, s.line...)
		s.out = append(s.out, "\r\n"...)
		if m := framedCommand.FindStringSubmatch(string(s.line)); m != nil {
			s.out = append(s.out, m[1]+m[2]+"\r\n"...)
			s.out = append(s.out, s.output...)
			s.out = append(s.out, "\r\n"+m[4]+m[5]+":0\r\n"...)
		}
		s.out = append(s.out, "# "...)
		s.line = s.line[:0]
		s.cond.Signal()
	}
	return len(b), nil
}

func (s *byteShell) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cond.Broadcast()
	return nil
}

// cpuTime returns the CPU time the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkRunByteReads runs a command whose output (80-byte lines) arrives
// one byte per read, as from a UART driver that returns each byte as it
// comes. ns/byte must stay flat as the output grows: Run's markers are found
// by a streaming search, never by re-scanning old output. (At 115200 baud a
// byte arrives every 87 µs.) The reader goroutine searches each read as it
// arrives, so every single-byte read is searched on its own. cpu-ns/byte is
// the CPU time of the whole process per byte.
//
//	go test -run '^$' -bench RunByteReads -benchtime 3x -count 5 ./harness/console/
func BenchmarkRunByteReads(b *testing.B) {
	type variant struct {
		size int
		pace time.Duration
	}
	var variants []variant
	for _, size := range []int{16 << 10, 64 << 10, 256 << 10, 1 << 20} {
		variants = append(variants, variant{size, 0})
	}
	for _, v := range variants {
		size := v.size
		name := fmt.Sprintf("output=%dKiB", size>>10)
		if v.pace > 0 {
			name += fmt.Sprintf("/paced=%s", v.pace)
		}
		b.Run(name, func(b *testing.B) {
			line := strings.Repeat("y", 78) + "\r\n"
			output := []byte(strings.Repeat(line, size/len(line)+1)[:size])
			sh := newByteShell(output)
			sh.pace = v.pace
			c := New(sh, Options{})
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			b.SetBytes(int64(size))
			cpu0 := cpuTime()
			for b.Loop() {
				res, err := c.Run(ctx, "cat big")
				if err != nil {
					b.Fatal(err)
				}
				if len(res.Output) != size-size/len(line) {
					b.Fatalf("output of %d bytes", len(res.Output))
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(size), "ns/byte")
			b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N)/float64(size), "cpu-ns/byte")
		})
	}
}

// BenchmarkMarkerSearchByteByByte searches for Run's end marker after each
// single byte of 80-byte lines, as the reader does when a UART delivers one
// byte per read: "literal" is what Run waits for now, "regexp" the end-marker
// regexp it used before (`\r*\n<marker>:(\d+)\r*\n`, which re-scanned the
// window at every read; here only at each newline, thanks to its required
// literal "\n"). ns/byte must not grow with the output.
//
//	go test -run '^$' -bench MarkerSearchByteByByte -count 5 ./harness/console/
func BenchmarkMarkerSearchByteByByte(b *testing.B) {
	const marker = "JS0123abcd4567efJE"
	patterns := map[string]Pattern{
		"literal": String("\n" + marker + ":"),
		"regexp":  RE(`\r*\n` + marker + `:(\d+)\r*\n`),
	}
	for _, name := range []string{"literal", "regexp"} {
		for _, size := range []int{16 << 10, 256 << 10} {
			b.Run(fmt.Sprintf("%s/output=%dKiB", name, size>>10), func(b *testing.B) {
				line := strings.Repeat("y", 79) + "\n"
				text := []byte(strings.Repeat(line, size/len(line)+1)[:size])
				b.SetBytes(int64(size))
				for b.Loop() {
					s := scan{p: patterns[name]}
					for end := 1; end <= len(text); end++ {
						if s.find(text, 0, 0, end, 4<<10, true) != nil {
							b.Fatal("matched")
						}
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(size), "ns/byte")
			})
		}
	}
}
