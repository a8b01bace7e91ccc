package flash

import (
	"crypto/sha1" //nolint:gosec
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// goldenImage is the sparse image testdata/bmaptool-2.0.bmap was made from
// with `bmaptool create` (bmap-tools 3.6): 41060 bytes, data in blocks 0-1,
// 4 and 10.
func goldenImage() []byte {
	b := make([]byte, 41060)
	copy(b, strings.Repeat("A", 5000))
	copy(b[16384:], strings.Repeat("B", 4096))
	copy(b[40960:], strings.Repeat("C", 100))
	return b
}

// bmapDoc writes a bmap document the way bmaptool does, for the image data
// and the block ranges given ({first, last}), with a correct own checksum.
// version is "2.0" (sha256, or sumType), "1.3" (sha1) or "1.2" (none).
func bmapDoc(data []byte, blockSize int64, ranges [][2]int64, version, sumType string) string {
	size := int64(len(data))
	var newHash func() hash.Hash
	attr, fileTag := "chksum", "BmapFileChecksum"
	switch {
	case version == "1.3":
		newHash, attr, fileTag = sha1.New, "sha1", "BmapFileSHA1"
	case strings.HasPrefix(version, "1.") && version != "1.4":
	case sumType == "sha1":
		newHash = sha1.New
	default:
		newHash, sumType = sha256.New, "sha256"
	}
	var mapped int64
	var rs strings.Builder
	for _, r := range ranges {
		mapped += r[1] - r[0] + 1
		text := fmt.Sprint(r[0])
		if r[1] != r[0] {
			text = fmt.Sprintf("%d-%d", r[0], r[1])
		}
		if newHash == nil {
			fmt.Fprintf(&rs, "        <Range> %s </Range>\n", text)
			continue
		}
		h := newHash()
		h.Write(data[r[0]*blockSize : min((r[1]+1)*blockSize, size)])
		fmt.Fprintf(&rs, "        <Range %s=\"%s\"> %s </Range>\n", attr, hex.EncodeToString(h.Sum(nil)), text)
	}
	head := fmt.Sprintf("<?xml version=\"1.0\" ?>\n<!-- written by bmapDoc -->\n<bmap version=\"%s\">\n    <ImageSize> %d </ImageSize>\n    <BlockSize> %d </BlockSize>\n    <BlocksCount> %d </BlocksCount>\n    <MappedBlocksCount> %d </MappedBlocksCount>\n",
		version, size, blockSize, (size+blockSize-1)/blockSize, mapped)
	if newHash == nil {
		return head + "    <BlockMap>\n" + rs.String() + "    </BlockMap>\n</bmap>\n"
	}
	if fileTag == "BmapFileChecksum" {
		head += fmt.Sprintf("    <ChecksumType> %s </ChecksumType>\n", sumType)
	}
	zero := strings.Repeat("0", hex.EncodedLen(newHash().Size()))
	doc := head + fmt.Sprintf("    <%s> %s </%s>\n", fileTag, zero, fileTag) + "    <BlockMap>\n" + rs.String() + "    </BlockMap>\n</bmap>\n"
	h := newHash()
	h.Write([]byte(doc))
	return strings.Replace(doc, zero, hex.EncodeToString(h.Sum(nil)), 1)
}

func TestParseBmapGoldenFromBmaptool(t *testing.T) {
	doc, err := os.ReadFile("testdata/bmaptool-2.0.bmap")
	require.NoError(t, err)
	b, err := ParseBmap(doc)
	require.NoError(t, err)
	assert.Equal(t, "2.0", b.Version)
	assert.Equal(t, int64(41060), b.ImageSize)
	assert.Equal(t, int64(4096), b.BlockSize)
	assert.Equal(t, int64(11), b.BlocksCount)
	assert.Equal(t, int64(4), b.MappedBlocksCount)
	assert.Equal(t, "sha256", b.ChecksumType)
	require.Len(t, b.Ranges, 3)
	assert.Equal(t, BmapRange{0, 1, "fd0438d5afd86852fa431b25260d746b50b5995f0fcbbeecad7c9f3675321c7f"}, b.Ranges[0])
	assert.Equal(t, BmapRange{4, 4, "725bcd6c66d02acf6ebeab9c92410e010ea22e336876256aaf05a211f4ce1902"}, b.Ranges[1])
	assert.Equal(t, int64(3*4096+100), b.MappedBytes())
	// The range checksums are over the image bytes, the last block cut at
	// the image's end.
	img := goldenImage()
	for _, r := range b.Ranges {
		s, e := b.Bytes(r)
		sum := sha256.Sum256(img[s:e])
		assert.Equal(t, r.Checksum, hex.EncodeToString(sum[:]), "range %d-%d", r.First, r.Last)
	}
	// Our writer of test documents agrees with bmaptool's output.
	mine, err := ParseBmap([]byte(bmapDoc(img, 4096, [][2]int64{{0, 1}, {4, 4}, {10, 10}}, "2.0", "")))
	require.NoError(t, err)
	assert.Equal(t, b.Ranges, mine.Ranges)
}

func TestParseBmapVersions(t *testing.T) {
	img := goldenImage()
	ranges := [][2]int64{{0, 1}, {4, 4}, {10, 10}}
	for _, c := range []struct{ version, sumType, want string }{
		{"2.0", "", "sha256"},
		{"2.0", "sha1", "sha1"},
		{"1.4", "", "sha256"},
		{"1.3", "", "sha1"},
		{"1.2", "", ""},
	} {
		t.Run(c.version+c.sumType, func(t *testing.T) {
			b, err := ParseBmap([]byte(bmapDoc(img, 4096, ranges, c.version, c.sumType)))
			require.NoError(t, err)
			assert.Equal(t, c.want, b.ChecksumType)
			require.Len(t, b.Ranges, 3)
			if c.want == "" {
				assert.Empty(t, b.Ranges[0].Checksum)
			} else {
				assert.NotEmpty(t, b.Ranges[0].Checksum)
			}
		})
	}
}

// resum recomputes a sha256 document's own checksum after an edit, so a test
// reaches the checks behind it.
func resum(doc string) string {
	i := strings.Index(doc, "<BmapFileChecksum>") + len("<BmapFileChecksum>")
	j := strings.Index(doc, "</BmapFileChecksum>")
	zeroed := doc[:i] + " " + strings.Repeat("0", 64) + " " + doc[j:]
	sum := sha256.Sum256([]byte(zeroed))
	return strings.Replace(zeroed, strings.Repeat("0", 64), hex.EncodeToString(sum[:]), 1)
}

func TestParseBmapRejects(t *testing.T) {
	img := goldenImage()
	good := bmapDoc(img, 4096, [][2]int64{{0, 1}, {4, 4}, {10, 10}}, "2.0", "")
	cases := []struct {
		name, doc, want string
	}{
		{"not xml", "hello", "not a bmap XML document"},
		{"other root", "<map version=\"2.0\"></map>", "not a bmap XML document"},
		{"version 3", resum(strings.Replace(good, `version="2.0"`, `version="3.0"`, 1)), "not supported"},
		{"bad version", strings.Replace(good, `version="2.0"`, `version="two"`, 1), "not MAJOR.MINOR"},
		{"edited", strings.Replace(good, "<BlockSize> 4096", "<BlockSize> 4097", 1), "own sha256 checksum is wrong"},
		{"edited range", strings.Replace(good, "\"> 4 <", "\"> 5 <", 1), "own sha256 checksum is wrong"},
		{"no file checksum", strings.Replace(good, "BmapFileChecksum", "Nothing", 2), "no <BmapFileChecksum>"},
		{"md5", resum(strings.Replace(good, "> sha256 <", "> md5 <", 1)), "not supported"},
		{"blocks count", resum(strings.Replace(good, "<BlocksCount> 11", "<BlocksCount> 12", 1)), "BlocksCount 12 does not match"},
		{"mapped count", resum(strings.Replace(good, "<MappedBlocksCount> 4", "<MappedBlocksCount> 5", 1)), "MappedBlocksCount 5 does not match"},
		{"negative size", resum(strings.Replace(good, "<ImageSize> 41060", "<ImageSize> -1", 1)), "<ImageSize>"},
		{"zero block size", resum(strings.Replace(good, "<BlockSize> 4096", "<BlockSize> 0", 1)), "<BlockSize>"},
		{"overlap", resum(strings.Replace(good, "\"> 4 <", "\"> 1 <", 1)), "out of order, overlapping"},
		{"past the end", resum(strings.Replace(good, "> 10 <", "> 11 <", 1)), "past the image"},
		{"reversed", resum(strings.Replace(good, "> 0-1 <", "> 1-0 <", 1)), "out of order"},
		{"garbage range", resum(strings.Replace(good, "> 0-1 <", "> 0-x <", 1)), "not FIRST-LAST"},
		{"no range checksum", resum(strings.Replace(good, `<Range chksum=`, `<Range other=`, 1)), "no valid sha256 chksum"},
		{"short range checksum", resum(strings.Replace(good, `<Range chksum="fd`, `<Range chksum="`, 1)), "no valid sha256 chksum"},
		{"no block map", resum(strings.Replace(strings.Replace(good, "<BlockMap>", "<X>", 1), "</BlockMap>", "</X>", 1)), "no <BlockMap>"},
	}
	_, err := ParseBmap([]byte(good))
	require.NoError(t, err)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseBmap([]byte(c.doc))
			require.ErrorIs(t, err, ErrBmap)
			require.ErrorIs(t, err, ErrImage)
			assert.Contains(t, err.Error(), c.want)
		})
	}
}

func FuzzBmap(f *testing.F) {
	golden, err := os.ReadFile("testdata/bmaptool-2.0.bmap")
	require.NoError(f, err)
	f.Add(golden)
	img := goldenImage()
	for _, v := range []string{"2.0", "1.3", "1.2"} {
		f.Add([]byte(bmapDoc(img, 4096, [][2]int64{{0, 1}, {4, 4}, {10, 10}}, v, "")))
	}
	f.Add([]byte(bmapDoc(img, 512, [][2]int64{{0, 80}}, "1.0", "")))
	f.Add([]byte("<bmap version=\"1.0\"><ImageSize>0</ImageSize><BlockSize>1</BlockSize><BlocksCount>0</BlocksCount><MappedBlocksCount>0</MappedBlocksCount><BlockMap/></bmap>"))
	f.Fuzz(func(t *testing.T, doc []byte) {
		b, err := ParseBmap(doc)
		if err != nil {
			if b != nil {
				t.Fatal("a bmap returned with an error")
			}
			return
		}
		// Whatever it accepts is a consistent map the writer can trust.
		if b.ImageSize < 0 || b.BlockSize <= 0 || b.BlocksCount != (b.ImageSize+b.BlockSize-1)/b.BlockSize {
			t.Fatalf("inconsistent sizes accepted: %+v", b)
		}
		var mapped, next int64
		for _, r := range b.Ranges {
			if r.First < next || r.Last < r.First || r.Last >= b.BlocksCount {
				t.Fatalf("bad range accepted: %+v in %+v", r, b)
			}
			next = r.Last + 1
			mapped += r.Last - r.First + 1
			if (b.ChecksumType == "") != (r.Checksum == "") {
				t.Fatalf("range checksum %q with type %q", r.Checksum, b.ChecksumType)
			}
			if s, e := b.Bytes(r); s < 0 || e > b.ImageSize || s >= e {
				t.Fatalf("range %+v covers bytes [%d, %d) of %d", r, s, e, b.ImageSize)
			}
		}
		if mapped != b.MappedBlocksCount {
			t.Fatalf("MappedBlocksCount %d accepted for %d mapped blocks", b.MappedBlocksCount, mapped)
		}
		if b.ChecksumType != "" && b.ChecksumType != "sha256" && b.ChecksumType != "sha1" {
			t.Fatalf("checksum type %q accepted", b.ChecksumType)
		}
	})
}
