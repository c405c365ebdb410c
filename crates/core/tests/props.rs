//! Property tests of snapshot decoding (proptest): arbitrary bytes, and a real snapshot damaged
//! or cut anywhere, decode to `None` (the state is then rebuilt from the log) or to a state,
//! never a panic; an intact snapshot decodes to the state it was written from.

use proptest::prelude::*;
use spool_core::{Command, Ctx, State, decide, evolve};
use spool_model::{Envelope, FORMAT_VERSION};

/// A state with an index, a connector and an import automation's worth of events.
fn some_state() -> State {
    let mut st = State::default();
    let cmds =
        [r#"{"CreateIndex":{"name":"library","user_id":"u"}}"#, r#"{"CreateIndex":{"name":"second","user_id":"v"}}"#];
    for (n, json) in cmds.iter().enumerate() {
        let cmd: Command = serde_json::from_str(json).unwrap();
        let mut ctx = Ctx::new(1_764_000_000_000 + n as u64, n as u128 + 1);
        let d = decide(&st, &cmd, &mut ctx).unwrap();
        for s in &d.streams {
            for e in &s.events {
                let env = Envelope {
                    seq: st.applied_seq + 1,
                    stream: s.stream.clone(),
                    at_ms: ctx.now_ms,
                    format_version: FORMAT_VERSION,
                    event: e.clone(),
                };
                evolve(&mut st, &env);
            }
        }
    }
    st
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn arbitrary_bytes_are_no_snapshot_or_a_state_never_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = State::from_snapshot(&bytes);
    }

    #[test]
    fn a_damaged_snapshot_is_refused_or_decoded_and_an_intact_one_round_trips(
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
        cut in any::<prop::sample::Index>(),
    ) {
        let st = some_state();
        let bytes = st.to_snapshot();
        let back = State::from_snapshot(&bytes);
        prop_assert_eq!(back.as_ref(), Some(&st));
        let mut damaged = bytes.clone();
        let i = flip.index(damaged.len());
        damaged[i] ^= 1 << bit;
        let _ = State::from_snapshot(&damaged);
        let n = cut.index(bytes.len());
        prop_assert!(State::from_snapshot(&bytes[..n]).is_none(), "a snapshot cut to {n} bytes decoded");
    }
}

/// What broke: a snapshot with a damaged byte made the decoder claim terabytes and abort the
/// process. A damaged snapshot now fails its checksum and is ignored (the log is replayed).
#[test]
fn a_snapshot_with_a_damaged_byte_is_ignored_not_decoded() {
    let bytes = some_state().to_snapshot();
    for i in 8..bytes.len() {
        let mut damaged = bytes.clone();
        damaged[i] ^= 0x80;
        assert!(State::from_snapshot(&damaged).is_none(), "byte {i} damaged and still decoded");
    }
}
