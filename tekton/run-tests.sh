#!/usr/bin/env bash
# run-tests.sh: the script of the go-hardware-tests Task's step, kept
# byte for byte equal to the Task's `script` (tekton/script_test.go checks it;
# `go generate` in tekton/ copies it into the YAML).
#
# It runs `go test` on the user's test module through gotestsum and leaves in
# $ARTIFACTS_DIR: the JUnit file (normalised by junitnorm: schema-valid, with
# each testcase's properties and the console tail of failed hardware tests),
# the test2json stream (test2json.jsonl) and each test's artifacts
# (_artifacts/<n>/). It writes the counts of passed, failed and skipped
# testcases and the JUnit file's path to the result files, and exits non-zero
# after all of that when a test failed or the run broke.
#
# It reads everything from the environment, which the Task fills from its
# params, so the same script runs outside Tekton (tekton/script_test.go):
#
#   SOURCE_DIR      folder of the Go module with the tests (required)
#   PACKAGES        packages, separated by spaces (default ./...)
#   RUN             -run regexp (default: all tests)
#   IMAGES_DIR      folder IMAGE is relative to
#   IMAGE           OS image to flash, handed to the tests as DUT_IMAGE
#   GO_TEST_FLAGS   more go test flags, separated by spaces (no quoting)
#   TEST_TIMEOUT    go test -timeout (default 30m)
#   TEST_FORMAT     gotestsum --format (default testname)
#   ARTIFACTS_DIR   where the reports go (required)
#   JUNIT_FILE      JUnit file name, relative to ARTIFACTS_DIR (default junit.xml)
#   CASE_PROPERTIES system-out or element (see junitnorm)
#   CACHE_DIR       when set, GOCACHE and GOMODCACHE live below it
#   RESULT_PASSED, RESULT_FAILED, RESULT_SKIPPED, RESULT_JUNIT
#                   files to write the results to (each optional)
#   DUT_DRIVER, DUT_NAME, DUT_TAGS, DUT_REQUIRE, DUT_LOCK_DIR, ...
#                   passed to the tests as they are
#
# Arguments NAME=VALUE are exported to the tests (the Task's extra-env param).
set -uo pipefail

log() { printf 'run-tests: %s\n' "$*" >&2; }

# put VALUE FILE: write a result file, if the caller asked for it.
put() {
	if [ -n "$2" ]; then
		printf '%s' "$1" >"$2" || log "cannot write result file $2"
	fi
}

# fail MESSAGE: stop before any test ran, with zero counts as results.
fail() {
	log "$*"
	put 0 "${RESULT_PASSED:-}"
	put 0 "${RESULT_FAILED:-}"
	put 0 "${RESULT_SKIPPED:-}"
	put "" "${RESULT_JUNIT:-}"
	exit 2
}

[ -n "${SOURCE_DIR:-}" ] || fail "SOURCE_DIR is not set"
[ -n "${ARTIFACTS_DIR:-}" ] || fail "ARTIFACTS_DIR is not set"
[ -d "$SOURCE_DIR" ] || fail "source folder $SOURCE_DIR does not exist (check the source workspace and the context-dir param)"
[ -f "$SOURCE_DIR/go.mod" ] || log "warning: $SOURCE_DIR has no go.mod; go test looks for one in the folders above"

for kv in "$@"; do
	case "$kv" in
	[A-Za-z_]*=*)
		name=${kv%%=*}
		case "$name" in
		*[!A-Za-z0-9_]*) fail "extra-env: $kv is not NAME=VALUE" ;;
		esac
		export "$kv"
		log "extra env: $name"
		;;
	*) fail "extra-env: $kv is not NAME=VALUE" ;;
	esac
done

if [ -n "${IMAGE:-}" ]; then
	case "$IMAGE" in
	/*) DUT_IMAGE=$IMAGE ;;
	*)
		[ -n "${IMAGES_DIR:-}" ] || fail "image $IMAGE is given but the images workspace is not bound"
		DUT_IMAGE=${IMAGES_DIR%/}/$IMAGE
		;;
	esac
	export DUT_IMAGE
	# The harness fails every test that flashes when the file is missing, in
	# the JUnit file; say it here too, where the log starts.
	[ -f "$DUT_IMAGE" ] || log "warning: image $DUT_IMAGE does not exist"
fi

if [ -n "${CACHE_DIR:-}" ]; then
	export GOCACHE=$CACHE_DIR/go-build GOMODCACHE=$CACHE_DIR/mod
	mkdir -p "$GOCACHE" "$GOMODCACHE" || fail "cannot create the Go caches in $CACHE_DIR"
fi

junit_rel=${JUNIT_FILE:-junit.xml}
case "$junit_rel" in
/* | ../* | */../* | ..) fail "JUNIT_FILE $junit_rel must be a path inside the artifacts folder" ;;
esac
mkdir -p "$ARTIFACTS_DIR" || fail "cannot create $ARTIFACTS_DIR"
ARTIFACTS_DIR=$(cd "$ARTIFACTS_DIR" && pwd -P) || fail "cannot resolve $ARTIFACTS_DIR"
junit=$ARTIFACTS_DIR/$junit_rel
stream=$ARTIFACTS_DIR/test2json.jsonl
mkdir -p "$(dirname "$junit")" || fail "cannot create the folder of $junit"
# A report left by an earlier run in a reused workspace must not pass for
# this run's.
rm -f "$junit" "$stream"
work=$(mktemp -d) || fail "mktemp failed"
trap 'rm -rf "$work"' EXIT
raw=$work/gotestsum-junit.xml

read -r -a packages <<<"${PACKAGES:-./...}"
read -r -a extra <<<"${GO_TEST_FLAGS:-}"
run=()
[ -z "${RUN:-}" ] || run=(-run "$RUN")
[ "${#packages[@]}" -gt 0 ] || packages=(./...)

log "go: $(go version 2>&1)"
log "source: $SOURCE_DIR, packages: ${packages[*]}${RUN:+, -run $RUN}"
log "DUT: driver=${DUT_DRIVER:-any} name=${DUT_NAME:-any} tags=${DUT_TAGS:-none} image=${DUT_IMAGE:-none} require=${DUT_REQUIRE:-0} locks=${DUT_LOCK_DIR:-default}"
log "artifacts: $ARTIFACTS_DIR"

cd "$SOURCE_DIR" || fail "cannot enter $SOURCE_DIR"
gotestsum --format "${TEST_FORMAT:-testname}" \
	--junitfile "$raw" --jsonfile "$stream" \
	--junitfile-testsuite-name relative --junitfile-testcase-classname relative \
	--raw-command -- \
	artifacts2attr -- \
	go test -json -count=1 -timeout "${TEST_TIMEOUT:-30m}" \
	-artifacts -outputdir "$ARTIFACTS_DIR" \
	"${run[@]}" "${extra[@]}" "${packages[@]}"
rc=$?

if [ ! -s "$raw" ]; then
	log "gotestsum wrote no JUnit file (exit code $rc); see the log above"
	put 0 "${RESULT_PASSED:-}"
	put 0 "${RESULT_FAILED:-}"
	put 0 "${RESULT_SKIPPED:-}"
	put "" "${RESULT_JUNIT:-}"
	[ "$rc" -ne 0 ] || rc=1
	exit "$rc"
fi

counts=$work/counts
mkdir -p "$counts"
if ! junitnorm -in "$raw" -out "$junit" -stream "$stream" \
	-case-properties "${CASE_PROPERTIES:-system-out}" \
	-relative-base "$ARTIFACTS_DIR" \
	-passed "$counts/passed" -failed "$counts/failed" -skipped "$counts/skipped"; then
	log "junitnorm failed; keeping gotestsum's own JUnit file as $junit"
	cp "$raw" "$junit"
	printf '?' >"$counts/passed"
	printf '?' >"$counts/failed"
	printf '?' >"$counts/skipped"
	[ "$rc" -ne 0 ] || rc=1
fi
passed=$(cat "$counts/passed")
failed=$(cat "$counts/failed")
skipped=$(cat "$counts/skipped")
put "$passed" "${RESULT_PASSED:-}"
put "$failed" "${RESULT_FAILED:-}"
put "$skipped" "${RESULT_SKIPPED:-}"
put "$junit_rel" "${RESULT_JUNIT:-}"

log "$passed passed, $failed failed, $skipped skipped; JUnit: $junit; test2json stream: $stream; artifacts: $ARTIFACTS_DIR/_artifacts"
if [ "$failed" != 0 ] && [ "$rc" -eq 0 ]; then
	rc=1
fi
if [ "$rc" -ne 0 ]; then
	log "failing the step (exit code $rc)"
	exit "$rc"
fi
if [ "$passed" = 0 ]; then
	log "warning: no test passed (all skipped, or none selected)"
fi
exit 0
