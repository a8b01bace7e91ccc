package flash

import (
	"encoding/json"
	"math"
	"time"
)

// reportFields is a Report without its methods, so that encoding it does
// not call MarshalJSON again.
type reportFields Report

// reportJSON is the wire shape of a Report.
type reportJSON struct {
	reportFields
	Seconds       float64 `json:"seconds"`
	VerifySeconds float64 `json:"verify_seconds"`
	MBps          float64 `json:"mbps"`
	Error         string  `json:"error,omitempty"`
}

func (r Report) wire() reportJSON {
	w := reportJSON{
		reportFields:  reportFields(r),
		Seconds:       r.Duration.Seconds(),
		VerifySeconds: r.VerifyDuration.Seconds(),
		MBps:          finite(r.MBps()),
	}
	w.MappedFraction = finite(w.MappedFraction)
	return w
}

// MarshalJSON encodes r as the flash report's JSON, the one shape of the
// flash report (the harness's flash.json, dut flash --json): each field
// under its json tag, the snake_case of its name, always present; each
// duration as seconds (a float) under its field's name with "duration"
// made "seconds" ("seconds" for Duration, "verify_seconds" for
// VerifyDuration); and "mbps", [Report.MBps]. [MarshalReport] adds
// "error" for a failed flash.
func (r Report) MarshalJSON() ([]byte, error) { return json.Marshal(r.wire()) }

// UnmarshalJSON decodes the flash report's JSON into r: the durations from
// their seconds; "mbps" and "error" are derived, and ignored.
func (r *Report) UnmarshalJSON(b []byte) error {
	var w reportJSON
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*r = Report(w.reportFields)
	r.Duration = fromSeconds(w.Seconds)
	r.VerifyDuration = fromSeconds(w.VerifySeconds)
	return nil
}

// MarshalReport encodes r, indented and ending in a newline, as the flash
// report file of a flash: with "error", err's text, when the flash failed
// (r then says how far it got).
func MarshalReport(r Report, err error) ([]byte, error) {
	w := r.wire()
	if err != nil {
		w.Error = err.Error()
	}
	b, merr := json.MarshalIndent(w, "", "  ")
	if merr != nil {
		return nil, merr
	}
	return append(b, '\n'), nil
}

func fromSeconds(s float64) time.Duration { return time.Duration(math.Round(s * 1e9)) }

// finite makes NaN and ±Inf, which JSON cannot hold, 0.
func finite(f float64) float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0
	}
	return f
}
