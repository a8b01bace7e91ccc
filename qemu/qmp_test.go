package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// qmpServer is a scripted QMP server on a unix socket: handle answers each
// command (its reply lines are written as they are, the id filled in).
type qmpServer struct {
	path   string
	l      net.Listener
	handle func(cmd string, args json.RawMessage, w func(string)) // w writes one line
	noHi   bool                                                   // no greeting
	mu     sync.Mutex
	conns  []net.Conn
	got    []string
}

func newQMPServer(t *testing.T, handle func(cmd string, args json.RawMessage, w func(string))) *qmpServer {
	t.Helper()
	path := filepath.Join(shortTempDir(t), "qmp")
	l, err := net.Listen("unix", path)
	require.NoError(t, err)
	s := &qmpServer{path: path, l: l, handle: handle}
	go s.serve()
	t.Cleanup(func() { s.close() })
	return s
}

func (s *qmpServer) close() {
	_ = s.l.Close()
	s.mu.Lock()
	for _, c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
}

func (s *qmpServer) serve() {
	for {
		c, err := s.l.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns = append(s.conns, c)
		noHi := s.noHi
		s.mu.Unlock()
		go func() {
			var wmu sync.Mutex
			w := func(line string) {
				wmu.Lock()
				defer wmu.Unlock()
				_, _ = c.Write([]byte(line + "\r\n"))
			}
			if !noHi {
				w(`{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}}, "capabilities": ["oob"]}}`)
			}
			dec := json.NewDecoder(bufio.NewReader(c))
			for {
				var m struct {
					Execute   string          `json:"execute"`
					Arguments json.RawMessage `json:"arguments"`
					ID        json.RawMessage `json:"id"`
				}
				if dec.Decode(&m) != nil {
					return
				}
				s.mu.Lock()
				s.got = append(s.got, m.Execute)
				s.mu.Unlock()
				id := string(m.ID)
				s.handle(m.Execute, m.Arguments, func(line string) {
					if len(line) > 0 && line[len(line)-1] == '}' && id != "" {
						// add the id to replies
						var obj map[string]json.RawMessage
						if json.Unmarshal([]byte(line), &obj) == nil {
							if _, ok := obj["return"]; ok {
								obj["id"] = json.RawMessage(id)
							}
							if _, ok := obj["error"]; ok {
								obj["id"] = json.RawMessage(id)
							}
							b, _ := json.Marshal(obj)
							line = string(b)
						}
					}
					w(line)
				})
			}
		}()
	}
}

// shortTempDir is a temporary directory whose path fits a unix socket.
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp(runtimeBase(), "jsq-test-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

func dialQMP(t *testing.T, s *qmpServer, onEvent func(qmpEvent)) (*qmpClient, error) {
	t.Helper()
	conn, err := net.Dial("unix", s.path)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	q, err := newQMP(ctx, conn, onEvent)
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	t.Cleanup(func() { _ = q.Close() })
	return q, nil
}

func TestQMPCommandsEventsErrors(t *testing.T) {
	s := newQMPServer(t, func(cmd string, args json.RawMessage, w func(string)) {
		switch cmd {
		case "qmp_capabilities":
			w(`{"return": {}}`)
		case "query-status":
			// An event before the reply, as QEMU may send.
			w(`{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "RESUME"}`)
			w(`{"return": {"status": "running", "singlestep": false, "running": true}}`)
		case "echo":
			w(`{"return": ` + string(args) + `}`)
		default:
			w(`{"error": {"class": "CommandNotFound", "desc": "The command ` + cmd + ` has not been found"}}`)
		}
	})
	var mu sync.Mutex
	var events []string
	q, err := dialQMP(t, s, func(e qmpEvent) {
		mu.Lock()
		events = append(events, e.Name)
		mu.Unlock()
	})
	require.NoError(t, err)
	ctx := t.Context()

	ret, err := q.Execute(ctx, "query-status", nil)
	require.NoError(t, err)
	var st struct{ Status string }
	require.NoError(t, json.Unmarshal(ret, &st))
	assert.Equal(t, "running", st.Status)
	mu.Lock()
	assert.Equal(t, []string{"RESUME"}, events)
	mu.Unlock()

	ret, err = q.Execute(ctx, "echo", map[string]any{"a": 1})
	require.NoError(t, err)
	assert.JSONEq(t, `{"a": 1}`, string(ret))

	_, err = q.Execute(ctx, "bogus", nil)
	var qe *QMPError
	require.ErrorAs(t, err, &qe)
	assert.Equal(t, &QMPError{Command: "bogus", Class: "CommandNotFound", Desc: "The command bogus has not been found"}, qe)
	assert.EqualError(t, err, "QMP bogus: CommandNotFound: The command bogus has not been found")

	// Concurrent commands each get their own reply.
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			ret, err := q.Execute(ctx, "echo", i)
			if assert.NoError(t, err) {
				assert.Equal(t, json.RawMessage(itoa(i)), ret)
			}
		})
	}
	wg.Wait()
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

func TestQMPTimeoutAndClose(t *testing.T) {
	hang := make(chan struct{})
	s := newQMPServer(t, func(cmd string, args json.RawMessage, w func(string)) {
		switch cmd {
		case "qmp_capabilities":
			w(`{"return": {}}`)
		case "slow":
			<-hang
			w(`{"return": "late"}`)
		case "quit":
			w(`{"return": {}}`)
		}
	})
	defer close(hang)
	q, err := dialQMP(t, s, nil)
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	_, err = q.Execute(ctx, "slow", nil)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "QMP slow")

	// The server goes away: pending and later commands fail.
	errc := make(chan error, 1)
	go func() {
		_, err := q.Execute(t.Context(), "slow", nil)
		errc <- err
	}()
	time.Sleep(50 * time.Millisecond)
	s.close()
	select {
	case err := <-errc:
		require.ErrorIs(t, err, errQMPClosed)
	case <-time.After(5 * time.Second):
		t.Fatal("a pending command did not fail when the connection ended")
	}
	<-q.done
	_, err = q.Execute(t.Context(), "quit", nil)
	require.ErrorIs(t, err, errQMPClosed)
}

func TestQMPNoGreeting(t *testing.T) {
	s := newQMPServer(t, func(string, json.RawMessage, func(string)) {})
	s.mu.Lock()
	s.noHi = true
	s.mu.Unlock()
	conn, err := net.Dial("unix", s.path)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	_, err = newQMP(ctx, conn, nil)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "waiting for the QMP greeting")
}

func TestQMPCapabilitiesRefused(t *testing.T) {
	s := newQMPServer(t, func(cmd string, _ json.RawMessage, w func(string)) {
		w(`{"error": {"class": "GenericError", "desc": "no"}}`)
	})
	_, err := dialQMP(t, s, nil)
	require.EqualError(t, err, "QMP qmp_capabilities: GenericError: no")
}
