package flash

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Where the mount check looks; tests point them elsewhere.
var (
	mountinfoPath = "/proc/self/mountinfo"
	sysDevBlock   = "/sys/dev/block"
)

// mountedAt returns where the block device target (major:minor), or one of
// its partitions, is mounted, or "" when it is not.
func mountedAt(target string, major, minor uint32) (string, error) {
	devs := map[string]bool{fmt.Sprintf("%d:%d", major, minor): true}
	// Partitions are the subdirectories of the disk's sysfs directory that
	// have a "partition" file; their "dev" file holds MAJOR:MINOR.
	dir := filepath.Join(sysDevBlock, fmt.Sprintf("%d:%d", major, minor))
	if entries, err := os.ReadDir(dir); err == nil {
		for _, e := range entries {
			if _, err := os.Stat(filepath.Join(dir, e.Name(), "partition")); err != nil {
				continue
			}
			if b, err := os.ReadFile(filepath.Join(dir, e.Name(), "dev")); err == nil {
				devs[strings.TrimSpace(string(b))] = true
			}
		}
	}
	sources := map[string]bool{target: true}
	if real, err := filepath.EvalSymlinks(target); err == nil {
		sources[real] = true
	}
	f, err := os.Open(mountinfoPath)
	if err != nil {
		return "", fmt.Errorf("cannot tell whether %s is mounted: %w", target, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent MAJ:MIN root mountpoint options [optional...] - fstype source superoptions
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		source := ""
		for i, fld := range fields {
			if fld == "-" && i+2 < len(fields) {
				source = fields[i+2]
				break
			}
		}
		if devs[fields[2]] || (source != "" && sources[source]) {
			return strings.ReplaceAll(fields[4], `\040`, " "), nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("cannot tell whether %s is mounted: read %s: %w", target, mountinfoPath, err)
	}
	return "", nil
}
