package harness

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/flash"
)

// Property keys the harness records on each test with t.Attr (gotestsum
// turns them into JUnit testcase properties). A DUT with a role
// ([AcquireAll]) records each as dut.<role>.<rest>: dut.client.name,
// dut.server.image_sha256.
//
// A key names the field its value comes from: dut.<subject>_<field>,
// where <field> is the field's JSON name, the snake_case of its Go name,
// a duration given in seconds and named with "duration" made "seconds":
//
//   - the flash, from [flash.Report] (whose JSON, flash.json, holds every
//     field): dut.flash_<field>, e.g. dut.flash_mapped_bytes from
//     MappedBytes, dut.flash_seconds from Duration, dut.flash_verify_seconds
//     from VerifyDuration, dut.flash_mbps from MBps. The image is the
//     subject of its own two: dut.image from Image (made absolute) and
//     dut.image_sha256 from SHA256, recorded apart from the rest since the
//     hash may be known later than the write;
//   - the device, from [driver.Info]: dut.driver, dut.name, dut.serial,
//     and for a device reached over the network dut.exporter (its
//     "exporter" fact: the exporter that served it);
//   - the power draw, from [driver.PowerReading]: dut.power_watts,
//     dut.power_volts, dut.power_amps;
//   - the boot: dut.boot_seconds, from power-on to the login prompt;
//   - the artifacts, by file: dut.console_log (console.log),
//     dut.flash_report (flash.json);
//   - the failure ([FailureInfrastructure], [FailureConfiguration]):
//     dut.failure, and the step in dut.failure_step.
//
// A string that is not known (no serial, no hash yet) is not recorded.
const (
	AttrDriver = "dut.driver" // driver.Info.Driver
	AttrName   = "dut.name"   // driver.Info.Name
	AttrSerial = "dut.serial" // driver.Info.Serial, where the device has one
	// AttrExporter is the Info's "exporter" fact: the exporter that served
	// a remote device.
	AttrExporter = "dut.exporter"

	AttrImage       = "dut.image"        // flash.Report.Image, absolute
	AttrImageSHA256 = "dut.image_sha256" // flash.Report.SHA256, of the image file as given

	AttrFlashFormat         = "dut.flash_format"          // flash.Report.Format: raw, gzip, xz, zstd, bzip2
	AttrFlashBytes          = "dut.flash_bytes"           // flash.Report.Bytes: the unpacked image's size
	AttrFlashSeconds        = "dut.flash_seconds"         // flash.Report.Duration: write to final sync
	AttrFlashMBps           = "dut.flash_mbps"            // flash.Report.MBps: Bytes / Duration, MB/s
	AttrFlashMode           = "dut.flash_mode"            // flash.Report.Mode: full, bmap, skip-holes
	AttrFlashMappedBytes    = "dut.flash_mapped_bytes"    // flash.Report.MappedBytes: the bytes written
	AttrFlashMappedFraction = "dut.flash_mapped_fraction" // flash.Report.MappedFraction: MappedBytes / Bytes
	AttrFlashZeroedBytes    = "dut.flash_zeroed_bytes"    // flash.Report.ZeroedBytes: holes zeroed, not written
	AttrFlashVerified       = "dut.flash_verified"        // flash.Report.Verified: read back and matched
	AttrFlashVerifySeconds  = "dut.flash_verify_seconds"  // flash.Report.VerifyDuration: what the read-back added
	AttrFlashReport         = "dut.flash_report"          // the path of flash.json, the whole flash.Report

	AttrPowerWatts = "dut.power_watts" // driver.PowerReading.Watts, read at the end of a test that powered the DUT, or by DUT.ReadPower
	AttrPowerVolts = "dut.power_volts" // driver.PowerReading.Volts
	AttrPowerAmps  = "dut.power_amps"  // driver.PowerReading.Amps

	AttrBootSeconds = "dut.boot_seconds" // power-on to the first login prompt of the last DUT.Login

	// AttrConsoleLog is the path of the test's console log: in its
	// artifact folder, or, for a failed test run without go test
	// -artifacts, the kept copy.
	AttrConsoleLog = "dut.console_log"

	// AttrFailure says whose failure failed the test when it was not the
	// product's: [FailureInfrastructure] or [FailureConfiguration];
	// AttrFailureStep names the harness step.
	AttrFailure     = "dut.failure"
	AttrFailureStep = "dut.failure_step"
)

// property is one test property: its key as a DUT without a role records
// it, and its value.
type property struct {
	Key, Value string
}

// deviceProperties are the device's properties: driver, name, serial.
func deviceProperties(info driver.Info) []property {
	props := []property{{AttrDriver, info.Driver}, {AttrName, info.Name}}
	props = appendKnown(props, AttrSerial, info.Serial)
	return appendKnown(props, AttrExporter, info.Fact("exporter"))
}

// flashProperties are the properties of the flash rep describes, all but
// the image's hash ([imageHashProperties]), which may be known later.
func flashProperties(rep flash.Report) []property {
	props := appendKnown(nil, AttrImage, rep.Image)
	props = appendKnown(props, AttrFlashFormat, string(rep.Format))
	props = append(props,
		property{AttrFlashBytes, formatInt(rep.Bytes)},
		property{AttrFlashSeconds, formatSeconds(rep.Duration)},
		property{AttrFlashMBps, strconv.FormatFloat(rep.MBps(), 'f', 1, 64)},
	)
	props = appendKnown(props, AttrFlashMode, string(rep.Mode))
	return append(props,
		property{AttrFlashMappedBytes, formatInt(rep.MappedBytes)},
		property{AttrFlashMappedFraction, strconv.FormatFloat(rep.MappedFraction, 'f', 3, 64)},
		property{AttrFlashZeroedBytes, formatInt(rep.ZeroedBytes)},
		property{AttrFlashVerified, strconv.FormatBool(rep.Verified)},
		property{AttrFlashVerifySeconds, formatSeconds(rep.VerifyDuration)},
	)
}

// imageHashProperties is the image's SHA-256, once rep has it.
func imageHashProperties(rep flash.Report) []property {
	return appendKnown(nil, AttrImageSHA256, rep.SHA256)
}

// bootProperties are the properties of a boot that reached the login
// prompt boot after power-on.
func bootProperties(boot time.Duration) []property {
	return []property{{AttrBootSeconds, formatSeconds(boot)}}
}

// powerProperties are the properties of a power meter's reading.
func powerProperties(r driver.PowerReading) []property {
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) }
	return []property{{AttrPowerWatts, f(r.Watts)}, {AttrPowerVolts, f(r.Volts)}, {AttrPowerAmps, f(r.Amps)}}
}

// flashReportJSON is the flash report artifact (FlashReportFile) of the
// flash rep describes, failed with err when err is not nil: rep's own
// JSON (see [flash.MarshalReport]), the one shape of a flash report.
func flashReportJSON(rep flash.Report, err error) ([]byte, error) {
	b, merr := flash.MarshalReport(rep, err)
	if merr != nil {
		return nil, fmt.Errorf("encoding the flash report: %w", merr)
	}
	return b, nil
}

// withRole returns props as the DUT with role records them (see
// [roleKey]).
func withRole(role string, props []property) []property {
	out := make([]property, len(props))
	for i, p := range props {
		out[i] = property{roleKey(role, p.Key), p.Value}
	}
	return out
}

// roleKey is the key under which a DUT with role records key:
// "dut.<role>.x" for "dut.x"; key itself without a role (a test's only
// DUT).
func roleKey(role, key string) string {
	if role == "" {
		return key
	}
	return "dut." + role + "." + strings.TrimPrefix(key, "dut.")
}

// appendKnown appends the property key=value unless value is "" (not
// known).
func appendKnown(props []property, key, value string) []property {
	if value == "" {
		return props
	}
	return append(props, property{key, value})
}

func formatInt(n int64) string { return strconv.FormatInt(n, 10) }

func formatSeconds(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', 3, 64) }
