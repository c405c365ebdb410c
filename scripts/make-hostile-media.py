#!/usr/bin/env python3
"""Writes the "hostile" media fixtures in fixtures/media/hostile/: real, small files of a
container whose header CLAIMS a duration far longer than the file's bytes can hold (the attack
a probe/duration/budget check has to survive). Each one is made by patching the header of one
of the fixtures in fixtures/media/ (see scripts/make-media-fixtures.sh), after parsing the
container properly: MP4/MOV boxes, EBML elements, Ogg pages (CRC recomputed), the MP3
Xing/Info frame (LAME tag CRC recomputed), RIFF chunks and FLAC metadata blocks.

Usage: scripts/make-hostile-media.py      (python3, standard library only)

Deterministic and idempotent: every output is rebuilt from the committed fixtures and
overwritten; the inputs are never modified. Only if tone.mp3 had no Xing/Info frame would
ffmpeg be run (to re-encode it with -write_xing 1). Prints one line per file: name, size,
and the duration its header now claims. fixtures/media/hostile/README.md describes the files.
"""
import os
import pathlib
import struct
import subprocess
import sys
import tempfile
import zlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
SRC = ROOT / "fixtures" / "media"
OUT = SRC / "hostile"
MAX_SIZE = 100 * 1024

YEAR = 365.25 * 86400


class Bad(Exception):
    """An input fixture does not have the structure this script expects."""


def human(seconds):
    if seconds >= YEAR:
        return f"{seconds / YEAR:.4g} years"
    if seconds >= 86400:
        return f"{seconds / 86400:.4g} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.4g} hours"
    return f"{seconds:.4g} s"


def write(name, data, claim):
    """Writes OUT/name atomically and prints its line. claim: (seconds, how) where how says
    which header fields make that claim."""
    if len(data) >= MAX_SIZE:
        raise Bad(f"{name}: {len(data)} bytes, over the {MAX_SIZE}-byte budget")
    path = OUT / name
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    seconds, how = claim
    print(f"{name:24} {len(data):6d} bytes  claims {seconds:.10g} s (~{human(seconds)}): {how}")


# ---- ISO BMFF (MP4 / QuickTime) -------------------------------------------------------------

# Boxes whose payload is nothing but child boxes, on the paths this script edits.
MP4_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"dinf"}


class Box:
    def __init__(self, typ, payload=None, children=None):
        self.typ = typ
        self.payload = payload  # bytes, for a leaf
        self.children = children  # list of Box, for a container

    def find(self, typ):
        return [c for c in self.children if c.typ == typ]

    def walk(self):
        yield self
        for c in self.children or ():
            yield from c.walk()

    def body(self):
        if self.children is None:
            return self.payload
        return b"".join(c.serialize() for c in self.children)

    def serialize(self):
        body = self.body()
        if len(body) + 8 <= 0xFFFFFFFF:
            return struct.pack(">I4s", len(body) + 8, self.typ) + body
        return struct.pack(">I4sQ", 1, self.typ, len(body) + 16) + body


def parse_boxes(data, start, end, descend):
    """Returns [(offset, size, Box)] for the boxes in data[start:end]."""
    out = []
    off = start
    while off < end:
        if end - off < 8:
            raise Bad(f"truncated box header at {off}")
        size, typ = struct.unpack_from(">I4s", data, off)
        hdr = 8
        if size == 1:
            size = struct.unpack_from(">Q", data, off + 8)[0]
            hdr = 16
        elif size == 0:
            size = end - off
        if size < hdr or off + size > end:
            raise Bad(f"box {typ!r} at {off}: bad size {size}")
        if descend and typ in MP4_CONTAINERS:
            kids = [b for _, _, b in parse_boxes(data, off + hdr, off + size, True)]
            out.append((off, size, Box(typ, children=kids)))
        else:
            out.append((off, size, Box(typ, payload=data[off + hdr:off + size])))
        off += size
    return out


class Mp4:
    def __init__(self, path):
        self.data = path.read_bytes()
        self.top = parse_boxes(self.data, 0, len(self.data), True)
        moovs = [(o, n, b) for o, n, b in self.top if b.typ == b"moov"]
        mdats = [o for o, _, b in self.top if b.typ == b"mdat"]
        if len(moovs) != 1 or not mdats:
            raise Bad(f"{path.name}: want one moov and an mdat")
        self.moov_off, moov_size, self.moov = moovs[0]
        if len(self.moov.serialize()) != moov_size:
            raise Bad(f"{path.name}: moov does not re-serialize to its own size")
        self.moov_before_mdat = self.moov_off < min(mdats)
        # Offsets at or past the old moov's end move when the moov changes size.
        self.moov_end = self.moov_off + moov_size

    def traks(self):
        return self.moov.find(b"trak")

    def handler(self, trak):
        (mdia,) = trak.find(b"mdia")
        (hdlr,) = mdia.find(b"hdlr")
        return hdlr.payload[8:12]  # version/flags, pre_defined, handler_type

    def serialize(self):
        old_len = self.moov_end - self.moov_off
        new_len = len(self.moov.serialize())
        delta = new_len - old_len
        if delta and self.moov_before_mdat:
            # mdat moves by delta: fix every chunk offset that points past the old moov.
            for box in self.moov.walk():
                if box.typ not in (b"stco", b"co64"):
                    continue
                wide = box.typ == b"co64"
                fmt = ">Q" if wide else ">I"
                width = 8 if wide else 4
                (count,) = struct.unpack_from(">I", box.payload, 4)
                p = bytearray(box.payload)
                for i in range(count):
                    at = 8 + i * width
                    (v,) = struct.unpack_from(fmt, p, at)
                    if v >= self.moov_end:
                        v += delta
                        if not wide and v > 0xFFFFFFFF:
                            raise Bad("stco offset overflows 32 bits")
                    struct.pack_into(fmt, p, at, v)
                box.payload = bytes(p)
        return b"".join(
            (b.serialize() if b is self.moov else self.data[o:o + n]) for o, n, b in self.top
        )


def set_header_time(box, timescale, duration, version):
    """Rewrites an mvhd or mdhd: timescale and duration set, converted to `version` (0: 32-bit
    times, 1: 64-bit times). Everything after the duration field is kept."""
    p = box.payload
    v = p[0]
    if v == 0:
        ctime, mtime, _, _ = struct.unpack_from(">IIII", p, 4)
        rest = p[20:]
    elif v == 1:
        ctime, mtime, _, _ = struct.unpack_from(">QQIQ", p, 4)
        rest = p[32:]
    else:
        raise Bad(f"{box.typ!r} version {v}")
    flags = p[1:4]
    if version == 0:
        if duration > 0xFFFFFFFF or ctime > 0xFFFFFFFF or mtime > 0xFFFFFFFF:
            raise Bad("value does not fit a version-0 header")
        head = struct.pack(">IIII", ctime, mtime, timescale, duration)
    else:
        head = struct.pack(">QQIQ", ctime, mtime, timescale, duration)
    box.payload = bytes([version]) + flags + head + rest


def mp4_huge_headers(src, name, duration, version):
    m = Mp4(SRC / src)
    (mvhd,) = m.moov.find(b"mvhd")
    set_header_time(mvhd, 1, duration, version)
    n = 0
    for trak in m.traks():
        (mdia,) = trak.find(b"mdia")
        (mdhd,) = mdia.find(b"mdhd")
        set_header_time(mdhd, 1, duration, version)
        n += 1
    data = m.serialize()
    check_mp4(data)
    how = (f"mvhd + {n} mdhd version {version}, timescale 1, duration {duration:#x}"
           + (" (chunk offsets shifted)" if m.moov_before_mdat and version == 1 else ""))
    write(name, data, (duration / 1, how))


def mp4_stts_overflow(src, name):
    m = Mp4(SRC / src)
    videos = [t for t in m.traks() if m.handler(t) == b"vide"]
    if len(videos) != 1:
        raise Bad(f"{src}: want exactly one video track")
    (mdia,) = videos[0].find(b"mdia")
    (mdhd,) = mdia.find(b"mdhd")
    p = mdhd.payload
    timescale = struct.unpack_from(">I", p, 12 if p[0] == 0 else 20)[0]
    (stts,) = [b for b in videos[0].walk() if b.typ == b"stts"]
    stts.payload = stts.payload[:4] + struct.pack(">III", 1, 0xFFFFFFFF, 0xFFFFFFFF)
    data = m.serialize()
    check_mp4(data)
    ticks = 0xFFFFFFFF * 0xFFFFFFFF
    write(name, data, (ticks / timescale,
                       f"video stts = 1 entry (count 0xffffffff, delta 0xffffffff) at mdhd "
                       f"timescale {timescale}; mvhd/mdhd durations untouched"))


def check_mp4(data):
    """Re-parses the output: box sizes consistent all the way down."""
    parse_boxes(data, 0, len(data), True)


# ---- EBML (Matroska / WebM) -----------------------------------------------------------------

EBML_HEADER = 0x1A45DFA3
SEGMENT = 0x18538067
INFO = 0x1549A966
DURATION = 0x4489
TIMESTAMP_SCALE = 0x2AD7B1
CRC32 = 0xBF
CLUSTER = 0x1F43B675


def vint(data, off, keep_marker):
    first = data[off]
    if first == 0:
        raise Bad(f"bad EBML vint at {off}")
    length = 1
    while not first & (0x80 >> (length - 1)):
        length += 1
    value = first if keep_marker else first & (0xFF >> length)
    for b in data[off + 1:off + length]:
        value = (value << 8) | b
    unknown = not keep_marker and value == (1 << (7 * length)) - 1
    return value, length, unknown


def ebml_children(data, start, end):
    """Yields (id, element offset, data offset, data size or None if unknown)."""
    off = start
    while off < end:
        eid, ilen, _ = vint(data, off, True)
        size, slen, unknown = vint(data, off + ilen, False)
        dstart = off + ilen + slen
        if unknown:
            yield eid, off, dstart, None
            return
        if dstart + size > end:
            raise Bad(f"EBML element {eid:#x} at {off} overruns its parent")
        yield eid, off, dstart, size
        off = dstart + size


def mkv_huge_duration(src, name):
    data = bytearray((SRC / src).read_bytes())
    top = list(ebml_children(data, 0, len(data)))
    if not top or top[0][0] != EBML_HEADER:
        raise Bad(f"{src}: no EBML header")
    segs = [e for e in top if e[0] == SEGMENT]
    if not segs:
        raise Bad(f"{src}: no Segment")
    _, _, sstart, ssize = segs[0]
    send = len(data) if ssize is None else sstart + ssize
    info = None
    for eid, _, dstart, size in ebml_children(data, sstart, send):
        if eid == INFO:
            info = (dstart, size)
            break
        if eid == CLUSTER or size is None:
            break
    if info is None:
        raise Bad(f"{src}: no Segment Info before the first Cluster")
    istart, isize = info
    iend = istart + isize
    duration = crc = None
    scale = 1_000_000
    for eid, eoff, dstart, size in ebml_children(data, istart, iend):
        if eid == DURATION:
            duration = (dstart, size)
        elif eid == TIMESTAMP_SCALE:
            scale = int.from_bytes(data[dstart:dstart + size], "big")
        elif eid == CRC32:
            if eoff != istart or size != 4:
                raise Bad(f"{src}: CRC-32 element not first in Info")
            crc = dstart
    if duration is None:
        raise Bad(f"{src}: Segment Info has no Duration")
    dstart, dsize = duration
    if crc is not None:
        stored = struct.unpack_from("<I", data, crc)[0]
        if stored != zlib.crc32(data[crc + 4:iend]):
            raise Bad(f"{src}: Info CRC-32 does not verify before patching")
    if dsize == 8:
        value = 1e18
        struct.pack_into(">d", data, dstart, value)
    elif dsize == 4:
        value = struct.unpack(">f", struct.pack(">I", 0x7F7FFFFF))[0]  # largest finite f32
        struct.pack_into(">f", data, dstart, value)
    else:
        raise Bad(f"{src}: Duration is {dsize} bytes wide")
    if crc is not None:
        struct.pack_into("<I", data, crc, zlib.crc32(data[crc + 4:iend]))
    how = (f"Segment Info Duration = {value:g} ({dsize}-byte float) x TimestampScale {scale} ns"
           + ("; Info CRC-32 recomputed" if crc is not None else ""))
    write(name, bytes(data), (value * scale / 1e9, how))


# ---- Ogg ------------------------------------------------------------------------------------

def _ogg_table():
    table = []
    for i in range(256):
        r = i << 24
        for _ in range(8):
            r = ((r << 1) ^ 0x04C11DB7) if r & 0x80000000 else (r << 1)
        table.append(r & 0xFFFFFFFF)
    return table


OGG_TABLE = _ogg_table()


def ogg_crc(page):
    """Ogg's CRC-32: polynomial 0x04c11db7, init 0, no reflection, no final xor; computed with
    the page's CRC field zeroed."""
    crc = 0
    for b in page:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ OGG_TABLE[((crc >> 24) ^ b) & 0xFF]
    return crc


def ogg_pages(data):
    """Yields (offset, length) of each page; checks every page's CRC."""
    off = 0
    while off < len(data):
        if data[off:off + 4] != b"OggS" or data[off + 4] != 0:
            raise Bad(f"no Ogg page at {off}")
        nseg = data[off + 26]
        body = sum(data[off + 27:off + 27 + nseg])
        length = 27 + nseg + body
        page = bytearray(data[off:off + length])
        stored = struct.unpack_from("<I", page, 22)[0]
        page[22:26] = b"\0\0\0\0"
        if ogg_crc(page) != stored:
            raise Bad(f"Ogg page at {off}: CRC does not verify")
        yield off, length
        off += length


def ogg_huge_granule(src, name):
    data = bytearray((SRC / src).read_bytes())
    pages = list(ogg_pages(data))
    first, _ = pages[0]
    nseg = data[first + 26]
    packet = data[first + 27 + nseg:]
    if packet[:7] != b"\x01vorbis":
        raise Bad(f"{src}: first packet is not a Vorbis identification header")
    rate = struct.unpack_from("<I", packet, 12)[0]
    off, length = pages[-1]
    granule = 1 << 62
    struct.pack_into("<Q", data, off + 6, granule)
    data[off + 22:off + 26] = b"\0\0\0\0"
    struct.pack_into("<I", data, off + 22, ogg_crc(data[off:off + length]))
    list(ogg_pages(data))  # re-verify every CRC
    write(name, bytes(data), (granule / rate,
                              f"last of {len(pages)} pages: granule 2^62 at Vorbis {rate} Hz "
                              f"(page CRC recomputed)"))


# ---- MP3 ------------------------------------------------------------------------------------

MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def crc16_lame(data):
    """CRC-16/ARC (reflected 0x8005, init 0): the LAME tag's own CRC over the frame's first 190
    bytes."""
    crc = 0
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def after_id3(data):
    """The offset after a leading ID3v2 tag (its footer too), or 0 without one."""
    if data[:3] != b"ID3":
        return 0
    size = 0
    for b in data[6:10]:
        size = (size << 7) | (b & 0x7F)
    return 10 + size + (10 if data[5] & 0x10 else 0)


def find_xing(data):
    """Returns (frame offset, Xing/Info offset, samples per frame, sample rate) or None."""
    off = after_id3(data)
    while off < len(data) and data[off] == 0:  # tolerate padding after the tag
        off += 1
    (hdr,) = struct.unpack_from(">I", data, off)
    if hdr >> 21 != 0x7FF:
        raise Bad(f"no MPEG audio frame sync at {off}")
    version = (hdr >> 19) & 3  # 3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5
    layer = (hdr >> 17) & 3  # 1: Layer III
    if version == 1 or layer != 1:
        raise Bad("first frame is not MPEG Layer III")
    protected = not (hdr >> 16) & 1
    rate = MP3_RATES[version][(hdr >> 10) & 3]
    mono = (hdr >> 6) & 3 == 3
    if version == 3:
        side = 17 if mono else 32
        spf = 1152
    else:
        side = 9 if mono else 17
        spf = 576
    at = off + 4 + (2 if protected else 0) + side
    if data[at:at + 4] not in (b"Xing", b"Info"):
        return None
    return off, at, spf, rate


def mp3_source():
    data = (SRC / "tone.mp3").read_bytes()
    if find_xing(data):
        return data, "tone.mp3"
    # Re-encode the way scripts/make-media-fixtures.sh makes tone.mp3, forcing the Xing frame.
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp) / "tone.mp3"
        subprocess.run(
            ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
             "-filter_threads", "1", "-f", "lavfi",
             "-i", "sine=frequency=440:sample_rate=44100:duration=2",
             "-c:a", "libmp3lame", "-b:a", "64k", "-ar", "44100", "-ac", "2",
             "-flags:a", "+bitexact", "-map_metadata", "-1", "-fflags", "+bitexact",
             "-threads", "1", "-write_xing", "1", str(out)],
            check=True)
        return out.read_bytes(), "tone.mp3 re-encoded with -write_xing 1"


def mp3_huge_frames(name):
    src, origin = mp3_source()
    found = find_xing(src)
    if not found:
        raise Bad("no Xing/Info frame even with -write_xing 1")
    frame, at, spf, rate = found
    data = bytearray(src)
    tag = bytes(data[at:at + 4]).decode()
    (flags,) = struct.unpack_from(">I", data, at + 4)
    if not flags & 1:
        raise Bad(f"{tag} header has no frame-count field")
    frames = 0xFFFFFFFF
    struct.pack_into(">I", data, at + 8, frames)
    # The LAME extension follows the Xing fields; its last 2 bytes are a CRC of the frame's
    # first 190 bytes. Recompute it when it verified on the input.
    lame = at + 8 + (4 if flags & 1 else 0) + (4 if flags & 2 else 0) \
        + (100 if flags & 4 else 0) + (4 if flags & 8 else 0)
    crc_note = "no LAME tag"
    if lame + 36 <= len(data) and lame + 36 - frame == 192:
        (stored,) = struct.unpack_from(">H", src, lame + 34)
        if crc16_lame(src[frame:frame + 190]) == stored:
            struct.pack_into(">H", data, lame + 34, crc16_lame(data[frame:frame + 190]))
            crc_note = "LAME tag CRC recomputed"
        else:
            crc_note = "LAME tag CRC did not verify on input; left as is"
    write(name, bytes(data), (frames * spf / rate,
                              f"{origin}: {tag} frame count 0xffffffff x {spf} samples at "
                              f"{rate} Hz ({crc_note})"))


# ---- WAV ------------------------------------------------------------------------------------

def wav_huge_data(src, name, keep=400, rate=8000):
    data = (SRC / src).read_bytes()
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise Bad(f"{src}: not RIFF/WAVE")
    end = min(len(data), 8 + struct.unpack_from("<I", data, 4)[0])
    off = 12
    out = bytearray(b"RIFF\xff\xff\xff\xffWAVE")
    block_align = None
    while off + 8 <= end:
        cid, size = struct.unpack_from("<4sI", data, off)
        body = bytearray(data[off + 8:off + 8 + size])
        if cid == b"fmt ":
            channels = struct.unpack_from("<H", body, 2)[0]
            bits = struct.unpack_from("<H", body, 14)[0]
            block_align = channels * ((bits + 7) // 8)
            struct.pack_into("<IIH", body, 4, rate, rate * block_align, block_align)
        elif cid == b"data":
            if block_align is None:
                raise Bad(f"{src}: data before fmt")
            kept = keep - keep % block_align
            out += b"data" + struct.pack("<I", 0xFFFFFFFF) + body[:kept]
            break  # the data chunk is the last thing written; nothing after it survives
        out += cid + struct.pack("<I", size) + body + (b"\0" if size & 1 else b"")
        off += 8 + size + (size & 1)
    else:
        raise Bad(f"{src}: no data chunk")
    write(name, bytes(out), (0xFFFFFFFF / (rate * block_align),
                             f"RIFF and data sizes 0xffffffff, fmt {rate} Hz x {block_align}-byte "
                             f"blocks = {rate * block_align} B/s; {kept} data bytes kept"))


# ---- FLAC -----------------------------------------------------------------------------------

def flac_streaminfo(src, name, total, rate=None):
    data = bytearray((SRC / src).read_bytes())
    off = after_id3(data)
    if data[off:off + 4] != b"fLaC":
        raise Bad(f"{src}: no fLaC marker")
    off += 4
    header = data[off]
    length = int.from_bytes(data[off + 1:off + 4], "big")
    if header & 0x7F != 0 or length != 34:
        raise Bad(f"{src}: first metadata block is not a 34-byte STREAMINFO")
    at = off + 4 + 10  # sample rate (20) | channels-1 (3) | bps-1 (5) | total samples (36)
    (word,) = struct.unpack_from(">Q", data, at)
    old_rate = word >> 44
    new_rate = old_rate if rate is None else rate
    if not 0 < new_rate < (1 << 20) or not 0 <= total < (1 << 36):
        raise Bad("value out of range")
    word = (new_rate << 44) | (word & (0xFF << 36)) | total
    struct.pack_into(">Q", data, at, word)
    how = f"STREAMINFO total samples 2^36-1 at {new_rate} Hz"
    if rate is not None:
        how += f" (was {old_rate} Hz; frame headers still say {old_rate})"
    write(name, bytes(data), (total / new_rate, how + "; MD5 left as is"))


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    u64 = (1 << 64) - 1
    mp4_huge_headers("h264_aac.mp4", "mvhd_huge.mp4", u64, 1)
    mp4_huge_headers("h264_aac.mp4", "mvhd_u32.mp4", 0xFFFFFFFF, 0)
    mp4_huge_headers("h264_faststart.mov", "mdhd_huge.mov", u64, 1)
    mp4_stts_overflow("h264_aac.mp4", "stts_overflow.mp4")
    mkv_huge_duration("mpeg4_flac.mkv", "duration_huge.mkv")
    mkv_huge_duration("vp9_opus.webm", "duration_huge.webm")
    ogg_huge_granule("vorbis.ogg", "granule_huge.ogg")
    mp3_huge_frames("xing_huge.mp3")
    wav_huge_data("tone.wav", "data_huge.wav")
    flac_streaminfo("tone.flac", "total_samples_huge.flac", (1 << 36) - 1)
    flac_streaminfo("tone.flac", "rate_1hz.flac", (1 << 36) - 1, rate=1)


if __name__ == "__main__":
    try:
        main()
    except Bad as e:
        sys.exit(f"error: {e}")
