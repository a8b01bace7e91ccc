package flash

import (
	"bytes"
	"crypto/sha1" //nolint:gosec // bmap format 1.x checksums are SHA-1 by definition
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
)

// ErrBmap is wrapped (together with [ErrImage]) by errors about a bmap file:
// unparsable, inconsistent, a wrong own checksum, or not matching its image.
var ErrBmap = errors.New("bad bmap")

// Bmap is a parsed block map in bmaptool's format (versions 1.x and 2.0):
// which blocks of an image hold data, with a checksum of each range.
type Bmap struct {
	Version           string // as written, e.g. "2.0"
	ImageSize         int64  // bytes of the (unpacked) image
	BlockSize         int64
	BlocksCount       int64
	MappedBlocksCount int64
	// ChecksumType is "sha256" or "sha1" (format 1.3 and 1.4 and 2.0 with
	// ChecksumType sha1), or "" when the ranges carry no checksums (1.0-1.2).
	ChecksumType string
	Ranges       []BmapRange // sorted, disjoint, within BlocksCount
}

// BmapRange is the inclusive block range First..Last and the hex checksum of
// its image bytes ("" when the bmap has none).
type BmapRange struct {
	First, Last int64
	Checksum    string
}

// Bytes returns the image byte range [start, end) the block range covers; the
// last block is cut at the image's end.
func (b *Bmap) Bytes(r BmapRange) (start, end int64) {
	start = r.First * b.BlockSize
	end = min((r.Last+1)*b.BlockSize, b.ImageSize)
	return start, end
}

// MappedBytes returns how many image bytes the ranges cover.
func (b *Bmap) MappedBytes() int64 {
	var n int64
	for _, r := range b.Ranges {
		s, e := b.Bytes(r)
		n += e - s
	}
	return n
}

func (b *Bmap) newHash() hash.Hash {
	switch b.ChecksumType {
	case "sha256":
		return sha256.New()
	case "sha1":
		return sha1.New() //nolint:gosec
	}
	return nil
}

type xmlBmap struct {
	XMLName           xml.Name `xml:"bmap"`
	Version           string   `xml:"version,attr"`
	ImageSize         *string  `xml:"ImageSize"`
	BlockSize         *string  `xml:"BlockSize"`
	BlocksCount       *string  `xml:"BlocksCount"`
	MappedBlocksCount *string  `xml:"MappedBlocksCount"`
	ChecksumType      *string  `xml:"ChecksumType"`
	BmapFileChecksum  *string  `xml:"BmapFileChecksum"`
	BmapFileSHA1      *string  `xml:"BmapFileSHA1"`
	BlockMap          *struct {
		Ranges []struct {
			Chksum *string `xml:"chksum,attr"`
			SHA1   *string `xml:"sha1,attr"`
			Text   string  `xml:",chardata"`
		} `xml:"Range"`
	} `xml:"BlockMap"`
}

const (
	maxImageSize = 1 << 50 // 1 PiB: far beyond any disk, far from overflow
	maxBlockSize = 1 << 30
)

// ParseBmap parses and checks a bmap document: its version (1.x or 2.0), its
// own checksum (BmapFileChecksum, or BmapFileSHA1 in 1.3, computed over the
// document with that value replaced by '0's, as bmaptool does), and its
// consistency (BlocksCount matches ImageSize and BlockSize, ranges are
// sorted, disjoint and inside the image, MappedBlocksCount is their sum,
// checksums are hex of the right length). Errors wrap [ErrBmap] and
// [ErrImage].
func ParseBmap(doc []byte) (*Bmap, error) {
	b, err := parseBmap(doc)
	if err != nil {
		return nil, fmt.Errorf("%w: %w: %w", ErrImage, ErrBmap, err)
	}
	return b, nil
}

func parseBmap(doc []byte) (*Bmap, error) {
	var x xmlBmap
	if err := xml.Unmarshal(doc, &x); err != nil {
		return nil, fmt.Errorf("not a bmap XML document: %w", err)
	}
	b := &Bmap{Version: strings.TrimSpace(x.Version)}
	major, minor, ok := strings.Cut(b.Version, ".")
	maj, err1 := strconv.Atoi(major)
	mnr, err2 := strconv.Atoi(minor)
	if !ok || err1 != nil || err2 != nil || maj < 0 || mnr < 0 {
		return nil, fmt.Errorf("version %q is not MAJOR.MINOR", x.Version)
	}
	if maj != 1 && maj != 2 {
		return nil, fmt.Errorf("version %s is not supported (only 1.x and 2.x)", b.Version)
	}
	num := func(name string, s *string, lo, hi int64) (int64, error) {
		if s == nil {
			return 0, fmt.Errorf("no <%s>", name)
		}
		v, err := strconv.ParseInt(strings.TrimSpace(*s), 10, 64)
		if err != nil || v < lo || v > hi {
			return 0, fmt.Errorf("<%s> %q is not a number in [%d, %d]", name, strings.TrimSpace(*s), lo, hi)
		}
		return v, nil
	}
	var err error
	if b.ImageSize, err = num("ImageSize", x.ImageSize, 0, maxImageSize); err != nil {
		return nil, err
	}
	if b.BlockSize, err = num("BlockSize", x.BlockSize, 1, maxBlockSize); err != nil {
		return nil, err
	}
	if b.BlocksCount, err = num("BlocksCount", x.BlocksCount, 0, maxImageSize); err != nil {
		return nil, err
	}
	if b.MappedBlocksCount, err = num("MappedBlocksCount", x.MappedBlocksCount, 0, maxImageSize); err != nil {
		return nil, err
	}
	if want := (b.ImageSize + b.BlockSize - 1) / b.BlockSize; b.BlocksCount != want {
		return nil, fmt.Errorf("BlocksCount %d does not match ImageSize %d / BlockSize %d (%d blocks)", b.BlocksCount, b.ImageSize, b.BlockSize, want)
	}

	// Checksums: 2.x and 1.4 name their type; 1.3 is SHA-1; 1.0-1.2 have none.
	var fileSum *string
	attr := "chksum"
	switch {
	case maj == 2 || (maj == 1 && mnr >= 4):
		if x.ChecksumType == nil {
			return nil, errors.New("no <ChecksumType>")
		}
		b.ChecksumType = strings.TrimSpace(*x.ChecksumType)
		if b.ChecksumType != "sha256" && b.ChecksumType != "sha1" {
			return nil, fmt.Errorf("ChecksumType %q is not supported (sha256 or sha1)", b.ChecksumType)
		}
		if x.BmapFileChecksum == nil {
			return nil, errors.New("no <BmapFileChecksum>")
		}
		fileSum = x.BmapFileChecksum
	case mnr == 3:
		b.ChecksumType = "sha1"
		attr = "sha1"
		if x.BmapFileSHA1 == nil {
			return nil, errors.New("no <BmapFileSHA1>")
		}
		fileSum = x.BmapFileSHA1
	}
	sumLen := 0
	if h := b.newHash(); h != nil {
		sumLen = hex.EncodedLen(h.Size())
	}
	isSum := func(s string) bool {
		if len(s) != sumLen {
			return false
		}
		_, err := hex.DecodeString(s)
		return err == nil
	}
	if fileSum != nil {
		want := strings.ToLower(strings.TrimSpace(*fileSum))
		if !isSum(want) {
			return nil, fmt.Errorf("the bmap's own checksum %q is not a %s", want, b.ChecksumType)
		}
		pos := bytes.Index(bytes.ToLower(doc), []byte(want))
		if pos < 0 {
			return nil, errors.New("the bmap's own checksum is not in the document as written")
		}
		zeroed := bytes.Clone(doc)
		copy(zeroed[pos:pos+sumLen], bytes.Repeat([]byte{'0'}, sumLen))
		h := b.newHash()
		h.Write(zeroed)
		if got := hex.EncodeToString(h.Sum(nil)); got != want {
			return nil, fmt.Errorf("the bmap's own %s checksum is wrong (the file is damaged or was edited): it says %s, its content hashes to %s", b.ChecksumType, want, got)
		}
	}

	if x.BlockMap == nil {
		return nil, errors.New("no <BlockMap>")
	}
	var mapped int64
	next := int64(0) // the first block a range may start at
	for i, xr := range x.BlockMap.Ranges {
		text := strings.TrimSpace(xr.Text)
		first, last, isRange := strings.Cut(text, "-")
		r := BmapRange{}
		var err error
		if r.First, err = strconv.ParseInt(strings.TrimSpace(first), 10, 64); err != nil {
			return nil, fmt.Errorf("range %d %q is not FIRST-LAST or a block number", i+1, text)
		}
		r.Last = r.First
		if isRange {
			if r.Last, err = strconv.ParseInt(strings.TrimSpace(last), 10, 64); err != nil {
				return nil, fmt.Errorf("range %d %q is not FIRST-LAST or a block number", i+1, text)
			}
		}
		if r.First < next || r.Last < r.First || r.Last >= b.BlocksCount {
			return nil, fmt.Errorf("range %d %q is out of order, overlapping, or past the image's %d blocks", i+1, text, b.BlocksCount)
		}
		next = r.Last + 1
		mapped += r.Last - r.First + 1
		sum := xr.Chksum
		if attr == "sha1" {
			sum = xr.SHA1
		}
		if b.ChecksumType != "" {
			if sum == nil || !isSum(strings.ToLower(strings.TrimSpace(*sum))) {
				return nil, fmt.Errorf("range %d %q has no valid %s %s attribute", i+1, text, b.ChecksumType, attr)
			}
			r.Checksum = strings.ToLower(strings.TrimSpace(*sum))
		}
		b.Ranges = append(b.Ranges, r)
	}
	if mapped != b.MappedBlocksCount {
		return nil, fmt.Errorf("MappedBlocksCount %d does not match the %d blocks of its ranges", b.MappedBlocksCount, mapped)
	}
	return b, nil
}
