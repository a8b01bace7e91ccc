package wire_test

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/flash"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/lease"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/gen/dutv1"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/wire"
)

// jsonKeys returns the keys of v's JSON object, sorted.
func jsonKeys(t *testing.T, v any) []string {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// protoFields returns the field names of msg, sorted.
func protoFields(msg proto.Message) []string {
	fs := msg.ProtoReflect().Descriptor().Fields()
	var names []string
	for i := range fs.Len() {
		names = append(names, string(fs.Get(i).Name()))
	}
	slices.Sort(names)
	return names
}

// TestMessagesMirrorTheGoTypes: the wire messages carry every field of
// the Go types they mirror, under the same (JSON) names, so that a field
// added to the Go type without the protocol fails here; extra fields are
// the ones the protocol adds on purpose.
func TestMessagesMirrorTheGoTypes(t *testing.T) {
	full := driver.Info{Serial: "s", Facts: []driver.Fact{{}}, Problems: []string{"p"}, Unusable: true, Ephemeral: "e"}
	report, err := flash.MarshalReport(flash.Report{}, errors.New("failed"))
	require.NoError(t, err)
	var reportMap map[string]any
	require.NoError(t, json.Unmarshal(report, &reportMap))
	var reportKeys []string
	for k := range reportMap {
		reportKeys = append(reportKeys, k)
	}
	slices.Sort(reportKeys)

	for _, tc := range []struct {
		name  string
		keys  []string
		msg   proto.Message
		extra []string
	}{
		{"driver.Info", jsonKeys(t, full), &dutv1.Device{}, []string{"holder", "key"}},
		{"driver.Fact", jsonKeys(t, driver.Fact{}), &dutv1.Fact{}, nil},
		{"lease.Holder", jsonKeys(t, lease.Holder{}), &dutv1.Holder{}, []string{"user"}},
		{"flash.Report (flash.json)", reportKeys, &dutv1.FlashReport{}, nil},
		{"driver.PowerReading", []string{"amps", "volts", "watts"}, &dutv1.ReadPowerResponse{}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := slices.Concat(tc.keys, tc.extra)
			slices.Sort(want)
			assert.Equal(t, want, protoFields(tc.msg))
		})
	}
}

// TestEnumsMirrorTheGoValues: the storage modes and pin levels have one
// enum value each, named after the Go value.
func TestEnumsMirrorTheGoValues(t *testing.T) {
	names := func(e protoreflect.EnumDescriptor) []string {
		var out []string
		for i := range e.Values().Len() {
			out = append(out, string(e.Values().Get(i).Name()))
		}
		return out
	}
	assert.Equal(t, []string{"STORAGE_MODE_UNSPECIFIED", "STORAGE_MODE_OFF", "STORAGE_MODE_HOST", "STORAGE_MODE_DUT"},
		names(dutv1.StorageMode(0).Descriptor()), "driver.StorageOff, StorageHost, StorageDUT")
	assert.Equal(t, []string{"PIN_LEVEL_UNSPECIFIED", "PIN_LEVEL_LOW", "PIN_LEVEL_HIGH", "PIN_LEVEL_FLOATING"},
		names(dutv1.PinLevel(0).Descriptor()), "driver.PinLow, PinHigh, PinFloating")
}

// TestHolderRoundTrips: a lease holder survives the wire, the user apart.
func TestHolderRoundTrips(t *testing.T) {
	h := lease.Holder{Test: "TestX", PID: 7, Host: "h", Since: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC), Command: "go test"}
	got, user := wire.HolderFromProto(wire.HolderToProto(h, "alice"))
	assert.Equal(t, "alice", user)
	assert.True(t, h.Since.Equal(got.Since))
	got.Since = h.Since
	assert.Equal(t, h, got)
	zero, _ := wire.HolderFromProto(wire.HolderToProto(lease.Holder{}, ""))
	assert.Equal(t, lease.Holder{}, zero, "a zero holder stays zero (no since)")
}
