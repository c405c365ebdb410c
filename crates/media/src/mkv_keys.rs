//! Keyframe times of a Matroska/WebM file's first video track, as MP4's come from its
//! sync-sample table: from the Cues (the index a seekable muxer writes, found through the
//! SeekHead or among the Segment's first children), and, when there are none (a file written
//! to a pipe, a browser's recording), from the clusters' block headers. Bounded: only element
//! headers, the Info, Tracks and Cues elements (at most [`CUES_BYTES_MAX`]) and each block's
//! first bytes are read; at most [`SAMPLE_TABLE_ENTRIES_MAX`] cue points or blocks, and at most
//! four times as many element headers of any kind.

use crate::boundaries::SAMPLE_TABLE_ENTRIES_MAX;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

const EBML: u32 = 0x1A45_DFA3;
const SEGMENT: u32 = 0x1853_8067;
const SEEK_HEAD: u32 = 0x114D_9B74;
const SEEK: u32 = 0x4DBB;
const SEEK_ID: u32 = 0x53AB;
const SEEK_POSITION: u32 = 0x53AC;
const INFO: u32 = 0x1549_A966;
const TIMECODE_SCALE: u32 = 0x2A_D7B1;
const TRACKS: u32 = 0x1654_AE6B;
const TRACK_ENTRY: u32 = 0xAE;
const TRACK_NUMBER: u32 = 0xD7;
const TRACK_TYPE: u32 = 0x83;
const CUES: u32 = 0x1C53_BB6B;
const CUE_POINT: u32 = 0xBB;
const CUE_TIME: u32 = 0xB3;
const CUE_TRACK_POSITIONS: u32 = 0xB7;
const CUE_TRACK: u32 = 0xF7;
const CLUSTER: u32 = 0x1F43_B675;
const TIMECODE: u32 = 0xE7;
const SIMPLE_BLOCK: u32 = 0xA3;
const BLOCK_GROUP: u32 = 0xA0;
const BLOCK: u32 = 0xA1;
const REFERENCE_BLOCK: u32 = 0xFB;

/// The largest Cues element read (a cue point is ~20 bytes: about three million of them).
pub const CUES_BYTES_MAX: u64 = 64 << 20;
/// The largest Info, Tracks or SeekHead element read.
const HEAD_BYTES_MAX: u64 = 1 << 20;
/// The largest BlockGroup read whole (its children are walked by their headers beyond it).
const GROUP_HEADERS_MAX: usize = 64;
/// Element headers read at most in one file (every element walked counts, not only blocks: a
/// file of tiny elements cannot make the walk long).
const ELEMENTS_MAX: u32 = 4 * SAMPLE_TABLE_ENTRIES_MAX;

/// The file and how many element headers were read of it.
struct Walk {
    file: std::fs::File,
    headers: u32,
}

impl Walk {
    /// An element's header at `at` (one small read: no buffer to throw away on each seek);
    /// `None` past [`ELEMENTS_MAX`] headers.
    fn header(&mut self, at: u64) -> Option<(u32, Option<u64>, u64)> {
        self.headers += 1;
        if self.headers > ELEMENTS_MAX {
            return None;
        }
        header(&mut self.file, at)
    }
}

/// An element's header at `at`: (id, size — `None` when unknown —, header length).
fn header<R: Read + Seek>(r: &mut R, at: u64) -> Option<(u32, Option<u64>, u64)> {
    r.seek(SeekFrom::Start(at)).ok()?;
    let mut b = [0u8; 12];
    let mut got = 0;
    while got < b.len() {
        match r.read(&mut b[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(_) => return None,
        }
    }
    let (id, n) = element_id(&b[..got])?;
    let (size, m, unknown) = vint(&b[n..got])?;
    Some((id, (!unknown).then_some(size), (n + m) as u64))
}

/// An EBML variable-length integer: (value, length, all ones — an unknown size).
fn vint(b: &[u8]) -> Option<(u64, usize, bool)> {
    let first = *b.first()?;
    let n = first.leading_zeros() as usize + 1;
    if n > 8 || b.len() < n {
        return None;
    }
    let mut v = (first as u64) & (0xFF >> n);
    for x in &b[1..n] {
        v = (v << 8) | *x as u64;
    }
    Some((v, n, v == (1u64 << (7 * n)) - 1))
}

/// An element id (1–4 bytes, marker kept): (id, length).
fn element_id(b: &[u8]) -> Option<(u32, usize)> {
    let first = *b.first()?;
    let n = first.leading_zeros() as usize + 1;
    if n > 4 || b.len() < n {
        return None;
    }
    Some((b[..n].iter().fold(0u32, |a, x| (a << 8) | *x as u32), n))
}

fn uint(b: &[u8]) -> u64 {
    b.iter().take(8).fold(0u64, |a, x| (a << 8) | *x as u64)
}

/// The children of an element's body held in memory: (id, body).
fn children(mut b: &[u8]) -> impl Iterator<Item = (u32, &[u8])> {
    std::iter::from_fn(move || {
        let (id, n) = element_id(b)?;
        let (size, m, unknown) = vint(&b[n..])?;
        let start = n + m;
        let size = if unknown { None } else { usize::try_from(size).ok() };
        let end = start.checked_add(size?)?;
        let body = b.get(start..end)?;
        b = &b[end..];
        Some((id, body))
    })
}

fn read_body<R: Read + Seek>(r: &mut R, at: u64, size: u64, max: u64) -> Option<Vec<u8>> {
    if size > max {
        return None;
    }
    r.seek(SeekFrom::Start(at)).ok()?;
    let mut out = Vec::with_capacity(spool_model::num::sat_usize(size));
    r.take(size).read_to_end(&mut out).ok()?;
    (out.len() as u64 == size).then_some(out)
}

/// Keyframe times (µs) of the first video track of a Matroska/WebM file, in order; `None` when
/// the file is not Matroska, has no video track, or neither Cues nor clusters could be read.
pub fn mkv_keyframes(path: &Path) -> Option<Vec<u64>> {
    let file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    let mut w = Walk { file, headers: 0 };
    let (id, size, hdr) = w.header(0)?;
    if id != EBML {
        return None;
    }
    let (id, seg_size, seg_hdr) = w.header(hdr + size?)?;
    if id != SEGMENT {
        return None;
    }
    let seg = hdr + size? + seg_hdr;
    let seg_end = seg_size.map_or(len, |s| seg.saturating_add(s).min(len));
    let (mut scale_ns, mut video, mut cues_at, mut first_cluster) =
        (1_000_000u64, None::<u64>, None::<u64>, None::<u64>);
    let mut at = seg;
    while at < seg_end {
        let (id, size, hdr) = w.header(at)?;
        let body = at + hdr;
        match id {
            CLUSTER => {
                first_cluster = Some(at);
                break;
            }
            CUES => cues_at = Some(at),
            SEEK_HEAD | INFO | TRACKS => {
                let b = read_body(&mut w.file, body, size?, HEAD_BYTES_MAX)?;
                for (cid, c) in children(&b) {
                    match (id, cid) {
                        (SEEK_HEAD, SEEK) => {
                            let (mut target, mut pos) = (None, None);
                            for (k, v) in children(c) {
                                match k {
                                    SEEK_ID => target = Some(uint(v)),
                                    SEEK_POSITION => pos = Some(uint(v)),
                                    _ => {}
                                }
                            }
                            if let (Some(t), Some(p)) = (target, pos)
                                && t == u64::from(CUES)
                            {
                                cues_at = Some(seg.saturating_add(p));
                            }
                        }
                        (INFO, TIMECODE_SCALE) => scale_ns = uint(c).max(1),
                        (TRACKS, TRACK_ENTRY) if video.is_none() => {
                            let (mut number, mut kind) = (None, None);
                            for (k, v) in children(c) {
                                match k {
                                    TRACK_NUMBER => number = Some(uint(v)),
                                    TRACK_TYPE => kind = Some(uint(v)),
                                    _ => {}
                                }
                            }
                            if kind == Some(1) {
                                video = number;
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        // An element of unknown size other than a cluster: nothing after it can be found.
        at = body.checked_add(size?)?;
    }
    let video = video?;
    let to_us = |ticks: u64| spool_model::num::sat_u64(ticks as u128 * scale_ns as u128 / 1000);
    if let Some(at) = cues_at.filter(|a| *a < len)
        && let Some(times) = from_cues(&mut w, at, video)
        && !times.is_empty()
    {
        return Some(times.into_iter().map(to_us).collect());
    }
    // None found is no answer: the caller falls back to the audio's silences.
    let times = from_clusters(&mut w, first_cluster?, seg_end, video).filter(|t| !t.is_empty())?;
    Some(times.into_iter().map(to_us).collect())
}

/// The cue times (ticks) of `video`'s cue points, sorted, distinct.
fn from_cues(w: &mut Walk, at: u64, video: u64) -> Option<Vec<u64>> {
    let (id, size, hdr) = w.header(at)?;
    if id != CUES {
        return None;
    }
    let b = read_body(&mut w.file, at + hdr, size?, CUES_BYTES_MAX)?;
    let mut out = Vec::new();
    for (id, point) in children(&b) {
        if id != CUE_POINT {
            continue;
        }
        let (mut time, mut ours) = (None, false);
        for (k, v) in children(point) {
            match k {
                CUE_TIME => time = Some(uint(v)),
                CUE_TRACK_POSITIONS => ours |= children(v).any(|(t, n)| t == CUE_TRACK && uint(n) == video),
                _ => {}
            }
        }
        if let (Some(t), true) = (time, ours) {
            out.push(t);
        }
        if out.len() >= SAMPLE_TABLE_ENTRIES_MAX as usize {
            break;
        }
    }
    out.sort_unstable();
    out.dedup();
    Some(out)
}

/// The times (ticks) of `video`'s keyframe blocks, walking the clusters from `at` by their
/// elements' headers: a SimpleBlock with its keyframe flag, a BlockGroup without a
/// ReferenceBlock. Clusters of unknown size end where the next cluster begins.
fn from_clusters(w: &mut Walk, mut at: u64, end: u64, video: u64) -> Option<Vec<u64>> {
    let mut out = Vec::new();
    let mut blocks = 0u32;
    while at < end && blocks < SAMPLE_TABLE_ENTRIES_MAX {
        let Some((id, size, hdr)) = w.header(at) else { break };
        if id != CLUSTER {
            // Cues, Tags and the like between clusters: stepped over.
            match size {
                Some(s) => {
                    at = at + hdr + s;
                    continue;
                }
                None => break,
            }
        }
        let body = at + hdr;
        let cluster_end = size.map_or(end, |s| (body + s).min(end));
        let mut tc = 0u64;
        let mut q = body;
        while q < cluster_end && blocks < SAMPLE_TABLE_ENTRIES_MAX {
            let Some((cid, csize, chdr)) = w.header(q) else { break };
            if cid == CLUSTER {
                break;
            }
            let Some(csize) = csize else { return (!out.is_empty()).then_some(out) };
            let cbody = q + chdr;
            match cid {
                TIMECODE => tc = uint(&read_body(&mut w.file, cbody, csize, 8)?),
                SIMPLE_BLOCK => {
                    blocks += 1;
                    let head = read_body(&mut w.file, cbody, csize.min(12), 12)?;
                    if let Some((track, rel, flags)) = block_head(&head)
                        && track == video
                        && flags & 0x80 != 0
                    {
                        out.push(tc.saturating_add_signed(rel.into()));
                    }
                }
                BLOCK_GROUP => {
                    blocks += 1;
                    let (mut head, mut referenced, mut g) = (None, false, cbody);
                    let mut seen = 0;
                    while g < cbody + csize && seen < GROUP_HEADERS_MAX {
                        seen += 1;
                        let Some((gid, Some(gsize), ghdr)) = w.header(g) else { break };
                        match gid {
                            BLOCK => head = read_body(&mut w.file, g + ghdr, gsize.min(12), 12),
                            REFERENCE_BLOCK => referenced = true,
                            _ => {}
                        }
                        g += ghdr + gsize;
                    }
                    if let Some((track, rel, _)) = head.as_deref().and_then(block_head)
                        && track == video
                        && !referenced
                    {
                        out.push(tc.saturating_add_signed(rel.into()));
                    }
                }
                _ => {}
            }
            q = cbody + csize;
        }
        at = q.max(body);
        if size.is_some() {
            at = cluster_end;
        }
    }
    out.sort_unstable();
    out.dedup();
    Some(out)
}

/// A block's track number, relative timecode and flags.
fn block_head(b: &[u8]) -> Option<(u64, i16, u8)> {
    let (track, n, _) = vint(b)?;
    let rest = b.get(n..n + 3)?;
    Some((track, i16::from_be_bytes([rest[0], rest[1]]), rest[2]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A regression (review): a file of tiny elements walked one header at a time, each with a
    /// 16 KiB buffer refill, made the walk unbounded in practice. Every header counts now.
    #[test]
    fn a_file_of_tiny_elements_ends_within_the_header_budget() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tiny.mkv");
        // EBML header, a Segment of unknown size, Tracks with one video track, then one
        // cluster of unknown size full of 2-byte Void elements.
        let mut b =
            vec![0x1A, 0x45, 0xDF, 0xA3, 0x80, 0x18, 0x53, 0x80, 0x67, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
        b.extend([0x16, 0x54, 0xAE, 0x6B, 0x88, 0xAE, 0x86, 0xD7, 0x81, 0x01, 0x83, 0x81, 0x01]);
        b.extend([0x1F, 0x43, 0xB6, 0x75, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
        b.extend(std::iter::repeat_n([0xEC, 0x80], 200_000).flatten());
        std::fs::write(&p, b).unwrap();
        // No keyframe in it: no answer (the caller falls back to silences), and it ends.
        assert_eq!(mkv_keyframes(&p), None);
    }

    #[test]
    fn a_file_that_is_not_matroska_has_no_keyframes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.mkv");
        std::fs::write(&p, b"\x1A\x45\xDF\xA3\x80garbage").unwrap();
        assert_eq!(mkv_keyframes(&p), None);
        std::fs::write(&p, b"RIFF....WAVE").unwrap();
        assert_eq!(mkv_keyframes(&p), None);
        std::fs::write(&p, b"").unwrap();
        assert_eq!(mkv_keyframes(&p), None);
    }
}
