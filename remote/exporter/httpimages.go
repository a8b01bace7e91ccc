package exporter

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/jumpstarter-dev/jumpstarter-go/remote/imagecache"
)

// The image cache over plain HTTP, for tools without a gRPC or connect
// client (curl): PUT /v1/images/SHA256 with the whole file as the body
// uploads it (refused unless the body's SHA-256 is SHA256), HEAD tells
// whether the cache has it. Both are authenticated like every call.
//
//	curl -H "Authorization: Bearer $TOKEN" -T os.img.zst https://lab-1:7443/v1/images/$(sha256sum os.img.zst | cut -d' ' -f1)
func (e *Exporter) imageHandlers(mux *http.ServeMux) {
	mux.HandleFunc("PUT /v1/images/{sha256}", e.putImage)
	mux.HandleFunc("HEAD /v1/images/{sha256}", e.headImage)
}

// putImage stores the request's body in the cache under its digest.
func (e *Exporter) putImage(w http.ResponseWriter, r *http.Request) {
	c := e.cfg.Images
	if c == nil {
		http.Error(w, fmt.Sprintf("exporter %s keeps no image cache", e.cfg.Name), http.StatusNotImplemented)
		return
	}
	sum := r.PathValue("sha256")
	if r.ContentLength < 0 {
		http.Error(w, "give the file's size (Content-Length): send the file, not a stream", http.StatusLengthRequired)
		return
	}
	buf := make([]byte, imagecache.MaxChunk)
	var off int64
	res, err := e.receive(r.Context(), c, imagecache.Header{SHA256: sum, Size: r.ContentLength, Name: r.Header.Get("X-Image-Name")}, "http", func() (int64, []byte, bool, error) {
		n, err := io.ReadFull(r.Body, buf)
		at := off
		off += int64(n)
		switch {
		case n > 0:
			return at, buf[:n], true, nil
		case errors.Is(err, io.EOF):
			return 0, nil, false, nil
		}
		return 0, nil, false, fmt.Errorf("%w: the upload broke off: %w", imagecache.ErrInvalid, err)
	})
	if err != nil {
		httpCacheError(w, err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if !res.AlreadyCached {
		w.WriteHeader(http.StatusCreated)
	}
	fmt.Fprintf(w, "%s %d\n", res.SHA256, res.Size)
}

// headImage answers 200 with the size when the cache has the file, else 404.
func (e *Exporter) headImage(w http.ResponseWriter, r *http.Request) {
	if e.cfg.Images == nil {
		w.WriteHeader(http.StatusNotImplemented)
		return
	}
	size, ok := e.cfg.Images.Has(r.PathValue("sha256"))
	if !ok {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	w.WriteHeader(http.StatusOK)
}

// httpCacheError answers a refused upload: the caller's (400, or 413 for
// too large) or the exporter's (500).
func httpCacheError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, imagecache.ErrTooLarge):
		http.Error(w, err.Error(), http.StatusRequestEntityTooLarge)
	case errors.Is(err, imagecache.ErrInvalid):
		http.Error(w, err.Error(), http.StatusBadRequest)
	default:
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
}
