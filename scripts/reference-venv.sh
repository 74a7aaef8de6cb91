#!/usr/bin/env bash
# The official livekit-agents worker (the conformance and benchmark peer) in a venv
# of its own, so that it does not pin our `livekit` SDK down to its version.
# Makes the venv on first use (project-local, git-ignored) and prints its python.
#
#   scripts/reference-venv.sh        # -> .cache/venv-reference/bin/python
set -euo pipefail

VERSION=${LIVEKIT_AGENTS_VERSION:-1.8.9}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${REFERENCE_VENV:-$ROOT/.cache/venv-reference}
PY=${PYTHON:-python3}

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "
import importlib.metadata, sys
sys.exit(importlib.metadata.version('livekit-agents') != '$VERSION')" 2>/dev/null; then
    echo "$VENV/bin/python"
    exit 0
fi
echo "reference-venv.sh: installing livekit-agents==$VERSION into $VENV" >&2
rm -rf "$VENV"
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
"$VENV/bin/python" -m pip install --quiet "livekit-agents==$VERSION" >&2
echo "$VENV/bin/python"
