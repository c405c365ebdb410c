//! The duration of a Matroska/WebM file whose header states none (browsers' MediaRecorder
//! writes them so): the end of the last block of the last cluster, found in the file's tail.
//!
//! The tail is searched backwards for the Cluster element id; a candidate counts only when it
//! parses as a cluster (a size that fits, a Timecode child first), because the id's four bytes
//! may occur inside frame data.

use std::io::{Read, Seek, SeekFrom};

const CLUSTER_ID: [u8; 4] = [0x1F, 0x43, 0xB6, 0x75];
const TIMECODE_ID: u8 = 0xE7;
const SIMPLE_BLOCK_ID: u8 = 0xA3;
const BLOCK_GROUP_ID: u8 = 0xA0;
const BLOCK_ID: u8 = 0xA1;
// A cut cluster (the file's last one, still being written) counts from what is there.

/// The duration in microseconds, or `None` when the tail holds no cluster that parses.
/// `tick_ns` is the segment's timestamp scale (1,000,000 ns unless the header says otherwise).
pub fn duration_from_last_cluster<R: Read + Seek>(src: &mut R, len: u64, tail_max: u64, tick_ns: u64) -> Option<u64> {
    let start = len.saturating_sub(tail_max);
    src.seek(SeekFrom::Start(start)).ok()?;
    let mut tail = Vec::with_capacity(spool_model::num::sat_usize(len - start));
    src.take(len - start).read_to_end(&mut tail).ok()?;
    let mut at = tail.len();
    while at >= 4 {
        let found = tail[..at].windows(4).rposition(|w| w == CLUSTER_ID)?;
        if let Some(end_ticks) = parse_cluster(&tail[found + 4..]) {
            return Some(spool_model::num::sat_u64(end_ticks as u128 * tick_ns as u128 / 1000));
        }
        at = found + 3;
    }
    None
}

/// An EBML variable-length integer: (value, length). All-ones values (unknown size) are `None`.
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
    let unknown = v == (1u64 << (7 * n)) - 1;
    Some((v, n, unknown))
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

/// The end (in ticks) of a cluster's last block: the cluster's timecode plus the largest block
/// timecode, plus that track's spacing between its last two blocks.
fn parse_cluster(b: &[u8]) -> Option<u64> {
    let (size, n, unknown) = vint(b)?;
    let body = &b[n..];
    let body = if unknown { body } else { body.get(..spool_model::num::sat_usize(size).min(body.len()))? };
    let mut pos = 0;
    let mut cluster_tc: Option<u64> = None;
    // track -> (last, previous) block timecodes
    let mut tracks: Vec<(u64, i64, Option<i64>)> = Vec::new();
    while pos < body.len() {
        let Some((id, idn)) = element_id(&body[pos..]) else { break };
        let Some((esize, sn, eunknown)) = vint(&body[pos + idn..]) else { break };
        if eunknown {
            break;
        }
        let data_at = pos + idn + sn;
        let data_end = data_at.saturating_add(spool_model::num::sat_usize(esize));
        let data = &body[data_at..data_end.min(body.len())];
        match id {
            x if x == TIMECODE_ID as u32 => {
                if esize > 8 || data.len() != spool_model::num::sat_usize(esize) {
                    return None;
                }
                cluster_tc = Some(data.iter().fold(0u64, |a, x| (a << 8) | *x as u64));
            }
            x if x == SIMPLE_BLOCK_ID as u32 => note_block(data, &mut tracks),
            x if x == BLOCK_GROUP_ID as u32 => {
                // The Block child of the group.
                let mut p = 0;
                while p < data.len() {
                    let Some((cid, cn)) = element_id(&data[p..]) else { break };
                    let Some((cs, csn, _)) = vint(&data[p + cn..]) else { break };
                    let d0 = p + cn + csn;
                    let d1 = d0.saturating_add(spool_model::num::sat_usize(cs)).min(data.len());
                    if cid == BLOCK_ID as u32 {
                        note_block(&data[d0..d1], &mut tracks);
                    }
                    p = d1;
                }
            }
            // CRC-32 and Void may come before the Timecode.
            0xBF | 0xEC => {}
            _ if cluster_tc.is_none() => return None,
            _ => {}
        }
        if data_end > body.len() {
            break;
        }
        pos = data_end;
    }
    let tc = cluster_tc?;
    let end = tracks
        .iter()
        .map(|(_, last, prev)| {
            let step = prev.map(|p| (*last - p).max(0)).unwrap_or(0);
            *last + step
        })
        .max()?;
    Some(spool_model::num::non_negative(i64::try_from(tc).unwrap_or(i64::MAX).saturating_add(end)))
}

/// Record a block's (track, relative timecode).
fn note_block(data: &[u8], tracks: &mut Vec<(u64, i64, Option<i64>)>) {
    let Some((track, n, _)) = vint(data) else { return };
    let Some(rel) = data.get(n..n + 2) else { return };
    let rel = i16::from_be_bytes([rel[0], rel[1]]) as i64;
    match tracks.iter_mut().find(|t| t.0 == track) {
        Some(t) => {
            t.2 = Some(t.1);
            t.1 = t.1.max(rel);
        }
        None => tracks.push((track, rel, None)),
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_possible_wrap)] // fixtures it builds
mod tests {
    use super::*;

    fn cluster(tc: u8, blocks: &[(u8, i16)]) -> Vec<u8> {
        let mut body = vec![TIMECODE_ID, 0x81, tc];
        for (track, rel) in blocks {
            let r = rel.to_be_bytes();
            body.extend([SIMPLE_BLOCK_ID, 0x85, 0x80 | track, r[0], r[1], 0x80, 0xAA]);
        }
        let mut out = CLUSTER_ID.to_vec();
        out.push(0x80 | body.len() as u8);
        out.extend(body);
        out
    }

    #[test]
    fn the_last_cluster_gives_the_end_of_its_last_block() {
        let mut file = vec![0u8; 100];
        file.extend(cluster(0, &[(1, 0), (1, 40)]));
        file.extend(cluster(100, &[(1, 0), (2, 0), (1, 40), (2, 20)]));
        let len = file.len() as u64;
        let d = duration_from_last_cluster(&mut std::io::Cursor::new(file), len, 1 << 20, 1_000_000);
        // Cluster at 100 ms, track 1's last block at +40 with a 40 ms step: 180 ms.
        assert_eq!(d, Some(180_000));
    }

    #[test]
    fn a_cluster_id_inside_frame_data_is_not_taken_for_a_cluster() {
        let mut file = cluster(50, &[(1, 0), (1, 10)]);
        file.extend([0x1F, 0x43, 0xB6, 0x75, 0xFF, 0x00, 0x12]);
        let len = file.len() as u64;
        let d = duration_from_last_cluster(&mut std::io::Cursor::new(file), len, 1 << 20, 1_000_000);
        assert_eq!(d, Some(70_000));
    }

    #[test]
    fn garbage_has_no_duration() {
        let file = vec![0x1Fu8, 0x43, 0xB6, 0x75, 0x01, 0x02];
        let len = file.len() as u64;
        assert_eq!(duration_from_last_cluster(&mut std::io::Cursor::new(file), len, 1 << 20, 1_000_000), None);
    }
}
