//! Property tests of the event codec (proptest): whatever bytes a log hands back, decoding
//! answers an error or an envelope, never a panic; a damaged record of every event kind is
//! refused or decoded, never a panic, and no strict prefix of a record decodes; strings of any
//! content round-trip. Cases per property are set below (`engine-spec/invariants.md` has the
//! totals).

use proptest::prelude::*;
use spool_model::{Envelope, Event, FORMAT_VERSION, IndexId, decode_envelope, encode_envelope};

fn record(event: Event, stream: String) -> Vec<u8> {
    let env = Envelope { seq: 7, stream, at_ms: 1_764_000_000_000, format_version: FORMAT_VERSION, event };
    encode_envelope(&env).expect("encoding plain data")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn arbitrary_bytes_decode_to_an_error_or_an_envelope_never_a_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        let _ = decode_envelope(&bytes);
    }

    #[test]
    fn a_version_1_header_before_arbitrary_bytes_never_panics(body in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut bytes = 1u16.to_le_bytes().to_vec();
        bytes.extend(body);
        let _ = decode_envelope(&bytes);
    }

    #[test]
    fn a_damaged_record_of_any_kind_is_refused_or_decoded_and_a_cut_one_never_decodes(
        which in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
        cut in any::<prop::sample::Index>(),
    ) {
        let samples = Event::samples();
        let bytes = record(samples[which.index(samples.len())].clone(), "auto_x".into());
        let mut damaged = bytes.clone();
        let i = flip.index(damaged.len());
        damaged[i] ^= 1 << bit;
        let _ = decode_envelope(&damaged);
        let n = cut.index(bytes.len());
        prop_assert!(decode_envelope(&bytes[..n]).is_err(), "a record cut to {n} of {} bytes decoded", bytes.len());
    }

    #[test]
    fn strings_of_any_content_round_trip(name in ".*", user_id in ".*", stream in ".{0,64}") {
        let event = Event::IndexCreated { index_id: IndexId(ulid::Ulid::from_parts(1, 2)), name, user_id };
        let bytes = record(event.clone(), stream.clone());
        let back = decode_envelope(&bytes).expect("a record just written decodes");
        prop_assert_eq!(back.event, event);
        prop_assert_eq!(back.stream, stream);
    }
}

/// What broke: a record whose stream length claims 1.76 TB made the decoder allocate it and
/// abort the process. Now it is refused.
#[test]
fn a_record_claiming_a_terabyte_stream_name_is_refused_not_allocated() {
    let mut bytes = 1u16.to_le_bytes().to_vec();
    bytes.push(7); // seq
    bytes.push(253); // a u64 length follows (bincode varint)
    bytes.extend(1_764_000_000_000u64.to_le_bytes());
    bytes.extend(b"stream");
    assert!(decode_envelope(&bytes).is_err());
}
