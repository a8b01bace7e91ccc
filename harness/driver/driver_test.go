package driver_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
)

type dev struct {
	name, serial string
	tags         []string
}

func (d dev) Name() string   { return d.name }
func (d dev) Serial() string { return d.serial }
func (d dev) Tags() []string { return d.tags }
func (d dev) Driver() string { return "test" }

type poweredDev struct{ dev }

func (poweredDev) PowerOn(context.Context) error  { return nil }
func (poweredDev) PowerOff(context.Context) error { return nil }

var lab = []driver.Info{
	driver.InfoOf(dev{"orin-1", "1a2b3c4d", []string{"ARM64", "orin"}}),
	driver.InfoOf(dev{"rpi-1", "99887766", []string{"arm64", "rpi"}}),
	driver.InfoOf(dev{"x86-1", "", []string{"x86_64"}}),
	{Driver: "test", Name: "dfu-1", Serial: "55", Tags: []string{"arm64"}, Problems: []string{"board in DFU mode: replug it"}, Unusable: true},
}

func TestParseTags(t *testing.T) {
	tags, err := driver.ParseTags(" arm64, orin ,board=v2 ")
	require.NoError(t, err)
	assert.Equal(t, []string{"arm64", "orin", "board=v2"}, tags)
	tags, err = driver.ParseTags("")
	require.NoError(t, err)
	assert.Empty(t, tags)
	for _, bad := range []string{"a,,b", "a,", ",a", "two words", "a;b"} {
		_, err := driver.ParseTags(bad)
		assert.ErrorIs(t, err, driver.ErrBadTags, bad)
	}
}

func TestSelect(t *testing.T) {
	got, err := driver.Select(lab, "", []string{"arm64"})
	require.NoError(t, err)
	assert.Len(t, got, 2, "tags match case-insensitively")
	got, err = driver.Select(lab, "", []string{"arm64", "orin"})
	require.NoError(t, err)
	assert.Equal(t, "orin-1", got[0].Name)
	got, err = driver.Select(lab, "99887766", nil)
	require.NoError(t, err)
	assert.Equal(t, "rpi-1", got[0].Name, "a name matches the serial too")
	got, err = driver.Select(lab, "", nil)
	require.NoError(t, err)
	assert.Len(t, got, 3, "an unusable device is never selected")
	_, err = driver.Select(lab, "dfu-1", nil)
	require.ErrorIs(t, err, driver.ErrNoDevice)
	assert.Contains(t, err.Error(), "cannot be used now: dfu-1 (serial 55) [arm64]: board in DFU mode: replug it")

	_, err = driver.Select(lab, "orin-1", []string{"rpi"})
	require.ErrorIs(t, err, driver.ErrNoDevice)
	assert.Contains(t, err.Error(), `name "orin-1" and tags "rpi"`)
	assert.Contains(t, err.Error(), "found orin-1 (serial 1a2b3c4d) [ARM64,orin]")
	_, err = driver.Select(nil, "", nil)
	assert.ErrorContains(t, err, "found no devices at all")
}

func TestAsNamesTheMissingCapability(t *testing.T) {
	_, err := driver.As[driver.Power](dev{"orin-1", "1a2b3c4d", nil})
	require.ErrorIs(t, err, driver.ErrUnsupported)
	assert.Contains(t, err.Error(), "orin-1 (driver test) has no driver.Power")
	p, err := driver.As[driver.Power](poweredDev{dev{name: "p"}})
	require.NoError(t, err)
	assert.NoError(t, p.PowerOn(context.Background()))
}

type fakeDriver struct{ name string }

func (d fakeDriver) Name() string                                    { return d.name }
func (d fakeDriver) Discover(context.Context) ([]driver.Info, error) { return lab, nil }
func (d fakeDriver) Open(_ context.Context, info driver.Info) (driver.Device, error) {
	return dev{info.Name, info.Serial, info.Tags}, nil
}

// registerFake registers the registry test's driver once per test binary:
// the registry is process-wide, and -count runs TestRegistry again.
var registerFake = sync.OnceFunc(func() { driver.Register(fakeDriver{"registry-test"}) })

func TestRegistry(t *testing.T) {
	registerFake()
	d, err := driver.Lookup("registry-test")
	require.NoError(t, err)
	assert.Equal(t, "registry-test", d.Name())
	assert.Contains(t, driver.Drivers(), "registry-test")
	_, err = driver.Lookup("nosuch")
	require.ErrorIs(t, err, driver.ErrUnknownDriver)
	assert.Contains(t, err.Error(), "registry-test")
	assert.Panics(t, func() { driver.Register(fakeDriver{"registry-test"}) })
	assert.Panics(t, func() { driver.Register(fakeDriver{""}) })
}

func TestParseStorageMode(t *testing.T) {
	m, err := driver.ParseStorageMode(" Host ")
	require.NoError(t, err)
	assert.Equal(t, driver.StorageHost, m)
	_, err = driver.ParseStorageMode("usb")
	assert.Error(t, err)
}

// A driver registers itself from init; tests select its devices by tags.
func ExampleSelect() {
	devs, err := driver.Select(lab, "", []string{"ARM64", "rpi"})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, d := range devs {
		fmt.Println(d)
	}
	_, err = driver.Select(lab, "", []string{"riscv"})
	fmt.Println(errors.Is(err, driver.ErrNoDevice))
	// Output:
	// rpi-1 (serial 99887766) [arm64,rpi]
	// true
}

func TestSentinelCodesRoundTrip(t *testing.T) {
	seen := map[string]bool{}
	for _, code := range driver.Codes() {
		require.False(t, seen[code], "code %q twice", code)
		seen[code] = true
		sentinel := driver.FromCode(code)
		require.NotNil(t, sentinel, code)
		wrapped := fmt.Errorf("power on sim-0: %w", sentinel)
		assert.Equal(t, code, driver.Code(wrapped))
		assert.ErrorIs(t, wrapped, driver.FromCode(driver.Code(wrapped)))
	}
	assert.Nil(t, driver.FromCode("no such code"))
	assert.Equal(t, "", driver.Code(errors.New("plain")))
	assert.Equal(t, "", driver.Code(nil))
}

func TestRefineMatchesItsSentinelOnly(t *testing.T) {
	gone := driver.Refine(driver.ErrGone, "DUTlink board gone")
	err := fmt.Errorf("power on: %w", gone)
	assert.ErrorIs(t, err, gone)
	assert.ErrorIs(t, err, driver.ErrGone)
	assert.NotErrorIs(t, err, driver.ErrBusy)
	assert.Equal(t, "power on: DUTlink board gone", err.Error())
	assert.Equal(t, "gone", driver.Code(err))
}

func TestInfoOfNamesCapabilities(t *testing.T) {
	info := driver.InfoOf(poweredDev{dev{"p", "", nil}})
	assert.Equal(t, []string{"power"}, info.Capabilities)
	assert.Equal(t, "test/p", info.Key())
	assert.Equal(t, []string{}, info.Tags, "no tags list as an empty list, not null")
	assert.Equal(t, []string{"power"}, driver.CapabilitiesOf((*poweredDev)(nil)), "a nil pointer of a device type names its capabilities")
	assert.Equal(t, []string{}, driver.CapabilitiesOf(dev{}))
}

// narrowed has every capability's methods but offers only power.
type narrowed struct{ dev }

func (narrowed) PowerOn(context.Context) error  { return nil }
func (narrowed) PowerOff(context.Context) error { return nil }
func (narrowed) Reset(context.Context) error    { return nil }
func (narrowed) Capabilities() []string         { return []string{"power"} }
func (narrowed) Rescue(context.Context) error   { return nil }
func (narrowed) ReadPower(context.Context) (driver.PowerReading, error) {
	return driver.PowerReading{}, nil
}

func TestACapableDeviceOffersOnlyWhatItSays(t *testing.T) {
	var dev driver.Device = narrowed{}
	if got := driver.CapabilitiesOf(dev); !slices.Equal(got, []string{"power"}) {
		t.Fatalf("CapabilitiesOf = %q, want [power]", got)
	}
	if _, ok := driver.Has[driver.Power](dev); !ok {
		t.Error("Has[Power] = false, want true")
	}
	if _, ok := driver.Has[driver.Resetter](dev); ok {
		t.Error("Has[Resetter] = true for a device that does not offer reset")
	}
	if _, err := driver.As[driver.PowerMeter](dev); !errors.Is(err, driver.ErrUnsupported) {
		t.Errorf("As[PowerMeter] = %v, want ErrUnsupported", err)
	}
	if got := driver.CapabilitiesOf((*narrowedPtr)(nil)); !slices.Equal(got, []string{"power"}) {
		t.Errorf("CapabilitiesOf(nil pointer) = %q, want its methods' [power]", got)
	}
}

// narrowedPtr is a Capable type with pointer methods, described as a nil
// pointer (before any device is open).
type narrowedPtr struct{ dev }

func (*narrowedPtr) PowerOn(context.Context) error  { return nil }
func (*narrowedPtr) PowerOff(context.Context) error { return nil }
func (p *narrowedPtr) Capabilities() []string {
	_ = p.name // a nil receiver panics here
	return nil
}
