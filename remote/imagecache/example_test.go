package imagecache_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/jumpstarter-dev/jumpstarter-go/remote/imagecache"
)

// Example_upload sends a sparse file into a cache as a client and an
// exporter would over FlashService: hash, ask, upload the data ranges only,
// then acquire the cached file for a flash.
func Example_upload() {
	tmp, err := os.MkdirTemp("", "imagecache-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(tmp)

	// A sparse 64 MiB image: a little data at the start, the rest holes.
	img := filepath.Join(tmp, "os.img")
	f, err := os.Create(img)
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(64 << 20); err != nil {
		log.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("boot sector"), 0); err != nil {
		log.Fatal(err)
	}

	// The exporter's cache, 1 GiB.
	cache, err := imagecache.Open(filepath.Join(tmp, "cache"), 1<<30)
	if err != nil {
		log.Fatal(err)
	}

	// Client: hash the file, ask (HasImage), upload when missing.
	ctx := context.Background()
	sum, err := imagecache.FileSHA256(ctx, f)
	if err != nil {
		log.Fatal(err)
	}
	if _, ok := cache.Has(sum); !ok {
		// Exporter: the header begins the upload, chunks follow.
		up, err := cache.Begin(imagecache.Header{SHA256: sum, Size: 64 << 20, Name: "os.img"})
		if err != nil {
			log.Fatal(err)
		}
		defer up.Abort() // on any error path
		_, _, sent, err := imagecache.Chunks(ctx, f, imagecache.MaxChunk, up.WriteChunk)
		if err != nil {
			log.Fatal(err)
		}
		res, err := up.Commit()
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println("stored:", res.SHA256 == sum, res.Size, "bytes, already cached:", res.AlreadyCached)
		fmt.Println("all data bytes received:", res.Received == sent)
	}

	// Exporter: Flash by digest; the file is pinned while the flash reads it.
	path, release, err := cache.Acquire(sum)
	if err != nil {
		log.Fatal(err)
	}
	defer release()
	fi, err := os.Stat(path)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("flash reads", filepath.Base(path) == sum, fi.Size(), "bytes; cache holds", cache.Len(), "file")
	// Output:
	// stored: true 67108864 bytes, already cached: false
	// all data bytes received: true
	// flash reads true 67108864 bytes; cache holds 1 file
}
