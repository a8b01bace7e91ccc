package flash_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/flash"
)

// Flash a gzip-compressed image onto a disk. Here the disk is a regular
// file, as a virtual DUT's is; a real one is a block device such as
// /dev/sdb, which Write checks is not mounted before writing a byte.
func ExampleWrite() {
	dir, err := os.MkdirTemp("", "flash-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	// A 1 MiB image, packed with gzip (the name does not matter: the
	// format is told by the file's first bytes).
	img := bytes.Repeat([]byte("jumpstarter "), 1<<20/12+1)[:1<<20]
	var packed bytes.Buffer
	zw := gzip.NewWriter(&packed)
	zw.Write(img)
	zw.Close()
	image := filepath.Join(dir, "os.img.gz")
	if err := os.WriteFile(image, packed.Bytes(), 0o644); err != nil {
		log.Fatal(err)
	}
	// The disk: 2 MiB holding an older flash.
	disk := filepath.Join(dir, "disk")
	if err := os.WriteFile(disk, bytes.Repeat([]byte{0xff}, 2<<20), 0o644); err != nil {
		log.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, err := flash.Write(ctx, image, disk, flash.Options{NoHashCache: true})
	if err != nil {
		log.Fatal(err) // errors.Is(err, flash.ErrImage): the image's fault; flash.ErrTarget: the disk's
	}
	fmt.Println("format:", rep.Format, "decoder:", rep.Decoder)
	fmt.Println("mode:", rep.Mode)
	fmt.Println("bytes:", rep.Bytes, "written:", rep.MappedBytes, "zeroed:", rep.ZeroedBytes)
	fmt.Println("mapped fraction:", rep.MappedFraction)
	fmt.Println("verified:", rep.Verified, "sha256 of the file:", len(rep.SHA256) == 64)

	got, err := os.ReadFile(disk)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("disk starts with the image:", bytes.Equal(got[:len(img)], img))
	fmt.Println("rest of the disk untouched:", bytes.Count(got[len(img):], []byte{0xff}) == len(got)-len(img))
	// Output:
	// format: gzip decoder: built-in
	// mode: full
	// bytes: 1048576 written: 1048576 zeroed: 0
	// mapped fraction: 1
	// verified: true sha256 of the file: true
	// disk starts with the image: true
	// rest of the disk untouched: true
}

// Flash without waiting for the image's SHA-256: Write returns once the
// image is written, synced and read back, and the hash (evidence of which
// image the DUT runs) completes beside the rest of the test, here while the
// DUT would boot. Wait for it before the test ends.
func ExampleWrite_deferHash() {
	dir, err := os.MkdirTemp("", "flash-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	img := bytes.Repeat([]byte("jumpstarter "), 1<<20/12+1)[:1<<20]
	image := filepath.Join(dir, "os.img")
	disk := filepath.Join(dir, "disk")
	if err := os.WriteFile(image, img, 0o644); err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(disk, make([]byte, 2<<20), 0o644); err != nil {
		log.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, err := flash.Write(ctx, image, disk, flash.Options{NoHashCache: true, DeferHash: true})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("verified:", rep.Verified)
	// ... power the DUT on, wait for its login prompt ...
	sum, err := rep.Hash.Wait(ctx)
	if err != nil {
		log.Fatal(err) // errors.Is(err, flash.ErrImage): the file changed meanwhile
	}
	want := sha256.Sum256(img)
	fmt.Println("sha256 exact:", sum == hex.EncodeToString(want[:]))
	fmt.Println("from the cache:", rep.Hash.Cached())
	// Output:
	// verified: true
	// sha256 exact: true
	// from the cache: false
}
