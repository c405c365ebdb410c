//! Property tests of globs (proptest): any pattern a user sends is accepted or refused with
//! an error, never a panic, and an accepted one matches any key without a panic, also the
//! pathological shapes (`*a*a*a…b` against `aaaa…`) that make backtracking matchers take
//! exponential time; globset compiles to an automaton, so the match is linear in the key
//! (the tests assert that it ends, never how fast).

use proptest::prelude::*;
use spool_storage::{check_pattern, pattern_matches};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn any_pattern_is_accepted_or_refused_never_a_panic(pattern in ".{0,64}") {
        let _ = check_pattern(&pattern);
    }

    #[test]
    fn glob_syntax_soup_matches_or_is_refused(
        pattern in "[*?\\[\\]{},!a-c/\\\\.-]{0,24}",
        key in "[a-c/.]{0,64}",
    ) {
        match check_pattern(&pattern) {
            Ok(()) => { pattern_matches(&pattern, &key).expect("an accepted pattern compiles"); }
            Err(_) => prop_assert!(pattern_matches(&pattern, &key).is_err()),
        }
    }

    #[test]
    fn pathological_stars_end(stars in 1usize..40, len in 0usize..4000) {
        let pattern = format!("{}b", "*a".repeat(stars));
        let key = "a".repeat(len);
        prop_assert!(!pattern_matches(&pattern, &key).unwrap());
    }
}
