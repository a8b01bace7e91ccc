package wire

import (
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/lease"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/gen/dutv1"
)

// HolderToProto converts a lease holder (as its lease file records it) into
// its wire form; user is who the exporter authenticated the holder as, ""
// for a holder on the exporter's own host.
func HolderToProto(h lease.Holder, user string) *dutv1.Holder {
	p := &dutv1.Holder{Test: h.Test, Pid: int64(h.PID), Host: h.Host, Command: h.Command, User: user}
	if !h.Since.IsZero() {
		p.Since = timestamppb.New(h.Since)
	}
	return p
}

// HolderFromProto converts a wire holder back; nil gives the zero Holder.
// It returns the user apart, as [lease.Holder] has no field for it.
func HolderFromProto(p *dutv1.Holder) (h lease.Holder, user string) {
	if p == nil {
		return lease.Holder{}, ""
	}
	h = lease.Holder{Test: p.GetTest(), PID: int(p.GetPid()), Host: p.GetHost(), Command: p.GetCommand()}
	if p.GetSince() != nil {
		h.Since = p.GetSince().AsTime().In(time.Local)
	}
	return h, p.GetUser()
}

// holdersToProto lists who held the devices of a busy error.
func holdersToProto(be *lease.BusyError) []*dutv1.DeviceHolder {
	var out []*dutv1.DeviceHolder
	for i, d := range be.Devices {
		dh := &dutv1.DeviceHolder{Device: d.Key(), Held: true}
		if i < len(be.Holders) && be.Holders[i] != (lease.Holder{}) {
			dh.Holder = HolderToProto(be.Holders[i], "")
		}
		out = append(out, dh)
	}
	return out
}

func holdersFromProto(ps []*dutv1.DeviceHolder) []DeviceHolder {
	var out []DeviceHolder
	for _, p := range ps {
		h, user := HolderFromProto(p.GetHolder())
		out = append(out, DeviceHolder{Device: p.GetDevice(), Holder: h, User: user})
	}
	return out
}
