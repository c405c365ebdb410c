#!/usr/bin/env bash
# Regenerates the small media fixtures in fixtures/media/ from ffmpeg's lavfi sources (testsrc2 for
# video, sine for audio, anoisesrc for the deterministic garbage in corrupt.mp4). Every file is
# tiny (< 60 KB) and 1-2 s long. fixtures/media/tiny.png is hand-made and is never touched.
#
# Usage: scripts/make-media-fixtures.sh        (idempotent: every output is overwritten)
#
# Reproducibility (best effort): all outputs use -bitexact / -fflags +bitexact /
# -flags:{v,a} +bitexact, -map_metadata -1, -threads 1 and a bit-exact swscale, so the
# containers carry no version strings, timestamps or random UIDs (Matroska/WebM segment and track
# UIDs and Ogg serial numbers become fixed under +bitexact). Reruns with the same ffmpeg build on
# the same machine give the same bytes. Not guaranteed across ffmpeg/codec-library versions or CPU
# architectures: libx264 still writes its version+options SEI into the H.264 stream, libvorbis
# and libopus are floating-point encoders, and libvpx/libx264 rate control may change between
# releases. The fixtures are committed; tests use ffprobe as the oracle, not these bytes.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v ffmpeg >/dev/null 2>&1 || ! command -v ffprobe >/dev/null 2>&1; then
  echo "error: ffmpeg/ffprobe not found; install ffmpeg: apt-get install -y ffmpeg" >&2
  exit 1
fi

out=fixtures/media
mkdir -p "$out"

ff() {
  ffmpeg -nostdin -hide_banner -loglevel error -y -filter_threads 1 \
    -sws_flags bicubic+accurate_rnd+full_chroma_int+bitexact "$@"
}
# Muxer/metadata flags shared by every output; per-stream encoder flags are added per file.
MUX=(-map_metadata -1 -fflags +bitexact -threads 1)
VX=(-flags:v +bitexact)
AX=(-flags:a +bitexact)

video() { # video W H FPS SECONDS
  echo "testsrc2=size=$1x$2:rate=$3:duration=$4"
}
tone() { # tone RATE SECONDS  (mono 440 Hz; stereo outputs upmix with -ac 2)
  echo "sine=frequency=440:sample_rate=$1:duration=$2"
}

echo "== generating into $out/ with $(ffmpeg -version | head -1)"

# H.264 + AAC in MP4, moov atom at the END (mov muxer default, no faststart).
ff -f lavfi -i "$(video 176 144 25 2)" -f lavfi -i "$(tone 44100 2)" \
  -c:v libx264 -preset ultrafast -pix_fmt yuv420p -crf 36 -g 25 "${VX[@]}" \
  -c:a aac -b:a 48k -ar 44100 -ac 2 "${AX[@]}" \
  "${MUX[@]}" "$out/h264_aac.mp4"

# H.264 + AAC in QuickTime MOV, moov atom moved to the FRONT.
ff -f lavfi -i "$(video 160 120 30 1)" -f lavfi -i "$(tone 48000 1)" \
  -c:v libx264 -preset ultrafast -pix_fmt yuv420p -crf 30 -g 30 "${VX[@]}" \
  -c:a aac -b:a 32k -ar 48000 -ac 1 "${AX[@]}" \
  -movflags +faststart "${MUX[@]}" "$out/h264_faststart.mov"

# VP9 + Opus in WebM, written to a seekable file: Segment Info carries Duration, Cues present.
ff -f lavfi -i "$(video 160 120 24 2)" -f lavfi -i "$(tone 48000 2)" \
  -c:v libvpx-vp9 -b:v 100k -deadline realtime -cpu-used 8 -row-mt 0 -pix_fmt yuv420p "${VX[@]}" \
  -c:a libopus -b:a 32k -ar 48000 -ac 2 "${AX[@]}" \
  "${MUX[@]}" "$out/vp9_opus.webm"

# VP8 + Opus in WebM written like a browser's MediaRecorder: streamed to a pipe with -live 1, so
# the Segment and Clusters have unknown sizes, there are no Cues and Segment Info has NO Duration
# element (ffprobe still estimates a duration from the packets). Checked below (and by hand with
# ffprobe -show_format): the EBML ID of Duration, 0x4489, must not occur before the first Cluster
# ID 0x1F43B675. The same check in python:
#   d = open('fixtures/media/vp8_live.webm','rb').read(); i = d.find(b'\x1f\x43\xb6\x75')
#   assert i > 0 and b'\x44\x89' not in d[:i]
ff -f lavfi -i "$(video 160 120 15 2)" -f lavfi -i "$(tone 48000 2)" \
  -c:v libvpx -b:v 100k -deadline realtime -cpu-used 8 -pix_fmt yuv420p "${VX[@]}" \
  -c:a libopus -b:a 32k -ar 48000 -ac 2 "${AX[@]}" \
  -live 1 "${MUX[@]}" -f webm pipe:1 >"$out/vp8_live.webm"

# MPEG-4 part 2 + FLAC in Matroska.
ff -f lavfi -i "$(video 160 120 25 2)" -f lavfi -i "$(tone 44100 2)" \
  -c:v mpeg4 -q:v 20 -pix_fmt yuv420p "${VX[@]}" \
  -c:a flac -ar 44100 -ac 2 "${AX[@]}" \
  "${MUX[@]}" "$out/mpeg4_flac.mkv"

# Audio only.
ff -f lavfi -i "$(tone 44100 2)" -c:a libvorbis -q:a 0 -ar 44100 -ac 1 "${AX[@]}" \
  "${MUX[@]}" "$out/vorbis.ogg"
ff -f lavfi -i "$(tone 44100 2)" -c:a libmp3lame -b:a 64k -ar 44100 -ac 2 "${AX[@]}" \
  "${MUX[@]}" "$out/tone.mp3"
ff -f lavfi -i "$(tone 22050 1)" -c:a pcm_s16le -ar 22050 -ac 1 "${AX[@]}" \
  "${MUX[@]}" "$out/tone.wav"
ff -f lavfi -i "$(tone 44100 2)" -c:a flac -ar 44100 -ac 2 "${AX[@]}" \
  "${MUX[@]}" "$out/tone.flac"

# Single frames.
ff -f lavfi -i "$(video 64 48 1 1)" -frames:v 1 -update 1 -c:v mjpeg -q:v 4 -pix_fmt yuvj420p \
  "${VX[@]}" "${MUX[@]}" "$out/still.jpg"
ff -f lavfi -i "$(video 32 24 1 1)" -frames:v 1 -update 1 -c:v png -pix_fmt rgb24 \
  "${VX[@]}" "${MUX[@]}" "$out/still.png"

# corrupt.mp4: exactly 4096 bytes = a valid 32-byte ftyp box (isom), then an mdat box header that
# claims 1 MiB (far past the end of the file), then deterministic noise (anoisesrc with a fixed
# seed, as raw u8). There is no moov, so ffprobe fails with "moov atom not found" (checked below).
tmp=$(mktemp "${TMPDIR:-/tmp}/spool-noise.XXXXXX")
trap 'rm -f "$tmp"' EXIT
ff -f lavfi -i "anoisesrc=seed=4242:sample_rate=8000:amplitude=1:color=white:duration=1" \
  -c:a pcm_u8 -f u8 "$tmp"
{
  printf '\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41'
  printf '\x00\x10\x00\x00mdat'
  head -c 4056 "$tmp"
} >"$out/corrupt.mp4"

# empty.mp4: zero bytes.
: >"$out/empty.mp4"

# ---- self-checks -------------------------------------------------------------------------------
fail() { echo "error: $*" >&2; exit 1; }

# Top-level box types of an ISO-BMFF file, in order (32-bit sizes only; enough for these files).
top_boxes() {
  local f=$1 off=0 len size type
  len=$(stat -c %s "$f")
  while [ "$off" -lt "$len" ]; do
    size=$(od -An -tu4 --endian=big -j "$off" -N 4 "$f" | tr -d ' ')
    type=$(dd if="$f" bs=1 skip=$((off + 4)) count=4 status=none)
    printf '%s ' "$type"
    [ "$size" -ge 8 ] || break
    off=$((off + size))
  done
}
# Does a Matroska file have a Duration element (0x4489) before the first Cluster (0x1F43B675)?
mkv_has_duration() {
  local hex prefix
  hex=" $(head -c 65536 "$1" | od -An -tx1 -v | tr -s ' \n' '  ') "
  [[ $hex == *" 1f 43 b6 75 "* ]] || fail "$1: no Cluster found"
  prefix=${hex%%" 1f 43 b6 75 "*}
  [[ $prefix == *" 44 89 "* ]]
}

boxes=$(top_boxes "$out/h264_aac.mp4")
[[ $boxes == *mdat*moov* ]] || fail "h264_aac.mp4: moov not after mdat ($boxes)"
boxes=$(top_boxes "$out/h264_faststart.mov")
[[ $boxes == *moov*mdat* ]] || fail "h264_faststart.mov: moov not before mdat ($boxes)"
mkv_has_duration "$out/vp9_opus.webm" || fail "vp9_opus.webm: Segment Info lacks Duration"
! mkv_has_duration "$out/vp8_live.webm" || fail "vp8_live.webm: Segment Info has a Duration"
for f in "$out"/*; do
  case ${f##*/} in
    README.md) ;;
    corrupt.mp4 | empty.mp4)
      if ffprobe -v quiet -show_streams "$f" >/dev/null 2>&1; then fail "ffprobe accepts $f"; fi ;;
    *) ffprobe -v error -show_streams "$f" | grep -q '^codec_type=' || fail "ffprobe rejects $f" ;;
  esac
done

echo "== fixtures"
total=0
for f in "$out"/*; do
  [ "${f##*/}" = README.md ] && continue
  size=$(stat -c %s "$f")
  total=$((total + size))
  printf '%8d  %s\n' "$size" "$f"
done
printf '%8d  total\n' "$total"
