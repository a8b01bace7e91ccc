// Package wire carries errors between an exporter (dut serve) and its
// clients (the remote driver) so that an error that crossed the network is
// the same value, under [errors.Is], that the local driver gives: a remote
// "powered off" matches [driver.ErrPoweredOff], a remote busy lease
// [driver.ErrBusy] and names its holder, an exporter that died mid-call
// [driver.ErrGone].
//
// On the exporter, [ToConnect] (or the [ServerInterceptor] on every handler)
// turns a Go error into a [*connect.Error] with the connect code that fits
// and a [dutv1.ErrorDetail] that carries the error's [driver.Code], the
// other errors of this module it matches, whose fault it is, the exporter's
// name and, for a busy error, the holders. On the client, [FromConnect] (or
// the [ClientInterceptor]) turns it back into an [*Error].
//
// Codes, match names and faults are stable: they are part of the protocol
// (proto/jumpstarter/dut/v1/error.proto).
//
// It also converts the harness's values to and from their wire messages,
// field for field: a device's description ([DeviceToProto]), a lease
// holder ([HolderToProto]), the flash report and its progress
// ([ReportToProto], [ProgressToProto]), storage modes and pin levels.
package wire

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/flash"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/lease"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/gen/dutv1"
)

// Fault says whose failure an error is.
type Fault int

// The faults, as [dutv1.Fault] numbers them.
const (
	// FaultUnspecified: not told, as for the caller's own context ending.
	FaultUnspecified Fault = Fault(dutv1.Fault_FAULT_UNSPECIFIED)
	// FaultCaller: the request was wrong (a bad argument, a capability the
	// device lacks, a bad image, a call out of order).
	FaultCaller Fault = Fault(dutv1.Fault_FAULT_CALLER)
	// FaultLab: the lab failed (the device gone or busy, its driver
	// misconfigured on the exporter, the flash target failing, the
	// exporter unreachable).
	FaultLab Fault = Fault(dutv1.Fault_FAULT_LAB)
)

// String names the fault: "caller", "lab" or "unspecified".
func (f Fault) String() string {
	switch f {
	case FaultCaller:
		return "caller"
	case FaultLab:
		return "lab"
	}
	return "unspecified"
}

// codes maps each [driver.Code] to its connect code and its fault. A
// precondition the caller broke (powered off, storage not on the host) is
// the caller's; a device that vanished, is held by another or whose driver
// is misconfigured on the exporter is the lab's.
var codes = map[string]struct {
	connect connect.Code
	fault   Fault
}{
	"closed":              {connect.CodeFailedPrecondition, FaultLab},
	"powered_off":         {connect.CodeFailedPrecondition, FaultCaller},
	"powered_on":          {connect.CodeFailedPrecondition, FaultCaller},
	"storage_not_on_host": {connect.CodeFailedPrecondition, FaultCaller},
	"console_busy":        {connect.CodeFailedPrecondition, FaultCaller},
	"gone":                {connect.CodeUnavailable, FaultLab},
	"busy":                {connect.CodeAborted, FaultLab},
	"invalid_argument":    {connect.CodeInvalidArgument, FaultCaller},
	"unsupported":         {connect.CodeUnimplemented, FaultCaller},
	"bad_config":          {connect.CodeFailedPrecondition, FaultLab},
	"no_device":           {connect.CodeNotFound, FaultCaller},
}

// matchNames are the other errors of the module that cross the wire, by
// their stable names (ErrorDetail.matches), in the order they are checked.
var matchNames = []struct {
	name  string
	err   error
	code  connect.Code // when the error has no driver code
	fault Fault        // overrides the driver code's fault when not unspecified
}{
	{"lease.nothing_found", lease.ErrNothingFound, connect.CodeNotFound, FaultLab},
	{"lease.bad_request", lease.ErrBadRequest, connect.CodeInvalidArgument, FaultCaller},
	{"flash.image", flash.ErrImage, connect.CodeInvalidArgument, FaultCaller},
	{"flash.bmap", flash.ErrBmap, connect.CodeInvalidArgument, FaultCaller},
	{"flash.too_big", flash.ErrTooBig, connect.CodeInvalidArgument, FaultCaller},
	{"flash.target", flash.ErrTarget, connect.CodeInternal, FaultLab},
	{"flash.verify", flash.ErrVerify, connect.CodeInternal, FaultLab},
	{"context.canceled", context.Canceled, connect.CodeCanceled, FaultUnspecified},
	{"context.deadline_exceeded", context.DeadlineExceeded, connect.CodeDeadlineExceeded, FaultUnspecified},
}

// MatchNames lists every name ErrorDetail.matches may hold, in a fixed
// order.
func MatchNames() []string {
	out := make([]string, len(matchNames))
	for i, m := range matchNames {
		out[i] = m.name
	}
	return out
}

// ToConnect turns err, returned by an exporter's handler, into the
// [*connect.Error] the client receives: the connect code that fits, err's
// text as the message, and a [dutv1.ErrorDetail] naming exporter. A
// [*connect.Error] keeps its code and message and gains the detail when it
// has none. It returns nil for a nil err.
func ToConnect(err error, exporter string) *connect.Error {
	if err == nil {
		return nil
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		if detailOf(ce) == nil {
			addDetail(ce, describe(err, exporter))
		}
		return ce
	}
	d := describe(err, exporter)
	ce = connect.NewError(connectCode(d), err)
	addDetail(ce, d)
	return ce
}

// describe builds the detail of err.
func describe(err error, exporter string) *dutv1.ErrorDetail {
	d := &dutv1.ErrorDetail{Code: driver.Code(err), Exporter: exporter}
	for _, m := range matchNames {
		if errors.Is(err, m.err) {
			d.Matches = append(d.Matches, m.name)
		}
	}
	d.Fault = dutv1.Fault(faultOfLocal(err, d))
	var be *lease.BusyError
	if errors.As(err, &be) {
		d.Holders = holdersToProto(be)
		if be.Waited > 0 {
			d.Waited = durationpb.New(be.Waited)
		}
	}
	return d
}

// faultOfLocal tells whose fault err is, on the side that made it.
func faultOfLocal(err error, d *dutv1.ErrorDetail) Fault {
	for _, m := range matchNames {
		if m.fault != FaultUnspecified && slices.Contains(d.Matches, m.name) {
			return m.fault
		}
	}
	if c, ok := codes[d.Code]; ok {
		return c.fault
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return faultOfConnectCode(ce.Code())
	}
	if len(d.Matches) > 0 { // only the context's errors are left
		return FaultUnspecified
	}
	return FaultLab // an exporter failing without saying why is the lab's
}

// faultOfConnectCode is the fault of an error that has only a connect code.
func faultOfConnectCode(c connect.Code) Fault {
	switch c {
	case connect.CodeInvalidArgument, connect.CodeFailedPrecondition, connect.CodeOutOfRange,
		connect.CodeNotFound, connect.CodeAlreadyExists, connect.CodePermissionDenied,
		connect.CodeUnauthenticated, connect.CodeUnimplemented:
		return FaultCaller
	case connect.CodeCanceled, connect.CodeDeadlineExceeded:
		return FaultUnspecified
	}
	return FaultLab
}

// connectCode picks the connect code of an error described by d.
func connectCode(d *dutv1.ErrorDetail) connect.Code {
	if c, ok := codes[d.Code]; ok {
		return c.connect
	}
	for _, m := range matchNames {
		if slices.Contains(d.Matches, m.name) {
			return m.code
		}
	}
	return connect.CodeUnknown
}

func addDetail(ce *connect.Error, d *dutv1.ErrorDetail) {
	if det, err := connect.NewErrorDetail(d); err == nil {
		ce.AddDetail(det)
	}
}

// detailOf returns ce's ErrorDetail, or nil.
func detailOf(ce *connect.Error) *dutv1.ErrorDetail {
	for _, det := range ce.Details() {
		v, err := det.Value()
		if err != nil {
			continue
		}
		if d, ok := v.(*dutv1.ErrorDetail); ok {
			return d
		}
	}
	return nil
}

// Error is an error an exporter returned, as the client sees it. It
// matches, under [errors.Is], the [driver] sentinel of its Code, the errors
// its Matches name ([flash.ErrImage], [lease.ErrNothingFound],
// [context.DeadlineExceeded], ...), and [driver.ErrGone] when the exporter
// could not be reached or died in the call. [errors.As] finds the
// [*connect.Error] under it.
type Error struct {
	// Code is the [driver.Code] of the exporter's error, or "".
	Code string
	// Matches name the other errors it matches (see [MatchNames]).
	Matches []string
	// Message is the exporter's error text, as the exporter wrote it.
	Message string
	// Exporter names the exporter: the name it gave, else the address the
	// client called.
	Exporter string
	// Fault is whose failure it is.
	Fault Fault
	// Holders are, for a busy error, who held the devices wanted.
	Holders []DeviceHolder
	// Waited is, for a busy error, how long the request waited.
	Waited time.Duration

	connectErr *connect.Error
}

// DeviceHolder is who held a device's lease when a request found it busy.
type DeviceHolder struct {
	// Device is the device's key, "driver/name".
	Device string
	// Holder is the holder as its lease file records it; the zero Holder
	// when it could not be told.
	Holder lease.Holder
	// User is who the exporter authenticated the holder as; "" for a
	// holder on the exporter's host.
	User string
}

// Error is the exporter's message, prefixed with the exporter's name.
func (e *Error) Error() string {
	if e.Exporter == "" {
		return "exporter: " + e.Message
	}
	return fmt.Sprintf("exporter %s: %s", e.Exporter, e.Message)
}

// Unwrap returns the [*connect.Error] the client received.
func (e *Error) Unwrap() error {
	if e.connectErr == nil {
		return nil
	}
	return e.connectErr
}

// ConnectCode is the connect code the error came with (Unknown for an
// Error not made by [FromConnect]).
func (e *Error) ConnectCode() connect.Code {
	if e.connectErr == nil {
		return connect.CodeUnknown
	}
	return e.connectErr.Code()
}

// Is reports whether target is the sentinel of e's Code or one of the
// errors e's Matches name.
func (e *Error) Is(target error) bool {
	if s := driver.FromCode(e.Code); s != nil && target == s {
		return true
	}
	for _, m := range matchNames {
		if target == m.err && slices.Contains(e.Matches, m.name) {
			return true
		}
	}
	return false
}

// FromConnect turns an error a connect client returned into an [*Error]
// ([ClientInterceptor] does it on every call). exporter names the exporter
// when its error does not (the address the client called). An error that
// carries no [dutv1.ErrorDetail] (one a proxy or the transport made) is
// told by its connect code: Canceled and DeadlineExceeded match the
// context's errors, Unavailable (the exporter unreachable, or gone
// mid-call) matches [driver.ErrGone]. nil and errors that are not a
// [*connect.Error] are returned as they are.
func FromConnect(err error, exporter string) error {
	var ce *connect.Error
	if err == nil || !errors.As(err, &ce) {
		return err
	}
	var already *Error
	if errors.As(err, &already) {
		return err
	}
	e := &Error{Message: ce.Message(), Exporter: exporter, connectErr: ce}
	if d := detailOf(ce); d != nil {
		e.Code, e.Matches, e.Fault = d.Code, d.Matches, Fault(d.Fault)
		if d.Exporter != "" {
			e.Exporter = d.Exporter
		}
		e.Holders = holdersFromProto(d.Holders)
		e.Waited = d.Waited.AsDuration()
		return e
	}
	e.Fault = faultOfConnectCode(ce.Code())
	switch ce.Code() {
	case connect.CodeUnavailable:
		e.Code = "gone"
		e.Message = "unreachable or gone: " + ce.Message()
	case connect.CodeCanceled:
		e.Matches = []string{"context.canceled"}
	case connect.CodeDeadlineExceeded:
		e.Matches = []string{"context.deadline_exceeded"}
	}
	return e
}

// FaultOf tells whose failure err is: for an [*Error], what the exporter
// said (or its connect code told); for a local error, what ToConnect would
// say. The context's errors are [FaultUnspecified].
func FaultOf(err error) Fault {
	if err == nil {
		return FaultUnspecified
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Fault
	}
	return faultOfLocal(err, describe(err, ""))
}
