#!/usr/bin/env bash
# A Python virtualenv with the official SDK and pytest, made once in .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import videovector, pytest, httpx, standardwebhooks, schemathesis, playwright' 2>/dev/null; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r tests/sdk/requirements.txt
fi
