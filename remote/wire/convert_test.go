package wire_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/flash"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/lease"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/gen/dutv1"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/wire"
)

// roundTrip marshals m to bytes and back, as the wire does.
func roundTrip[M proto.Message](t *testing.T, m M) M {
	t.Helper()
	b, err := proto.Marshal(m)
	require.NoError(t, err)
	out := m.ProtoReflect().New().Interface().(M)
	require.NoError(t, proto.Unmarshal(b, out))
	return out
}

// TestADeviceSurvivesTheWire: every field of a device's description comes
// back as it went, and the key is the lease key.
func TestADeviceSurvivesTheWire(t *testing.T) {
	info := driver.Info{Driver: "dutlink", Name: "jp-1", Serial: "1a2b", Tags: []string{"orin", "arm64"},
		Capabilities: []string{"power", "storage", "console"}, Facts: []driver.Fact{{Key: "firmware", Value: "0.07"}},
		Problems: []string{"tty held by pid 812"}, Unusable: true, Ephemeral: "lives in the exporter"}
	p := roundTrip(t, wire.DeviceToProto(info, wire.HolderToProto(lockHolder(), "alice")))
	assert.Equal(t, info, wire.DeviceFromProto(p))
	assert.Equal(t, "dutlink/jp-1", p.GetKey())
	assert.Equal(t, "alice", p.GetHolder().GetUser())
	empty := wire.DeviceFromProto(roundTrip(t, wire.DeviceToProto(driver.Info{Driver: "sim", Name: "sim-0", Tags: []string{}, Capabilities: []string{}}, nil)))
	assert.Equal(t, []string{}, empty.Tags, "no tags stay an empty list, as discovery gives them")
}

func lockHolder() lease.Holder {
	return lease.Holder{Test: "TestFlash", PID: 9, Host: "ci-2", Since: time.Unix(1800000000, 0), Command: "go test"}
}

// TestAFlashReportSurvivesTheWireAsItsJSON: a report sent and received
// encodes to the same flash report JSON as the original, and the wire
// message's JSON (proto names) has the same values as flash.json.
func TestAFlashReportSurvivesTheWireAsItsJSON(t *testing.T) {
	r := flash.Report{Image: "/img/os.img.zst", Format: flash.Zstd, Decoder: "built-in", Target: "/dev/sdb",
		Bytes: 1 << 30, SHA256: "ab12", SHA256Cached: true, Duration: 3250 * time.Millisecond, Mode: flash.ModeBmap,
		Bmap: "/img/os.img.bmap", Sparse: false, MappedBytes: 1 << 28, MappedFraction: 0.25, ZeroedBytes: 4096,
		ZeroedBy: "punch-hole", Direct: true, Verified: true, VerifyDuration: 120 * time.Millisecond}
	failed := errors.New("read-back verification failed")
	p := roundTrip(t, wire.ReportToProto(r, failed))
	assert.Equal(t, r, wire.ReportFromProto(p))

	want, err := flash.MarshalReport(r, failed)
	require.NoError(t, err)
	got, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(p)
	require.NoError(t, err)
	wantMap, gotMap := decodeNumbers(t, want), decodeNumbers(t, got)
	require.Len(t, gotMap, len(wantMap))
	for k, v := range wantMap {
		// protojson writes an int64 as a string: compare the text.
		assert.Equal(t, fmt.Sprint(v), fmt.Sprint(gotMap[k]), k)
	}
}

// decodeNumbers decodes a JSON object keeping its numbers as written.
func decodeNumbers(t *testing.T, b []byte) map[string]any {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var m map[string]any
	require.NoError(t, d.Decode(&m))
	return m
}

// TestProgressSurvivesTheWire: a progress report comes back as it went.
func TestProgressSurvivesTheWire(t *testing.T) {
	pr := flash.Progress{Done: 64 << 20, Total: -1, Fraction: 0.5, Elapsed: 1500 * time.Millisecond}
	assert.Equal(t, pr, wire.ProgressFromProto(roundTrip(t, wire.ProgressToProto(pr))))
}

// TestEnumsConvertBothWaysAndRefuseTheUnknown: every storage mode and pin
// level round-trips; the unspecified value and unknown ones are the
// caller's invalid argument.
func TestEnumsConvertBothWaysAndRefuseTheUnknown(t *testing.T) {
	for _, m := range []driver.StorageMode{driver.StorageOff, driver.StorageHost, driver.StorageDUT} {
		p, err := wire.StorageModeToProto(m)
		require.NoError(t, err)
		back, err := wire.StorageModeFromProto(p)
		require.NoError(t, err)
		assert.Equal(t, m, back)
	}
	for _, l := range []driver.PinLevel{driver.PinLow, driver.PinHigh, driver.PinFloating} {
		p, err := wire.PinLevelToProto(l)
		require.NoError(t, err)
		back, err := wire.PinLevelFromProto(p)
		require.NoError(t, err)
		assert.Equal(t, l, back)
	}
	_, err := wire.StorageModeFromProto(dutv1.StorageMode_STORAGE_MODE_UNSPECIFIED)
	assert.ErrorIs(t, err, driver.ErrInvalidArgument)
	_, err = wire.StorageModeToProto("usb")
	assert.ErrorIs(t, err, driver.ErrInvalidArgument)
	_, err = wire.PinLevelFromProto(dutv1.PinLevel(42))
	assert.ErrorIs(t, err, driver.ErrInvalidArgument)
	_, err = wire.PinLevelToProto("up")
	assert.ErrorIs(t, err, driver.ErrInvalidArgument)
}
