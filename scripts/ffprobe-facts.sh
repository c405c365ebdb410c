#!/usr/bin/env bash
# ffprobe's view of one media file as JSON (format + streams). A thin wrapper for humans.
# Usage: scripts/ffprobe-facts.sh FILE
set -euo pipefail
if [ "$#" -ne 1 ]; then
  echo "usage: $0 FILE" >&2
  exit 2
fi
if ! command -v ffprobe >/dev/null 2>&1; then
  echo "error: ffprobe not found; install ffmpeg: apt-get install -y ffmpeg" >&2
  exit 1
fi
exec ffprobe -v error -print_format json -show_format -show_streams "$1"
