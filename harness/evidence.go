package harness

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/flash"
)

// Artifact file names written into t.ArtifactDir().
const (
	ConsoleLogFile  = "console.log" // the test's slice of the console, cleaned, timestamped
	ConsoleRawFile  = "console.raw" // the same slice, raw bytes
	FlashReportFile = "flash.json"  // the last flash's report (also of a failed flash)
)

// recordDevice records the device's properties.
func (d *DUT) recordDevice() {
	dev := d.s.dev
	info := driver.Info{Driver: dev.Driver(), Name: dev.Name(), Serial: dev.Serial()}
	if d.s.lease != nil {
		info.Facts = d.s.lease.Info().Facts
	}
	d.apply(deviceProperties(info))
}

// recordFlash records the properties of the flash rep describes, the
// image's hash included.
func (d *DUT) recordFlash(rep flash.Report) {
	d.apply(flashProperties(withAbsImage(rep)))
	d.recordImageHash(rep)
}

// recordImageHash records the image's SHA-256 once rep has it: apart from
// the rest of the flash, since the hash may be known after the write.
func (d *DUT) recordImageHash(rep flash.Report) { d.apply(imageHashProperties(rep)) }

// writeFlashReport writes rep (and err, for a failed flash) as the test's
// flash report artifact and records its path as a property. Writing it
// again (once the image's hash is known) replaces it.
func (d *DUT) writeFlashReport(rep flash.Report, err error) {
	b, jerr := flashReportJSON(withAbsImage(rep), err)
	if jerr != nil {
		d.t.Errorf("jumpstarter: flash report: %v", jerr)
		return
	}
	path := filepath.Join(d.t.ArtifactDir(), d.file(FlashReportFile))
	if werr := os.WriteFile(path, b, 0o644); werr != nil {
		d.t.Errorf("jumpstarter: writing the flash report: %v", werr)
		return
	}
	d.attr(AttrFlashReport, path)
}

// withAbsImage returns rep with its image path made absolute, as the
// evidence names it (the test's working directory is not the reader's).
func withAbsImage(rep flash.Report) flash.Report {
	if rep.Image == "" {
		return rep
	}
	if abs, err := filepath.Abs(rep.Image); err == nil {
		rep.Image = abs
	}
	return rep
}

// apply records props (see attr).
func (d *DUT) apply(props []property) {
	for _, p := range props {
		d.attr(p.Key, p.Value)
	}
}

// attr records a property, under d's role (see [roleKey]), its value made
// one line; flushAttrs emits the last value of each at cleanup, so a test
// that flashes or logs in twice carries each property once.
func (d *DUT) attr(key, value string) {
	key, value = roleKey(d.role, key), oneLine(value)
	d.propsMu.Lock()
	defer d.propsMu.Unlock()
	if d.props == nil {
		d.props = map[string]string{}
	}
	d.props[key] = value
}

func (d *DUT) flushAttrs() {
	d.propsMu.Lock()
	defer d.propsMu.Unlock()
	keys := make([]string, 0, len(d.props))
	for k := range d.props {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		d.t.Attr(k, d.props[k])
	}
	d.props = nil
}

// file is the artifact file name under which d writes name: "<role>-name"
// for a DUT with a role.
func (d *DUT) file(name string) string {
	if d.role == "" {
		return name
	}
	return d.role + "-" + name
}

// oneLine makes a property value safe: no newlines.
func oneLine(s string) string { return strings.NewReplacer("\n", " ", "\r", " ").Replace(s) }

// writeConsole writes the test's slice of the console into its artifact
// directory; for a failed test it also keeps the log and shows its tail.
func (d *DUT) writeConsole() {
	con := d.s.con
	if con == nil {
		return
	}
	dir := d.t.ArtifactDir()
	end := con.Mark()
	var errs []error
	if f, err := os.Create(filepath.Join(dir, d.file(ConsoleLogFile))); err == nil {
		errs = append(errs, con.WriteLog(f, d.mark, end), f.Close())
	} else {
		errs = append(errs, err)
	}
	if f, err := os.Create(filepath.Join(dir, d.file(ConsoleRawFile))); err == nil {
		errs = append(errs, con.WriteRaw(f, d.mark, end), f.Close())
	} else {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		d.t.Errorf("jumpstarter: writing the console log: %v", err)
		return
	}
	log := filepath.Join(dir, d.file(ConsoleLogFile))
	if d.t.Failed() {
		log = d.keepFailedConsole(dir)
	}
	d.attr(AttrConsoleLog, log)
}

// failedTail is how much of a failed test's console its log shows.
const (
	failedTailLines = 30
	failedTailBytes = 4 << 10
)

// keepFailedConsole makes sure a failed test's console outlives the test and
// says where it is, with its last lines: without go test -artifacts the
// artifact folder is removed when the test ends, so its files are copied to
// a folder that stays ($TMPDIR/jumpstarter-go/failed/...). It returns the
// console log's lasting path.
func (d *DUT) keepFailedConsole(dir string) string {
	log := filepath.Join(dir, d.file(ConsoleLogFile))
	how := "in the test's artifact folder"
	if !artifactsKept() {
		kept, err := keepFiles(dir, d.t.Name())
		if err != nil {
			d.t.Errorf("jumpstarter: keeping the console log of this failed test: %v", err)
			return log
		}
		log = filepath.Join(kept, d.file(ConsoleLogFile))
		how = "kept, since go test ran without -artifacts"
	}
	tail, lines, err := fileTail(log, failedTailLines, failedTailBytes)
	if err != nil {
		d.t.Errorf("jumpstarter: reading the console log: %v", err)
		return log
	}
	if lines == 0 {
		d.log.logf("jumpstarter: the console of %s printed nothing during this test; its (empty) log is %s (%s)", d.Name(), log, how)
		return log
	}
	d.log.logf("jumpstarter: the console log of this failed test is %s (%s); its last %d lines:\n%s", log, how, lines, indentLines(tail))
	return log
}

// artifactsKept reports whether go test runs with -artifacts, so that
// t.ArtifactDir() outlives the test.
func artifactsKept() bool {
	f := flag.Lookup("test.artifacts")
	return f != nil && f.Value.String() == "true"
}

// keepFiles copies the regular files of dir into a new folder under
// $TMPDIR/jumpstarter-go/failed named after the test and the time.
func keepFiles(dir, test string) (string, error) {
	name := strings.Map(func(r rune) rune {
		if r == '/' || r == '\\' || r == ' ' || r == ':' {
			return '_'
		}
		return r
	}, test)
	root := filepath.Join(os.TempDir(), "jumpstarter-go", "failed")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", err
	}
	kept, err := os.MkdirTemp(root, name+"-"+time.Now().Format("20060102-150405")+"-")
	if err != nil {
		return "", err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		if err := copyFile(filepath.Join(dir, e.Name()), filepath.Join(kept, e.Name())); err != nil {
			return "", err
		}
	}
	return kept, nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// fileTail returns the last at most n lines of the
// file at path (and at most limit bytes), and how many lines that is.
func fileTail(path string, n, limit int) (string, int, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", 0, err
	}
	off := max(0, st.Size()-int64(limit))
	buf := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil && !errors.Is(err, io.EOF) {
		return "", 0, err
	}
	buf = bytes.TrimRight(buf, "\n")
	if off > 0 { // the first line may be cut: drop it
		if i := bytes.IndexByte(buf, '\n'); i >= 0 {
			buf = buf[i+1:]
		}
	}
	if len(buf) == 0 {
		return "", 0, nil
	}
	lines := bytes.Split(buf, []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n"))), len(lines), nil
}

func indentLines(s string) string { return "    " + strings.ReplaceAll(s, "\n", "\n    ") }

// powerReadTimeout bounds the meter reading at cleanup.
const powerReadTimeout = 5 * time.Second

// recordPower reads the meter, when the device has one, and records the
// reading as properties; a failure is only logged (it is evidence, not a
// test step).
func (d *DUT) recordPower(ctx context.Context) {
	m, ok := driver.Has[driver.PowerMeter](d.s.dev)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, powerReadTimeout)
	defer cancel()
	r, err := m.ReadPower(ctx)
	if err != nil {
		d.log.logf("jumpstarter: reading the power meter of %s: %v", d.Name(), err)
		return
	}
	d.recordReading(r)
}

func (d *DUT) recordReading(r driver.PowerReading) { d.apply(powerProperties(r)) }

// ReadPower reads the DUT's power draw from the board's meter and records
// it as the properties dut.power_watts, dut.power_volts and dut.power_amps (the last
// reading of a test wins; cleanup reads once more while the DUT is still
// on). It fails the test when the device has no meter.
func (d *DUT) ReadPower() driver.PowerReading {
	d.t.Helper()
	ctx, cancel := d.Context()
	defer cancel()
	m, err := driver.As[driver.PowerMeter](d.s.dev)
	if err != nil {
		d.fail(&InfraError{Step: "read power", Device: d.Name(), Err: err}, ctx)
	}
	r, err := m.ReadPower(ctx)
	if err != nil {
		d.fail(&InfraError{Step: "read power", Device: d.Name(), Err: err}, ctx)
	}
	d.recordReading(r)
	return r
}
