package exporter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"connectrpc.com/connect"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/flash"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/gen/dutv1"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/imagecache"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/wire"
)

type flashService struct{ e *Exporter }

// cache returns the image cache, or the "unsupported" error.
func (s flashService) cache() (*imagecache.Cache, error) {
	if s.e.cfg.Images == nil {
		return nil, fmt.Errorf("%w: exporter %s keeps no image cache: it cannot flash", driver.ErrUnsupported, s.e.cfg.Name)
	}
	return s.e.cfg.Images, nil
}

// HasImage says whether the cache holds a file.
func (s flashService) HasImage(ctx context.Context, req *connect.Request[dutv1.HasImageRequest]) (*connect.Response[dutv1.HasImageResponse], error) {
	c, err := s.cache()
	if err != nil {
		return nil, err
	}
	if !imagecache.ValidSHA256(req.Msg.GetSha256()) {
		return nil, fmt.Errorf("%w: %q is not a SHA-256 (64 lower-case hex digits)", driver.ErrInvalidArgument, req.Msg.GetSha256())
	}
	size, ok := c.Has(req.Msg.GetSha256())
	return connect.NewResponse(&dutv1.HasImageResponse{Present: ok, Size: size}), nil
}

// UploadImage receives a file into the cache; a file whose bytes do not
// match its header's digest and size is refused and never enters it.
func (s flashService) UploadImage(ctx context.Context, stream *connect.ClientStream[dutv1.UploadImageRequest]) (*connect.Response[dutv1.UploadImageResponse], error) {
	c, err := s.cache()
	if err != nil {
		return nil, err
	}
	if !stream.Receive() {
		return nil, cmpErr(stream.Err(), fmt.Errorf("%w: an upload sent nothing: its first message must be the header", driver.ErrInvalidArgument))
	}
	h := stream.Msg().GetHeader()
	if h == nil {
		return nil, fmt.Errorf("%w: an upload's first message must be its header", driver.ErrInvalidArgument)
	}
	res, err := s.e.receive(ctx, c, imagecache.Header{SHA256: h.GetSha256(), Size: h.GetSize(), Name: h.GetName()}, "grpc", func() (int64, []byte, bool, error) {
		if !stream.Receive() {
			if err := stream.Err(); err != nil {
				return 0, nil, false, fmt.Errorf("the upload of %s broke off: %w", h.GetName(), err)
			}
			return 0, nil, false, nil
		}
		ch := stream.Msg().GetChunk()
		if ch == nil {
			return 0, nil, false, fmt.Errorf("%w: an upload's messages after the header must be chunks", driver.ErrInvalidArgument)
		}
		return ch.GetOffset(), ch.GetData(), true, nil
	})
	if err != nil {
		return nil, invalid(err)
	}
	return connect.NewResponse(&dutv1.UploadImageResponse{Sha256: res.SHA256, Size: res.Size, ReceivedBytes: res.Received, AlreadyCached: res.AlreadyCached}), nil
}

// receive stores one upload in the cache c: next gives its data ranges in
// order (more false at the end), whichever transport they come by (over
// names it in the log). Nothing enters the cache unless every byte
// arrived and they match h's digest and size.
func (e *Exporter) receive(ctx context.Context, c *imagecache.Cache, h imagecache.Header, over string, next func() (off int64, data []byte, more bool, err error)) (imagecache.Result, error) {
	up, err := c.Begin(h)
	if err != nil {
		return imagecache.Result{}, err
	}
	defer up.Abort()
	start := time.Now()
	for {
		off, data, more, err := next()
		if err != nil {
			return imagecache.Result{}, err
		}
		if !more {
			break
		}
		if err := up.WriteChunk(off, data); err != nil {
			return imagecache.Result{}, err
		}
	}
	res, err := up.Commit()
	if err != nil {
		e.log.Warn("upload refused", "name", h.Name, "sha256", h.SHA256, "user", userOf(ctx), "over", over, "err", err)
		return res, err
	}
	e.log.Info("image uploaded", "name", h.Name, "sha256", res.SHA256, "size", res.Size, "received", res.Received, "already_cached", res.AlreadyCached, "seconds", time.Since(start).Seconds(), "user", userOf(ctx), "over", over)
	return res, nil
}

// invalid marks a cache refusal of the caller's upload as an invalid
// argument (a disk failure of the exporter stays the lab's).
func invalid(err error) error {
	if errors.Is(err, imagecache.ErrInvalid) {
		return fmt.Errorf("%w: %w", driver.ErrInvalidArgument, err)
	}
	return err
}

// cmpErr returns err, or other when err is nil.
func cmpErr(err, other error) error {
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return other
}

// Flash writes a cached image onto the leased device's storage: power off,
// storage to the host, the flash engine, storage off.
func (s flashService) Flash(ctx context.Context, req *connect.Request[dutv1.FlashRequest], stream *connect.ServerStream[dutv1.FlashResponse]) error {
	c, err := s.cache()
	if err != nil {
		return err
	}
	m := req.Msg
	image, releaseImage, err := s.cached(c, m.GetImageSha256(), "image")
	if err != nil {
		return err
	}
	defer releaseImage()
	o := flashOptions(m.GetOptions())
	o.KnownSHA256 = m.GetImageSha256()
	if m.GetBmapSha256() != "" {
		bmap, releaseBmap, err := s.cached(c, m.GetBmapSha256(), "bmap")
		if err != nil {
			return err
		}
		defer releaseBmap()
		o.Bmap = bmap
	}
	o.Progress = func(p flash.Progress) {
		_ = stream.Send(&dutv1.FlashResponse{Event: &dutv1.FlashResponse_Progress{Progress: wire.ProgressToProto(p)}})
	}
	var rep flash.Report
	err = act(ctx, s.e, m.GetLease(), func(ctx context.Context, h *held, mux driver.StorageMux) error {
		rep, err = h.flash(ctx, mux, image, o)
		return err
	})
	if err != nil {
		ce := wire.ToConnect(err, s.e.cfg.Name)
		if d, derr := connect.NewErrorDetail(wire.ReportToProto(rep, err)); derr == nil {
			ce.AddDetail(d)
		}
		return ce
	}
	return stream.Send(&dutv1.FlashResponse{Event: &dutv1.FlashResponse_Report{Report: wire.ReportToProto(rep, nil)}})
}

// cached pins a cached file for a flash; a digest the cache lacks is the
// caller's error, before the device is touched.
func (s flashService) cached(c *imagecache.Cache, sum, what string) (string, func(), error) {
	path, release, err := c.Acquire(sum)
	if err != nil {
		return "", nil, fmt.Errorf("%w: the %s %q is not in exporter %s's image cache: upload it first (UploadImage): %w", driver.ErrInvalidArgument, what, sum, s.e.cfg.Name, err)
	}
	return path, release, nil
}

// flash runs the flash engine on the leased device, as the harness does
// locally: power off, storage to the host, write, storage off (also when
// the write fails).
func (h *held) flash(ctx context.Context, mux driver.StorageMux, image string, o flash.Options) (flash.Report, error) {
	if p, ok := driver.Has[driver.Power](h.dev); ok {
		if err := switchPower(ctx, h, dutv1.PowerState_POWER_STATE_OFF, p.PowerOff); err != nil {
			return flash.Report{}, err
		}
	}
	if err := mux.SetStorage(ctx, driver.StorageHost); err != nil {
		h.setStorage(dutv1.StorageMode_STORAGE_MODE_UNSPECIFIED)
		return flash.Report{}, err
	}
	h.setStorage(dutv1.StorageMode_STORAGE_MODE_HOST)
	defer func() {
		if err := mux.SetStorage(context.WithoutCancel(ctx), driver.StorageOff); err == nil {
			h.setStorage(dutv1.StorageMode_STORAGE_MODE_OFF)
		}
	}()
	target, err := mux.BlockTarget(ctx)
	if err != nil {
		return flash.Report{}, err
	}
	if tc, ok := mux.(driver.TargetChecker); ok {
		o.CheckTarget = tc.CheckTarget
	}
	start := time.Now()
	rep, err := flash.Write(ctx, image, target, o)
	h.e.log.Info("flash", "device", h.info.Key(), "sha256", o.KnownSHA256, "target", target, "bytes", rep.Bytes, "mode", rep.Mode, "verified", rep.Verified, "seconds", time.Since(start).Seconds(), "err", err)
	return rep, err
}

// flashOptions are the engine options a client chose.
func flashOptions(p *dutv1.FlashOptions) flash.Options {
	return flash.Options{
		NoBmap: p.GetNoBmap(), SkipHoles: p.GetSkipHoles(), NoVerify: p.GetNoVerify(),
		NoDirect: p.GetNoDirect(), PureGo: p.GetPureGo(), ProgressEvery: p.GetProgressEvery(),
		NoHashCache: true,
	}
}
