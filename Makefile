# jumpstarter-go: the two commands a newcomer needs are `make main-job` and `make test`.
SHELL := /bin/bash
GO ?= go
OUT ?= out
GOTESTSUM := $(GO) tool -modfile=tools/go.mod gotestsum
SIM_VERSIONS := 1.0.0 2.0.0
# The QEMU virtual DUT's disk images (testfixtures/qemuimage/build.sh; cached).
QEMU_IMAGES ?= $(OUT)/qemu-images
# The image the main job flashes and the release it must report.
MAIN_RELEASE := 1.0.0

.PHONY: mutants all test lint proto proto-check unit tekton main-job main-job-sim main-job-qemu main-job-remote bench-qemu bench-flash bench-remote images qemu-deps qemu-images bench fuzz clean

all: test

## test: formatting, vet, and every unit and integration test with the race detector, then the
## Tekton module's checks and the DUTlink mutants.
test: lint unit tekton mutants

lint: qemu-deps
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt would change:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	CGO_ENABLED=0 $(GO) build ./...
	CGO_ENABLED=0 $(GO) vet ./dutlink/...
	proto/gen.sh -check

## proto: regenerate the protocol's Go code (remote/gen) from proto/ with the pinned generators
## (protoc-gen-go and protoc-gen-connect-go of tools/go.mod, Debian's protoc 3.21.12: qemu-deps).
proto: qemu-deps
	proto/gen.sh

## proto-check: regenerate into a temporary folder and compare with the committed code; fails
## naming each file that differs (part of lint).
proto-check: qemu-deps
	proto/gen.sh -check

## unit: every test twice in a shuffled order (-count=2 -shuffle=on), so a test that cannot repeat,
## or that depends on another's leftovers, fails here rather than in a user's -count run.
unit: qemu-images
	DUT_QEMU_IMAGES=$(abspath $(QEMU_IMAGES)) $(GO) test -race -count=2 -shuffle=on ./...

## tekton: the Tekton module's checks (tekton/, a module of its own): every YAML strictly decoded
## into Tekton's own types, defaulted and validated, broken copies rejected; the step script run
## with the workspaces as folders against the QEMU virtual DUT, for a passing and failing runs.
tekton: qemu-images
	@unformatted=$$(cd tekton && gofmt -l .); \
	if [ -n "$$unformatted" ]; then echo "gofmt would change:"; echo "$$unformatted"; exit 1; fi
	cd tekton && $(GO) vet ./...
	cd tekton && DUT_QEMU_IMAGES=$(abspath $(QEMU_IMAGES)) $(GO) test -count=1 ./...

## mutants: each DUTlink firmware fix put back, one at a time, in a copy of the working tree: the
## test that guards it must fail (about 90 s; needs git).
mutants: qemu-deps
	$(GO) run ./cmd/mutants

## qemu-deps: the Debian packages the tests need: the QEMU virtual DUT's, libusb for the DUTlink
## driver, bmap-tools and the compressors for the flash engine's checks (as root; a no-op when
## present; otherwise prints the apt-get command to run).
qemu-deps:
	testfixtures/qemuimage/deps.sh

## qemu-images: the QEMU virtual DUT's disk images: releases 1.0.0 and 2.0.0 (raw, .zst, .gz),
## blank, corrupt, panic and hang. Reproducible; ~0.2 s when up to date.
qemu-images: qemu-deps
	testfixtures/qemuimage/build.sh $(QEMU_IMAGES)

## images: the simulated DUT's OS images (several releases, a blank and a corrupt one).
images: $(foreach v,$(SIM_VERSIONS),$(OUT)/images/sim-$(v).img) $(OUT)/images/blank.img $(OUT)/images/corrupt.img

$(OUT)/images/sim-%.img:
	$(GO) run ./testfixtures/cmd/mksimimage -version $* -o $@

$(OUT)/images/blank.img:
	$(GO) run ./testfixtures/cmd/mksimimage -blank 1MiB -o $@

$(OUT)/images/corrupt.img:
	$(GO) run ./testfixtures/cmd/mksimimage -version 9.9.9 -corrupt -o $@

## main-job: the example hardware tests through gotestsum, first against the simulated DUT, then
## against the QEMU virtual DUT (a real boot of the flashed zstd image). Each leaves JUnit XML (with
## per-test properties) and per-test artifacts under $(OUT)/report/<driver>/, and is checked.
main-job: main-job-sim main-job-qemu main-job-remote
	@echo "main job: JUnit in $(OUT)/report/{sim,qemu,remote}/junit.xml, artifacts beside them"

# run-examples DRIVER IMAGE PROPS [PREFIX]: the examples through gotestsum into $(OUT)/report/DRIVER, then
# checked; PREFIX runs before gotestsum (withexporter, for the remote driver).
define run-examples
	rm -rf $(OUT)/report/$(1) && mkdir -p $(OUT)/report/$(1)/artifacts $(OUT)/bin
	$(GO) build -o $(OUT)/bin/ ./cmd/artifacts2attr ./cmd/junitcheck
	DUT_DRIVER=$(1) DUT_REQUIRE=1 DUT_IMAGE=$(abspath $(2)) DUT_EXPECT_RELEASE=$(MAIN_RELEASE) \
	DUT_SIM_DIR=$(abspath $(OUT)/sim) DUT_QEMU_DIR=$(abspath $(OUT)/qemu) DUT_LOCK_DIR=$(abspath $(OUT)/locks) \
	$(4) $(GOTESTSUM) --format testname --junitfile $(OUT)/report/$(1)/junit.xml \
	  --junitfile-testsuite-name relative --junitfile-testcase-classname relative \
	  --raw-command -- $(OUT)/bin/artifacts2attr -- \
	  $(GO) test -json -count=1 -timeout 20m -artifacts -outputdir $(abspath $(OUT)/report/$(1)/artifacts) ./examples/...
	$(OUT)/bin/junitcheck -min-passed 4 -props $(3) -files console.log,steps.jsonl $(OUT)/report/$(1)/junit.xml
endef

comma := ,
EVIDENCE := dut.driver,dut.name,dut.image,dut.image_sha256,dut.flash_bytes,dut.flash_mapped_bytes,dut.flash_seconds,dut.flash_mbps,dut.flash_verified,dut.boot_seconds,dut.console_log,artifacts

## main-job-sim: the examples against the simulated DUT (about 2 s). The examples import the
## DUTlink driver, whose USB transport builds against libusb (cgo): qemu-deps installs it.
main-job-sim: qemu-deps images
	$(call run-examples,sim,$(OUT)/images/sim-$(MAIN_RELEASE).img,$(EVIDENCE)$(comma)dut.serial)

## main-job-qemu: the examples against the QEMU virtual DUT, flashing the zstd image (about 20 s),
## then the end-to-end tests of e2e/qemu (flash A then B, reboot, power cycle, blank, panic, hang,
## killed QEMU; about 40 s) into $(OUT)/report/qemu-e2e.
main-job-qemu: qemu-images
	$(call run-examples,qemu,$(QEMU_IMAGES)/dut-$(MAIN_RELEASE).img.zst,$(EVIDENCE))
	rm -rf $(OUT)/report/qemu-e2e && mkdir -p $(OUT)/report/qemu-e2e/artifacts
	DUT_QEMU_IMAGES=$(abspath $(QEMU_IMAGES)) \
	$(GOTESTSUM) --format testname --junitfile $(OUT)/report/qemu-e2e/junit.xml \
	  --junitfile-testsuite-name relative --junitfile-testcase-classname relative \
	  --raw-command -- $(OUT)/bin/artifacts2attr -- \
	  $(GO) test -json -count=1 -timeout 20m -artifacts -outputdir $(abspath $(OUT)/report/qemu-e2e/artifacts) ./e2e/qemu/...
	$(OUT)/bin/junitcheck -min-passed 5 -props-for '^TestFlashABootBRebootCycle$$' -props $(EVIDENCE) \
	  -files console.log,steps.jsonl $(OUT)/report/qemu-e2e/junit.xml

## main-job-remote: the examples, then the end-to-end tests of e2e/qemu, through the remote driver
## (DUT_DRIVER=remote) against QEMU virtual DUTs that a dut serve in another process exports on a unix
## socket (about 1 min): an image travels to the exporter's cache once and is flashed there; every
## lease ends with the DUT off.
main-job-remote: qemu-images
	mkdir -p $(OUT)/bin
	$(GO) build -o $(OUT)/bin/dut ./cmd/dut
	$(GO) build -o $(OUT)/bin/withexporter ./testfixtures/cmd/withexporter
	$(call run-examples,remote,$(QEMU_IMAGES)/dut-$(MAIN_RELEASE).img.zst,$(EVIDENCE)$(comma)dut.exporter,$(OUT)/bin/withexporter -dut $(OUT)/bin/dut -- --driver qemu --)
	rm -rf $(OUT)/report/remote-e2e $(OUT)/remote-qemu && mkdir -p $(OUT)/report/remote-e2e/artifacts $(OUT)/remote-qemu
	DUT_DRIVER=remote DUT_QEMU_DEVICES=4 DUT_QEMU_DIR=$(abspath $(OUT)/remote-qemu) DUT_QEMU_IMAGES=$(abspath $(QEMU_IMAGES)) \
	$(OUT)/bin/withexporter -dut $(OUT)/bin/dut -- --driver qemu --lock-dir $(abspath $(OUT)/remote-qemu/locks) -- \
	$(GOTESTSUM) --format testname --junitfile $(OUT)/report/remote-e2e/junit.xml \
	  --junitfile-testsuite-name relative --junitfile-testcase-classname relative \
	  --raw-command -- $(OUT)/bin/artifacts2attr -- \
	  $(GO) test -json -count=1 -timeout 20m -artifacts -outputdir $(abspath $(OUT)/report/remote-e2e/artifacts) ./e2e/qemu/...
	$(OUT)/bin/junitcheck -min-passed 5 -props-for '^TestFlashABootBRebootCycle$$' -props $(EVIDENCE)$(comma)dut.exporter \
	  -files console.log,steps.jsonl $(OUT)/report/remote-e2e/junit.xml

## bench-qemu: harness overhead against a bare zstd + QEMU + expect boot of the same image, and
## 1/2/4 QEMU virtual DUTs in parallel: time and memory per DUT (about 1 min).
bench-qemu: qemu-images
	$(GO) run ./cmd/bootbench -images $(QEMU_IMAGES)

## bench-flash: the flash goals: the engine's first flash (hash deferred; verified, and write-only), and with the
## hash cached, against dd bs=4M oflag=direct conv=fsync and bmaptool copy on 1 GiB dense raw, dense zst, sparse
## raw+bmap and sparse xz+bmap images, on a file and a loop device with direct I/O (losetup --direct-io=on), the
## page cache dropped before each of 5 interleaved runs: medians, spread, peak RSS (decoder included). Needs root,
## bmap-tools, zstd, xz; about 30 min on this project's 2-core machine. FLASHBENCH_ARGS="-cases all" runs every
## case, "-quick" iterates at 256 MiB.
bench-flash:
	$(GO) run ./cmd/flashbench -size 1GiB -runs 5 -loop $(FLASHBENCH_ARGS)

## bench-remote: the remote path against the local one, side by side: a 1 GiB dense zst and a 1 GiB sparse raw+bmap
## image flashed through an exporter over loopback TCP+TLS with token auth (first: hash, upload, flash; second: cached)
## and through a proxy adding 25 ms each way, against flash.Write on the same sim disk file; console Expect throughput
## and Run("true") round trip; lease round trip; the peak RSS of an exporter process with 4 leases and a 1 GiB flash.
## QEMU-free (sim devices); needs zstd and bmap-tools, root to drop the page cache; about 2 min on this project's
## 2-core machine. REMOTEBENCH_ARGS="-quick" iterates at 256 MiB.
bench-remote:
	$(GO) run ./cmd/remotebench $(REMOTEBENCH_ARGS)

## bench: the console engine: cost per byte from 1 MiB to 64 MiB and for long lines read byte by byte;
## string Expect against a plain streaming reference matcher (ns/byte side by side); Run with 1-byte
## reads; the peak heap of a 100 MB flood; and the wake-up after a 1 MiB burst (p50/p90, ours and the
## reference's, over 100 bursts).
bench:
	$(GO) test -run '^$$' -bench 'ExpectThroughput|LongLines|StringExpect|RunByteReads|MarkerSearchByteByByte|FloodMemory' -benchmem -benchtime 3x ./harness/console/
	$(GO) test -run '^$$' -bench 'WakeAfterBurst' -benchtime 100x ./harness/console/

## fuzz: a short fuzz run of every fuzz target.
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzNoByteLostBetweenExpects -fuzztime 30s ./harness/console/
	$(GO) test -run '^$$' -fuzz FuzzRead -fuzztime 30s ./testfixtures/simimage/
	$(GO) test -run '^$$' -fuzz FuzzBmap -fuzztime 30s ./harness/flash/
	$(GO) test -run '^$$' -fuzz FuzzDetect -fuzztime 30s ./harness/flash/

clean:
	rm -rf $(OUT)
