package remote

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"connectrpc.com/connect"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/flash"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/gen/dutv1"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/imagecache"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/wire"
)

// Sent says what a FlashImage sent to the exporter.
type Sent struct {
	// ImageBytes and BmapBytes are the data bytes that travelled (zero
	// when the exporter's cache had the file).
	ImageBytes, BmapBytes int64
}

// FlashImage flashes the image at path (and the bmap a local flash would
// use, see [flash.BmapFor]) onto the device's storage with the exporter's
// flash engine: each file is named by its SHA-256 and sent only when the
// exporter's cache lacks it, as it is on disk (compressed stays
// compressed; of a sparse file only its data travels). Progress, when o
// has it, comes from the exporter while it writes. The report is the
// engine's, with the image's local path and the target named on the
// exporter ("exporter:path").
func (d *Device) FlashImage(ctx context.Context, path string, o flash.Options) (flash.Report, error) {
	rep, _, err := d.Flash(ctx, path, o)
	return rep, err
}

// Flash is [Device.FlashImage] that also says what it sent.
func (d *Device) Flash(ctx context.Context, path string, o flash.Options) (flash.Report, Sent, error) {
	var sent Sent
	if err := d.usable(); err != nil {
		return flash.Report{Image: path}, sent, err
	}
	bmap, err := flash.BmapFor(path, o)
	if err != nil {
		return flash.Report{Image: path}, sent, err
	}
	req := &dutv1.FlashRequest{Lease: d.ref, Options: &dutv1.FlashOptions{
		NoBmap: o.NoBmap, SkipHoles: o.SkipHoles, NoVerify: o.NoVerify, NoDirect: o.NoDirect, PureGo: o.PureGo, ProgressEvery: o.ProgressEvery,
	}}
	if req.ImageSha256, sent.ImageBytes, err = d.ex.ensure(ctx, path, o); err != nil {
		return flash.Report{Image: path}, sent, err
	}
	if bmap != "" {
		if req.BmapSha256, sent.BmapBytes, err = d.ex.ensure(ctx, bmap, o); err != nil {
			return flash.Report{Image: path}, sent, err
		}
	}
	var rep flash.Report
	err = d.call("flash", func() error {
		rep, err = d.ex.flashCached(ctx, req, o.Progress)
		return err
	})
	rep.Image = path
	if bmap != "" {
		rep.Bmap = bmap
	}
	if rep.Target != "" {
		rep.Target = d.ex.name + ":" + rep.Target
	}
	return rep, sent, err
}

// flashCached runs the exporter's Flash and returns its report; a failed
// flash's report (how far it got) comes in its error's details.
func (ex *exporter) flashCached(ctx context.Context, req *dutv1.FlashRequest, progress func(flash.Progress)) (flash.Report, error) {
	stream, err := ex.flash.Flash(ctx, connect.NewRequest(req))
	if err != nil {
		return flash.Report{}, err
	}
	defer stream.Close()
	for stream.Receive() {
		switch ev := stream.Msg().GetEvent().(type) {
		case *dutv1.FlashResponse_Progress:
			if progress != nil {
				progress(wire.ProgressFromProto(ev.Progress))
			}
		case *dutv1.FlashResponse_Report:
			return wire.ReportFromProto(ev.Report), nil
		}
	}
	err = stream.Err()
	if err == nil {
		return flash.Report{}, fmt.Errorf("%w: exporter %s ended the flash without a report", driver.ErrGone, ex.name)
	}
	return reportOf(err), err
}

// reportOf is the flash report a failed Flash carries in its details.
func reportOf(err error) flash.Report {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return flash.Report{}
	}
	for _, d := range ce.Details() {
		if m, derr := d.Value(); derr == nil {
			if r, ok := m.(*dutv1.FlashReport); ok {
				return wire.ReportFromProto(r)
			}
		}
	}
	return flash.Report{}
}

// ensure makes sure the exporter's cache has the file at path and returns
// its SHA-256 and how many bytes were sent for it.
func (ex *exporter) ensure(ctx context.Context, path string, o flash.Options) (string, int64, error) {
	sum, err := flash.FileSHA256(ctx, path, o)
	if err != nil {
		return "", 0, err
	}
	has, err := ex.flash.HasImage(ctx, connect.NewRequest(&dutv1.HasImageRequest{Sha256: sum}))
	if err != nil {
		return "", 0, fmt.Errorf("ask exporter %s for %s: %w", ex.name, path, err)
	}
	if has.Msg.GetPresent() {
		return sum, 0, nil
	}
	n, err := ex.upload(ctx, path, sum)
	return sum, n, err
}

// upload sends the file at path, whose SHA-256 is sum, into the exporter's
// cache: its data ranges only. A file that changed since it was hashed is
// refused by the exporter (its digest no longer matches).
func (ex *exporter) upload(ctx context.Context, path, sum string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", flash.ErrImage, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("%w: %w", flash.ErrImage, err)
	}
	stream := ex.flash.UploadImage(ctx)
	send := func(m *dutv1.UploadImageRequest) error {
		if err := stream.Send(m); err != nil {
			_, rerr := stream.CloseAndReceive()
			return errors.Join(err, rerr)
		}
		return nil
	}
	if err := send(&dutv1.UploadImageRequest{Part: &dutv1.UploadImageRequest_Header{Header: &dutv1.UploadHeader{Sha256: sum, Size: st.Size(), Name: filepath.Base(path)}}}); err != nil {
		return 0, fmt.Errorf("upload %s to exporter %s: %w", path, ex.name, err)
	}
	// The exporter checks the digest of what arrives (and refuses a
	// mismatch): here a stat before and after tells a file that changed.
	_, sent, err := imagecache.Ranges(ctx, f, imagecache.MaxChunk, func(off int64, data []byte) error {
		return send(&dutv1.UploadImageRequest{Part: &dutv1.UploadImageRequest_Chunk{Chunk: &dutv1.UploadChunk{Offset: off, Data: data}}})
	})
	if err != nil {
		return sent, fmt.Errorf("upload %s to exporter %s: %w", path, ex.name, err)
	}
	if after, err := f.Stat(); err != nil || after.Size() != st.Size() || !after.ModTime().Equal(st.ModTime()) {
		return sent, fmt.Errorf("%w: %s changed while it was sent: flash it again once it stays as it is", flash.ErrImage, path)
	}
	if _, err := stream.CloseAndReceive(); err != nil {
		return sent, fmt.Errorf("upload %s to exporter %s: %w", path, ex.name, err)
	}
	return sent, nil
}
