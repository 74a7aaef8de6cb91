#!/usr/bin/env bash
# Build the real livekit-server (a pinned release, from the Go module proxy) into a
# project-local, git-ignored cache, or reuse the one already there.  Prints the path.
#
#   scripts/livekit-server.sh                              # build if needed, print the path
#   LIVEKIT_SERVER_VERSION=v1.13.5 scripts/livekit-server.sh
#
# Why v1.13.5: it is the newest release `go install` can build from the module
# proxy.  v1.13.6 .. v1.13.11 carry `replace` directives pointing at LiveKit's
# forks of pion (github.com/livekit/{webrtc-pion,dtls,ice} "-warp.N" versions),
# and the proxy answers 403 "not available" for every one of those fork versions,
# so even a wrapper module that copies the replace directives cannot build them.
set -euo pipefail

VERSION=${LIVEKIT_SERVER_VERSION:-v1.13.5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${LIVEKIT_SERVER_CACHE:-$ROOT/.cache/livekit-server}
DIR="$CACHE/$VERSION"
BIN="$DIR/livekit-server"

if [ -x "$BIN" ] && "$BIN" --version >/dev/null 2>&1; then
    echo "$BIN"
    exit 0
fi

if ! command -v go >/dev/null; then
    echo "livekit-server.sh: 'go' is not installed (Go >= 1.26 builds livekit-server $VERSION)" >&2
    exit 3
fi

start=$(date +%s)
echo "livekit-server.sh: building github.com/livekit/livekit-server $VERSION (first time only)" >&2
mkdir -p "$DIR"
tmp=$(mktemp -d "$DIR/build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
GOBIN="$tmp" GOFLAGS=-mod=mod go install -trimpath \
    "github.com/livekit/livekit-server/cmd/server@$VERSION" >&2
mv "$tmp/server" "$BIN"
echo "livekit-server.sh: built $("$BIN" --version) in $(( $(date +%s) - start )) s" >&2
echo "$BIN"
