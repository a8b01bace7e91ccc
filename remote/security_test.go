package remote_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/exporter"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/gen/dutv1"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/gen/dutv1/dutv1connect"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/wire"
	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/sim"
)

func sumOf(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func header(sum string, size int64, name string) *dutv1.UploadImageRequest {
	return &dutv1.UploadImageRequest{Part: &dutv1.UploadImageRequest_Header{Header: &dutv1.UploadHeader{Sha256: sum, Size: size, Name: name}}}
}

func chunk(off int64, data []byte) *dutv1.UploadImageRequest {
	return &dutv1.UploadImageRequest{Part: &dutv1.UploadImageRequest_Chunk{Chunk: &dutv1.UploadChunk{Offset: off, Data: data}}}
}

// upload sends msgs as one UploadImage and returns the exporter's answer.
func upload(c clients, msgs ...*dutv1.UploadImageRequest) (*dutv1.UploadImageResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream := c.flash.UploadImage(ctx)
	for _, m := range msgs {
		if err := stream.Send(m); err != nil {
			break // the exporter answered already: CloseAndReceive says what
		}
	}
	resp, err := stream.CloseAndReceive()
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

// cacheState is what the exporter's cache holds, to compare.
type cacheState struct {
	n     int
	bytes int64
	files []string
}

func stateOf(t *testing.T, l *lab) cacheState {
	t.Helper()
	var files []string
	err := filepath.WalkDir(l.cache.Dir(), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, p)
		}
		return err
	})
	require.NoError(t, err)
	return cacheState{l.cache.Len(), l.cache.Bytes(), files}
}

func hasImage(t *testing.T, c clients, sum string) bool {
	t.Helper()
	resp, err := c.flash.HasImage(context.Background(), connect.NewRequest(&dutv1.HasImageRequest{Sha256: sum}))
	require.NoError(t, err)
	return resp.Msg.GetPresent()
}

// attach keeps a session of lz alive (pinging) until the test ends.
func attach(t *testing.T, c clients, lz *dutv1.Lease) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := c.leases.Session(ctx)
	require.NoError(t, s.Send(&dutv1.SessionRequest{Message: &dutv1.SessionRequest_Attach{Attach: ref(lz)}}))
	m, err := s.Receive()
	require.NoError(t, err)
	require.NotNil(t, m.GetAttached(), "%v", m)
	done := make(chan struct{}, 2)
	go func() {
		defer func() { done <- struct{}{} }()
		for {
			if _, err := s.Receive(); err != nil {
				return
			}
		}
	}()
	go func() {
		defer func() { done <- struct{}{} }()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for seq := uint64(1); ; seq++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if s.Send(&dutv1.SessionRequest{Message: &dutv1.SessionRequest_Ping{Ping: &dutv1.Ping{Seq: seq}}}) != nil {
					return
				}
			}
		}
	}()
	t.Cleanup(func() {
		// Release the lease, as the remote driver's Close does: the
		// exporter ends the session at once. (Cancelling the stream's
		// context alone leaves the exporter to notice the silence within
		// its keepalive timeout.)
		rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer rcancel()
		_, _ = c.leases.Release(rctx, connect.NewRequest(&dutv1.ReleaseRequest{Lease: ref(lz)}))
		cancel()
		<-done
		<-done
	})
}

// held leases name with a session attached.
func held(t *testing.T, c clients, name string) *dutv1.Lease {
	t.Helper()
	lz := tryAcquire(t, c, name)
	attach(t, c, lz)
	return lz
}

// diskSum is the SHA-256 of a sim device's disk.
func diskSum(t *testing.T, sd *sim.Device) string {
	t.Helper()
	b, err := os.ReadFile(sd.DiskPath())
	require.NoError(t, err)
	return sumOf(b)
}

// TestAnUploadThatDoesNotMatchItsDigestIsRefused: bytes that do not hash
// to the header's SHA-256 never enter the cache, also when the digest they
// claim is one the cache holds.
func TestAnUploadThatDoesNotMatchItsDigestIsRefused(t *testing.T) {
	t.Parallel()
	l := newLab(t, 1)
	c := l.clients("")
	good := randomBytes(64<<10, 1)
	evil := randomBytes(64<<10, 2)
	before := stateOf(t, l)

	_, err := upload(c, header(sumOf(good), int64(len(evil)), "os.img"), chunk(0, evil))
	require.Error(t, err)
	assert.Equal(t, connect.CodeInvalidArgument, connect.CodeOf(err), "%v", err)
	assert.ErrorIs(t, err, driver.ErrInvalidArgument)
	var we *wire.Error
	assert.True(t, errors.As(err, &we), "%v", err)
	assert.Equal(t, wire.FaultCaller, wire.FaultOf(err))
	assert.Equal(t, before, stateOf(t, l), "a refused upload changed the cache")
	assert.False(t, hasImage(t, c, sumOf(good)))
	assert.False(t, hasImage(t, c, sumOf(evil)))

	// The right size with a wrong digest, and the right digest with a
	// wrong size, likewise.
	_, err = upload(c, header(sumOf(good), int64(len(good))+1, "os.img"), chunk(0, good))
	assert.Equal(t, connect.CodeInvalidArgument, connect.CodeOf(err), "%v", err)
	assert.Equal(t, before, stateOf(t, l))

	// Once the cache holds the good file, bytes claiming its digest are
	// still checked (and refused), and the cached file stays as it was.
	resp, err := upload(c, header(sumOf(good), int64(len(good)), "os.img"), chunk(0, good))
	require.NoError(t, err)
	assert.Equal(t, int64(len(good)), resp.GetReceivedBytes())
	cached := stateOf(t, l)
	require.Equal(t, 1, cached.n)
	_, err = upload(c, header(sumOf(good), int64(len(evil)), "os.img"), chunk(0, evil))
	assert.Equal(t, connect.CodeInvalidArgument, connect.CodeOf(err), "%v", err)
	assert.Equal(t, cached, stateOf(t, l))
	path, release, err := l.cache.Acquire(sumOf(good))
	require.NoError(t, err)
	got, err := os.ReadFile(path)
	release()
	require.NoError(t, err)
	assert.True(t, bytes.Equal(good, got), "the cached file was overwritten")
}

// TestAnUploadOutOfOrderIsRefused: a chunk before the header, a second
// header, a chunk past the header's size, and chunks going back are each
// refused as invalid, and the cache is unchanged.
func TestAnUploadOutOfOrderIsRefused(t *testing.T) {
	t.Parallel()
	l := newLab(t, 1)
	c := l.clients("")
	data := randomBytes(8192, 3)
	sum, size := sumOf(data), int64(len(data))
	before := stateOf(t, l)
	for name, msgs := range map[string][]*dutv1.UploadImageRequest{
		"nothing":             nil,
		"a chunk first":       {chunk(0, data), header(sum, size, "a.img")},
		"two headers":         {header(sum, size, "a.img"), header(sum, size, "a.img"), chunk(0, data)},
		"a header later":      {header(sum, size, "a.img"), chunk(0, data[:4096]), header(sum, size, "a.img"), chunk(4096, data[4096:])},
		"a chunk past size":   {header(sum, size, "a.img"), chunk(0, data), chunk(size, []byte{1})},
		"a chunk beyond size": {header(sum, size, "a.img"), chunk(size+4096, []byte{1})},
		"descending offsets":  {header(sum, size, "a.img"), chunk(4096, data[4096:]), chunk(0, data[:4096])},
		"overlapping chunks":  {header(sum, size, "a.img"), chunk(0, data[:4097]), chunk(4096, data[4096:])},
		"a negative offset":   {header(sum, size, "a.img"), chunk(-1, data)},
		"a negative size":     {header(sum, -1, "a.img")},
		"a bad digest":        {header(strings.ToUpper(sum), size, "a.img"), chunk(0, data)},
		"an empty message":    {header(sum, size, "a.img"), {}},
	} {
		_, err := upload(c, msgs...)
		assert.Equal(t, connect.CodeInvalidArgument, connect.CodeOf(err), "%s: %v", name, err)
		assert.ErrorIs(t, err, driver.ErrInvalidArgument, name)
		assert.Equal(t, before, stateOf(t, l), "%s changed the cache", name)
		assert.False(t, hasImage(t, c, sum), name)
	}
	// The same file in order is taken.
	_, err := upload(c, header(sum, size, "a.img"), chunk(0, data[:4096]), chunk(4096, data[4096:]))
	require.NoError(t, err)
	assert.True(t, hasImage(t, c, sum))
}

// TestAnUploadsNameIsNoPath: the header's name is for messages only; a
// name that climbs out of the cache writes nothing outside it: the cache
// holds the file under its digest, and nothing else.
func TestAnUploadsNameIsNoPath(t *testing.T) {
	t.Parallel()
	l := newLab(t, 1)
	c := l.clients("")
	data := randomBytes(4096, 4)
	_, err := upload(c, header(sumOf(data), 4096, "../../escaped.img"), chunk(0, data))
	require.NoError(t, err)
	assert.Equal(t, []string{filepath.Join(l.cache.Dir(), sumOf(data))}, stateOf(t, l).files)
	_, err = os.Stat(filepath.Join(l.cache.Dir(), "..", "..", "escaped.img"))
	assert.ErrorIs(t, err, os.ErrNotExist)
}

// TestAnOversizedMessageIsRefused: a console write or an upload chunk above
// the exporter's 5 MiB read limit is refused (ResourceExhausted) before it
// reaches the device or the cache, and the lease goes on working.
func TestAnOversizedMessageIsRefused(t *testing.T) {
	t.Parallel()
	l := newLab(t, 1)
	c := l.clients("")
	ctx := context.Background()
	lz := held(t, c, "sim-0")
	_, err := c.power.PowerOn(ctx, connect.NewRequest(&dutv1.PowerOnRequest{Lease: ref(lz)}))
	require.NoError(t, err)
	sd := l.sims.device("sim-0")
	disk := diskSum(t, sd)

	big := bytes.Repeat([]byte("x"), 6<<20)
	_, err = c.console.WriteConsole(ctx, connect.NewRequest(&dutv1.WriteConsoleRequest{Lease: ref(lz), Data: big}))
	require.Error(t, err)
	assert.Equal(t, connect.CodeResourceExhausted, connect.CodeOf(err), "%v", err)
	assert.Equal(t, sim.PowerStateOn, sd.PowerState(), "the refused write changed the device")

	// Under the read limit but over a console write's 1 MiB: refused by
	// the service.
	_, err = c.console.WriteConsole(ctx, connect.NewRequest(&dutv1.WriteConsoleRequest{Lease: ref(lz), Data: big[:2<<20]}))
	assert.Equal(t, connect.CodeInvalidArgument, connect.CodeOf(err), "%v", err)
	assert.ErrorContains(t, err, "console write")

	before := stateOf(t, l)
	data := randomBytes(6<<20, 5)
	_, err = upload(c, header(sumOf(data), int64(len(data)), "big.img"), chunk(0, data))
	require.Error(t, err)
	assert.Equal(t, connect.CodeResourceExhausted, connect.CodeOf(err), "%v", err)
	assert.Equal(t, before, stateOf(t, l))
	assert.False(t, hasImage(t, c, sumOf(data)))

	// The lease, the device and the cache still work.
	_, err = c.console.WriteConsole(ctx, connect.NewRequest(&dutv1.WriteConsoleRequest{Lease: ref(lz), Data: []byte("\n")}))
	require.NoError(t, err)
	_, err = upload(c, header(sumOf(data), int64(len(data)), "big.img"), chunk(0, data[:4<<20]), chunk(4<<20, data[4<<20:]))
	require.NoError(t, err)
	assert.True(t, hasImage(t, c, sumOf(data)))
	assert.Equal(t, sim.PowerStateOn, sd.PowerState())
	assert.Equal(t, disk, diskSum(t, sd))
}

// flashCall runs Flash to its end and returns its error.
func flashCall(c clients, req *dutv1.FlashRequest) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := c.flash.Flash(ctx, connect.NewRequest(req))
	if err != nil {
		return err
	}
	defer stream.Close()
	for stream.Receive() {
		if stream.Msg().GetReport() != nil {
			return nil
		}
	}
	if err := stream.Err(); err != nil {
		return err
	}
	return errors.New("the flash ended without a report")
}

// cachedImage uploads a small image and returns its digest.
func cachedImage(t *testing.T, c clients, seed uint64) string {
	t.Helper()
	data := randomBytes(4096, seed) // the sim disks hold 7 KiB
	_, err := upload(c, header(sumOf(data), int64(len(data)), "os.img"), chunk(0, data))
	require.NoError(t, err)
	return sumOf(data)
}

// TestAFlashOfAnImageTheCacheLacksTouchesNothing: a digest the cache does
// not hold (the image's or the bmap's), or no digest at all, is the
// caller's error, refused before the device is touched: it stays powered,
// its storage where it was, its disk as it was.
func TestAFlashOfAnImageTheCacheLacksTouchesNothing(t *testing.T) {
	t.Parallel()
	l := newLab(t, 1)
	c := l.clients("")
	ctx := context.Background()
	lz := held(t, c, "sim-0")
	storage := dutv1connect.NewStorageServiceClient(unixClient(l.url), "http://exporter", connect.WithGRPC(), connect.WithInterceptors(wire.ClientInterceptor(l.url)))
	_, err := storage.SetStorage(ctx, connect.NewRequest(&dutv1.SetStorageRequest{Lease: ref(lz), Mode: dutv1.StorageMode_STORAGE_MODE_DUT}))
	require.NoError(t, err)
	_, err = c.power.PowerOn(ctx, connect.NewRequest(&dutv1.PowerOnRequest{Lease: ref(lz)}))
	require.NoError(t, err)
	sd := l.sims.device("sim-0")
	disk := diskSum(t, sd)
	image := cachedImage(t, c, 6)
	missing := sumOf([]byte("not in the cache"))

	for name, req := range map[string]*dutv1.FlashRequest{
		"a missing image": {Lease: ref(lz), ImageSha256: missing},
		"a missing bmap":  {Lease: ref(lz), ImageSha256: image, BmapSha256: missing},
		"no digest":       {Lease: ref(lz)},
		"not a digest":    {Lease: ref(lz), ImageSha256: "../../etc/passwd"},
	} {
		err := flashCall(c, req)
		require.Error(t, err, name)
		assert.Equal(t, connect.CodeInvalidArgument, connect.CodeOf(err), "%s: %v", name, err)
		assert.ErrorIs(t, err, driver.ErrInvalidArgument, name)
		assert.Equal(t, wire.FaultCaller, wire.FaultOf(err), name)
		assert.Equal(t, sim.PowerStateOn, sd.PowerState(), "%s: the refused flash touched the power", name)
		assert.Equal(t, driver.StorageDUT, sd.StorageState(), "%s: the refused flash switched the storage", name)
		assert.Equal(t, disk, diskSum(t, sd), "%s: the refused flash wrote the disk", name)
	}
	assert.ErrorContains(t, flashCall(c, &dutv1.FlashRequest{Lease: ref(lz), ImageSha256: missing}), "upload it first")
}

// TestOnlyTheLeaseHolderFlashes: a flash of a cached image without a
// lease, with another device's lease, with a lease no session keeps, or
// after release is refused, and the disk is as it was.
func TestOnlyTheLeaseHolderFlashes(t *testing.T) {
	t.Parallel()
	l := newLab(t, 2)
	c := l.clients("")
	image := cachedImage(t, c, 7)
	l0 := tryAcquire(t, c, "sim-0") // no session
	l1 := held(t, c, "sim-1")
	sd0, sd1 := l.sims.device("sim-0"), l.sims.device("sim-1")
	disk0, disk1 := diskSum(t, sd0), diskSum(t, sd1)
	check := func(name string, err error, code connect.Code, text string) {
		t.Helper()
		require.Error(t, err, name)
		assert.Equal(t, code, connect.CodeOf(err), "%s: %v", name, err)
		assert.ErrorContains(t, err, text, name)
		assert.Equal(t, disk0, diskSum(t, sd0), "%s wrote sim-0's disk", name)
		assert.Equal(t, disk1, diskSum(t, sd1), "%s wrote sim-1's disk", name)
		assert.Equal(t, driver.StorageOff, sd0.StorageState(), name)
		assert.Equal(t, sim.PowerStateOff, sd0.PowerState(), name)
	}
	check("no lease", flashCall(c, &dutv1.FlashRequest{ImageSha256: image}), connect.CodePermissionDenied, "carries no lease")
	check("another device's lease", flashCall(c, &dutv1.FlashRequest{Lease: &dutv1.LeaseRef{Device: "sim/sim-0", Token: l1.GetToken()}, ImageSha256: image}), connect.CodePermissionDenied, "not of sim/sim-0")
	check("a made-up token", flashCall(c, &dutv1.FlashRequest{Lease: &dutv1.LeaseRef{Device: "sim/sim-0", Token: strings.Repeat("ab", 16)}, ImageSha256: image}), connect.CodePermissionDenied, "names no lease")
	err := flashCall(c, &dutv1.FlashRequest{Lease: ref(l0), ImageSha256: image})
	check("no session", err, connect.CodeFailedPrecondition, "no session attached")
	assert.ErrorIs(t, err, driver.ErrClosed)

	_, err = c.leases.Release(context.Background(), connect.NewRequest(&dutv1.ReleaseRequest{Lease: ref(l0)}))
	require.NoError(t, err)
	check("a released lease", flashCall(c, &dutv1.FlashRequest{Lease: ref(l0), ImageSha256: image}), connect.CodePermissionDenied, "names no lease")

	// The holder of sim-1 flashes it.
	require.NoError(t, flashCall(c, &dutv1.FlashRequest{Lease: ref(l1), ImageSha256: image}))
	assert.NotEqual(t, disk1, diskSum(t, sd1))
}

// http1Client is a plain HTTP/1.1 client (no h2, no h2c) of a unix://
// exporter URL.
func http1Client(url string) *http.Client {
	path := strings.TrimPrefix(url, "unix://")
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetHTTP1(true)
	tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}
	return &http.Client{Transport: tr}
}

// TestPlainHTTPClientsListDevices: a connect client over HTTP/1.1 lists the
// devices; so does a GET with the request in the URL (ListDevices has no
// side effects), as curl would send it. A GET of a call that changes the
// device is refused and changes nothing.
func TestPlainHTTPClientsListDevices(t *testing.T) {
	t.Parallel()
	l := newLab(t, 2)
	hc := http1Client(l.url)
	ctx := context.Background()

	devs := dutv1connect.NewDeviceServiceClient(hc, "http://exporter")
	resp, err := devs.ListDevices(ctx, connect.NewRequest(&dutv1.ListDevicesRequest{}))
	require.NoError(t, err)
	assert.Equal(t, "test-lab", resp.Msg.GetExporter())
	require.Len(t, resp.Msg.GetDevices(), 2)

	get := func(path string) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://exporter"+path, nil)
		require.NoError(t, err)
		r, err := hc.Do(req)
		require.NoError(t, err)
		defer r.Body.Close()
		body, err := io.ReadAll(r.Body)
		require.NoError(t, err)
		return r, body
	}
	r, body := get("/jumpstarter.dut.v1.DeviceService/ListDevices?encoding=json&message=%7B%7D")
	require.Equal(t, http.StatusOK, r.StatusCode, "%s", body)
	assert.Equal(t, "HTTP/1.1", r.Proto)
	assert.Contains(t, r.Header.Get("Content-Type"), "json")
	var list dutv1.ListDevicesResponse
	require.NoError(t, protojson.Unmarshal(body, &list), "%s", body)
	assert.Equal(t, "test-lab", list.GetExporter())
	var names []string
	for _, d := range list.GetDevices() {
		names = append(names, d.GetName())
	}
	assert.ElementsMatch(t, []string{"sim-0", "sim-1"}, names, "%s", body)

	// A call with side effects is not served to GET, even with a lease.
	c := l.clients("")
	lz := held(t, c, "sim-0")
	msg, err := protojson.Marshal(&dutv1.PowerOnRequest{Lease: ref(lz)})
	require.NoError(t, err)
	r, body = get("/jumpstarter.dut.v1.PowerService/PowerOn?encoding=json&message=" + string(bytes.ReplaceAll(msg, []byte(" "), nil)))
	assert.NotEqual(t, http.StatusOK, r.StatusCode, "%s", body)
	assert.Equal(t, sim.PowerStateOff, l.sims.device("sim-0").PowerState(), "a GET powered the device on")
}

// TestTheCacheNeedsAToken: with tokens configured, a caller without one
// can neither fill the exporter's cache nor probe it, nor list devices by
// GET; with its token it can.
func TestTheCacheNeedsAToken(t *testing.T) {
	t.Parallel()
	l := newLab(t, 1, func(c *exporter.Config) { c.Tokens = map[string]string{"s3cret-token": "ci"} })
	data := randomBytes(4096, 14)
	before := stateOf(t, l)
	for name, tok := range map[string]string{"no token": "", "wrong token": "guess"} {
		c := l.clients(tok)
		_, err := upload(c, header(sumOf(data), int64(len(data)), "os.img"), chunk(0, data))
		assert.Equal(t, connect.CodeUnauthenticated, connect.CodeOf(err), "%s: %v", name, err)
		_, err = c.flash.HasImage(context.Background(), connect.NewRequest(&dutv1.HasImageRequest{Sha256: sumOf(data)}))
		assert.Equal(t, connect.CodeUnauthenticated, connect.CodeOf(err), "%s: %v", name, err)
		err = flashCall(c, &dutv1.FlashRequest{ImageSha256: sumOf(data)})
		assert.Equal(t, connect.CodeUnauthenticated, connect.CodeOf(err), "%s: %v", name, err)
		assert.Equal(t, before, stateOf(t, l), name)
	}
	req, err := http.NewRequest(http.MethodGet, "http://exporter/jumpstarter.dut.v1.DeviceService/ListDevices?encoding=json&message=%7B%7D", nil)
	require.NoError(t, err)
	r, err := http1Client(l.url).Do(req)
	require.NoError(t, err)
	body, _ := io.ReadAll(r.Body)
	r.Body.Close()
	assert.Equal(t, http.StatusUnauthorized, r.StatusCode, "%s", body)
	assert.NotContains(t, string(body), "sim-0")

	c := l.clients("s3cret-token")
	_, err = upload(c, header(sumOf(data), int64(len(data)), "os.img"), chunk(0, data))
	require.NoError(t, err)
	assert.True(t, hasImage(t, c, sumOf(data)))
}
