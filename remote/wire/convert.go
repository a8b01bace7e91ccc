package wire

import (
	"fmt"
	"math"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/flash"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/gen/dutv1"
)

// DeviceToProto converts a device's description into its wire form, with
// its holder (nil when the device is free).
func DeviceToProto(info driver.Info, holder *dutv1.Holder) *dutv1.Device {
	d := &dutv1.Device{
		Driver: info.Driver, Name: info.Name, Serial: info.Serial,
		Tags: slices.Clone(info.Tags), Capabilities: slices.Clone(info.Capabilities),
		Problems: slices.Clone(info.Problems), Unusable: info.Unusable, Ephemeral: info.Ephemeral,
		Key: info.Key(), Holder: holder,
	}
	for _, f := range info.Facts {
		d.Facts = append(d.Facts, &dutv1.Fact{Key: f.Key, Value: f.Value})
	}
	return d
}

// DeviceFromProto converts a wire device back into the description
// discovery gives (its holder apart: Device.GetHolder).
func DeviceFromProto(d *dutv1.Device) driver.Info {
	info := driver.Info{
		Driver: d.GetDriver(), Name: d.GetName(), Serial: d.GetSerial(),
		Tags: slices.Clone(d.GetTags()), Capabilities: slices.Clone(d.GetCapabilities()),
		Problems: slices.Clone(d.GetProblems()), Unusable: d.GetUnusable(), Ephemeral: d.GetEphemeral(),
	}
	if info.Tags == nil {
		info.Tags = []string{}
	}
	if info.Capabilities == nil {
		info.Capabilities = []string{}
	}
	for _, f := range d.GetFacts() {
		info.Facts = append(info.Facts, driver.Fact{Key: f.GetKey(), Value: f.GetValue()})
	}
	return info
}

// ReportToProto converts a flash report into its wire form, with err's
// text as its error when the flash failed. Its numbers are those of the
// flash report's JSON (seconds, mbps; NaN and infinities as 0).
func ReportToProto(r flash.Report, err error) *dutv1.FlashReport {
	p := &dutv1.FlashReport{
		Image: r.Image, Format: string(r.Format), Decoder: r.Decoder, Target: r.Target,
		Bytes: r.Bytes, Sha256: r.SHA256, Sha256Cached: r.SHA256Cached, Seconds: r.Duration.Seconds(),
		Mode: string(r.Mode), Bmap: r.Bmap, Sparse: r.Sparse, MappedBytes: r.MappedBytes,
		MappedFraction: finite(r.MappedFraction), ZeroedBytes: r.ZeroedBytes, ZeroedBy: r.ZeroedBy,
		Direct: r.Direct, Verified: r.Verified, VerifySeconds: r.VerifyDuration.Seconds(), Mbps: finite(r.MBps()),
	}
	if err != nil {
		p.Error = err.Error()
	}
	return p
}

// ReportFromProto converts a wire flash report back (mbps and error are
// derived, and left out, as the flash report's JSON decoding does).
func ReportFromProto(p *dutv1.FlashReport) flash.Report {
	return flash.Report{
		Image: p.GetImage(), Format: flash.Format(p.GetFormat()), Decoder: p.GetDecoder(), Target: p.GetTarget(),
		Bytes: p.GetBytes(), SHA256: p.GetSha256(), SHA256Cached: p.GetSha256Cached(), Duration: seconds(p.GetSeconds()),
		Mode: flash.Mode(p.GetMode()), Bmap: p.GetBmap(), Sparse: p.GetSparse(), MappedBytes: p.GetMappedBytes(),
		MappedFraction: p.GetMappedFraction(), ZeroedBytes: p.GetZeroedBytes(), ZeroedBy: p.GetZeroedBy(),
		Direct: p.GetDirect(), Verified: p.GetVerified(), VerifyDuration: seconds(p.GetVerifySeconds()),
	}
}

// ProgressToProto converts a flash progress report into its wire form.
func ProgressToProto(p flash.Progress) *dutv1.FlashProgress {
	return &dutv1.FlashProgress{Done: p.Done, Total: p.Total, Fraction: finite(p.Fraction), Elapsed: durationpb.New(p.Elapsed)}
}

// ProgressFromProto converts a wire progress report back.
func ProgressFromProto(p *dutv1.FlashProgress) flash.Progress {
	return flash.Progress{Done: p.GetDone(), Total: p.GetTotal(), Fraction: p.GetFraction(), Elapsed: p.GetElapsed().AsDuration()}
}

// StorageModeToProto converts a storage mode; an unknown one is an error
// wrapping [driver.ErrInvalidArgument].
func StorageModeToProto(m driver.StorageMode) (dutv1.StorageMode, error) {
	switch m {
	case driver.StorageOff:
		return dutv1.StorageMode_STORAGE_MODE_OFF, nil
	case driver.StorageHost:
		return dutv1.StorageMode_STORAGE_MODE_HOST, nil
	case driver.StorageDUT:
		return dutv1.StorageMode_STORAGE_MODE_DUT, nil
	}
	return 0, fmt.Errorf("storage mode %q: %w", m, driver.ErrInvalidArgument)
}

// StorageModeFromProto converts a wire storage mode; unspecified and
// unknown values are an error wrapping [driver.ErrInvalidArgument].
func StorageModeFromProto(m dutv1.StorageMode) (driver.StorageMode, error) {
	switch m {
	case dutv1.StorageMode_STORAGE_MODE_OFF:
		return driver.StorageOff, nil
	case dutv1.StorageMode_STORAGE_MODE_HOST:
		return driver.StorageHost, nil
	case dutv1.StorageMode_STORAGE_MODE_DUT:
		return driver.StorageDUT, nil
	}
	return "", fmt.Errorf("storage mode %v: %w", m, driver.ErrInvalidArgument)
}

// PinLevelToProto converts a pin level; an unknown one is an error
// wrapping [driver.ErrInvalidArgument].
func PinLevelToProto(l driver.PinLevel) (dutv1.PinLevel, error) {
	switch l {
	case driver.PinLow:
		return dutv1.PinLevel_PIN_LEVEL_LOW, nil
	case driver.PinHigh:
		return dutv1.PinLevel_PIN_LEVEL_HIGH, nil
	case driver.PinFloating:
		return dutv1.PinLevel_PIN_LEVEL_FLOATING, nil
	}
	return 0, fmt.Errorf("pin level %q: %w", l, driver.ErrInvalidArgument)
}

// PinLevelFromProto converts a wire pin level; unspecified and unknown
// values are an error wrapping [driver.ErrInvalidArgument].
func PinLevelFromProto(l dutv1.PinLevel) (driver.PinLevel, error) {
	switch l {
	case dutv1.PinLevel_PIN_LEVEL_LOW:
		return driver.PinLow, nil
	case dutv1.PinLevel_PIN_LEVEL_HIGH:
		return driver.PinHigh, nil
	case dutv1.PinLevel_PIN_LEVEL_FLOATING:
		return driver.PinFloating, nil
	}
	return "", fmt.Errorf("pin level %v: %w", l, driver.ErrInvalidArgument)
}

func seconds(s float64) time.Duration { return time.Duration(math.Round(s * 1e9)) }

// finite makes NaN and ±Inf 0, as the flash report's JSON does.
func finite(f float64) float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0
	}
	return f
}
