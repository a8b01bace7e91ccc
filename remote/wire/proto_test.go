package wire_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/jumpstarter-dev/jumpstarter-go/remote/gen/dutv1"
)

// declaration matches the lines of a .proto file that declare something a
// reader needs explained: services, rpcs, messages, enums, oneofs, fields
// and enum values.
var declaration = regexp.MustCompile(`^\s*(service|rpc|message|enum|oneof)\s|^\s*(repeated\s+|optional\s+)?(map<[^>]+>|[\w.]+)\s+\w+\s*=\s*\d+|^\s*[A-Z][A-Z0-9_]*\s*=\s*\d+;`)

// TestEveryProtoDeclarationIsCommented: in proto/, every service, rpc,
// message, enum, oneof, field and enum value has a comment right above it.
func TestEveryProtoDeclarationIsCommented(t *testing.T) {
	files, err := filepath.Glob("../../proto/jumpstarter/dut/v1/*.proto")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		lines := strings.Split(string(b), "\n")
		for i, line := range lines {
			if !declaration.MatchString(line) || strings.HasPrefix(strings.TrimSpace(line), "//") {
				continue
			}
			above := ""
			if i > 0 {
				above = strings.TrimSpace(lines[i-1])
			}
			assert.True(t, strings.HasPrefix(above, "//"), "%s:%d: %q has no comment above it", filepath.Base(f), i+1, strings.TrimSpace(line))
		}
	}
}

// TestGeneratorsMatchTheRuntime: the generators tools/go.mod pins are the
// versions of the runtime go.mod pins, so the committed code is what this
// module's protobuf and connect expect.
func TestGeneratorsMatchTheRuntime(t *testing.T) {
	version := func(gomod, module string) string {
		b, err := os.ReadFile(gomod)
		require.NoError(t, err)
		m := regexp.MustCompile(`(?m)^\s*(?:require\s+)?` + regexp.QuoteMeta(module) + `\s+(v\S+)`).FindStringSubmatch(string(b))
		require.NotNil(t, m, "%s does not require %s", gomod, module)
		return m[1]
	}
	for _, module := range []string{"google.golang.org/protobuf", "connectrpc.com/connect"} {
		assert.Equal(t, version("../../go.mod", module), version("../../tools/go.mod", module), module)
	}
}

// TestEveryDeviceCallCarriesTheLease: every rpc of the services that act
// on a device takes a request whose field 1 is "lease", a LeaseRef, and is
// never served as an HTTP GET (a token must not sit in a URL); the calls
// that need no lease are named here.
func TestEveryDeviceCallCarriesTheLease(t *testing.T) {
	noLease := map[string]bool{
		"jumpstarter.dut.v1.FlashService.HasImage":    true, // the cache is the exporter's, not a device's
		"jumpstarter.dut.v1.FlashService.UploadImage": true,
	}
	files := []protoreflect.FileDescriptor{
		dutv1.File_jumpstarter_dut_v1_power_proto, dutv1.File_jumpstarter_dut_v1_storage_proto,
		dutv1.File_jumpstarter_dut_v1_flash_proto, dutv1.File_jumpstarter_dut_v1_console_proto,
		dutv1.File_jumpstarter_dut_v1_pins_proto, dutv1.File_jumpstarter_dut_v1_meter_proto,
		dutv1.File_jumpstarter_dut_v1_config_proto,
	}
	ref := (&dutv1.LeaseRef{}).ProtoReflect().Descriptor().FullName()
	n := 0
	for _, f := range files {
		for i := range f.Services().Len() {
			svc := f.Services().Get(i)
			for j := range svc.Methods().Len() {
				m := svc.Methods().Get(j)
				name := string(svc.FullName()) + "." + string(m.Name())
				if noLease[name] {
					continue
				}
				n++
				field := m.Input().Fields().ByNumber(1)
				if assert.NotNil(t, field, "%s: its request has no field 1", name) {
					assert.Equal(t, protoreflect.Name("lease"), field.Name(), name)
					assert.Equal(t, ref, field.Message().FullName(), name)
				}
				opts, _ := m.Options().(*descriptorpb.MethodOptions)
				assert.NotEqual(t, descriptorpb.MethodOptions_NO_SIDE_EFFECTS, opts.GetIdempotencyLevel(),
					"%s carries a lease token: it must not be served as an HTTP GET (use IDEMPOTENT)", name)
			}
		}
	}
	assert.Equal(t, 19, n, "the device calls (add a new one to this count)")
}
