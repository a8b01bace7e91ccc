#!/usr/bin/env bash
# gen.sh - generate the Go code of the protocol (proto/**/*.proto) with the pinned generators:
# protoc-gen-go and protoc-gen-connect-go at the versions tools/go.mod pins, run by Debian's
# protoc 3.21.12 (testfixtures/qemuimage/deps.sh installs it, with libprotobuf-dev's well-known
# types). The same inputs give the same bytes.
#
# Usage: proto/gen.sh          regenerate remote/gen (make proto)
#        proto/gen.sh -check   regenerate into a temporary folder and compare with remote/gen:
#                              exits 1 naming every generated file that differs, is missing
#                              or is stale (make proto-check)
#
# Only generated files (*.pb.go, *.connect.go) are written, removed or compared; the hand-written
# package docs (doc.go) beside them stay.
set -euo pipefail
cd "$(dirname "$0")/.."

want_protoc="libprotoc 3.21.12"
module=github.com/jumpstarter-dev/jumpstarter-go
committed=remote/gen
wkt=/usr/include # google/protobuf/*.proto (Debian's libprotobuf-dev)
check=0
[[ ${1:-} == -check ]] && check=1

command -v protoc >/dev/null || { echo "gen.sh: no protoc: run testfixtures/qemuimage/deps.sh (as root)" >&2; exit 1; }
got=$(protoc --version)
[[ $got == "$want_protoc" ]] || { echo "gen.sh: protoc says \"$got\", want \"$want_protoc\" (the committed code was generated with it)" >&2; exit 1; }
[[ -f $wkt/google/protobuf/timestamp.proto ]] || { echo "gen.sh: no $wkt/google/protobuf/timestamp.proto: install libprotobuf-dev (testfixtures/qemuimage/deps.sh)" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go build -modfile=tools/go.mod -o "$tmp/bin/" \
  google.golang.org/protobuf/cmd/protoc-gen-go connectrpc.com/connect/cmd/protoc-gen-connect-go

mapfile -t files < <(cd proto && find . -name '*.proto' -printf '%P\n' | LC_ALL=C sort)
mkdir -p "$tmp/out"
(cd proto && protoc -I . -I "$wkt" \
  --plugin=protoc-gen-go="$tmp/bin/protoc-gen-go" --go_out="$tmp/out" --go_opt=module=$module \
  --plugin=protoc-gen-connect-go="$tmp/bin/protoc-gen-connect-go" --connect-go_out="$tmp/out" --connect-go_opt=module=$module \
  "${files[@]}")
fresh=$tmp/out/$committed
[[ -d $fresh ]] || { echo "gen.sh: nothing generated under $committed (check the go_package options)" >&2; exit 1; }

# generated DIR lists DIR's generated files, relative to DIR, sorted.
generated() { (cd "$1" 2>/dev/null && find . \( -name '*.pb.go' -o -name '*.connect.go' \) -printf '%P\n' | LC_ALL=C sort); }

if [[ $check == 1 ]]; then
  differ=()
  while read -r f; do
    if [[ ! -f $committed/$f ]]; then differ+=("$committed/$f (missing: not committed)")
    elif ! cmp -s "$fresh/$f" "$committed/$f"; then differ+=("$committed/$f (differs)"); fi
  done < <(generated "$fresh")
  while read -r f; do
    [[ -f $fresh/$f ]] || differ+=("$committed/$f (stale: no .proto generates it)")
  done < <(generated "$committed")
  if [[ ${#differ[@]} -gt 0 ]]; then
    echo "proto-check: the committed generated code is not what proto/ generates; run make proto. Files:" >&2
    printf '  %s\n' "${differ[@]}" >&2
    exit 1
  fi
  echo "proto-check: $(generated "$fresh" | wc -l) generated files match proto/"
  exit 0
fi

while read -r f; do rm -f "$committed/$f"; done < <(generated "$committed")
(cd "$fresh" && find . -type f -printf '%P\n') | while read -r f; do
  mkdir -p "$(dirname "$committed/$f")"
  cp "$fresh/$f" "$committed/$f"
done
echo "proto: generated $(generated "$committed" | wc -l) files under $committed"
