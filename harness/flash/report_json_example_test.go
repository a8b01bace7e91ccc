package flash_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/flash"
)

// A failed flash's report as a test's flash.json (and dut flash --json)
// holds it: how far the write got, and why it stopped.
func ExampleMarshalReport() {
	rep := flash.Report{
		Image: "/images/os.img.gz", Format: flash.Gzip, Decoder: "built-in", Target: "/dev/sdb",
		Bytes: 16 << 20, Duration: 500 * time.Millisecond, Mode: flash.ModeFull, MappedBytes: 16 << 20,
	}
	b, err := flash.MarshalReport(rep, errors.New("write at 16777216: input/output error"))
	if err != nil {
		log.Fatal(err)
	}
	os.Stdout.Write(b)

	// Reading it back gives the Report (the error is not one of its fields).
	var back flash.Report
	if err := json.Unmarshal(b, &back); err != nil {
		log.Fatal(err)
	}
	fmt.Println(back.Duration, back == rep)
	// Output:
	// {
	//   "image": "/images/os.img.gz",
	//   "format": "gzip",
	//   "decoder": "built-in",
	//   "target": "/dev/sdb",
	//   "bytes": 16777216,
	//   "sha256": "",
	//   "sha256_cached": false,
	//   "mode": "full",
	//   "bmap": "",
	//   "sparse": false,
	//   "mapped_bytes": 16777216,
	//   "mapped_fraction": 0,
	//   "zeroed_bytes": 0,
	//   "zeroed_by": "",
	//   "direct": false,
	//   "verified": false,
	//   "seconds": 0.5,
	//   "verify_seconds": 0,
	//   "mbps": 33.554432,
	//   "error": "write at 16777216: input/output error"
	// }
	// 500ms true
}
