//! The simulator's seeds as a test (`spool sim --seeds 10000` runs many more in CI): every
//! invariant of `engine-spec/invariants.md` holds for the first 200 seeds, and a seed replays
//! exactly (the same report twice).

#[test]
fn the_first_seeds_hold_every_invariant() {
    let failures: Vec<String> = (0..200).filter_map(|s| spool_core::sim::run(s, 300).err()).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_seed_replays_exactly() {
    let a = spool_core::sim::run(42, 300).unwrap();
    let b = spool_core::sim::run(42, 300).unwrap();
    assert_eq!(a, b);
    assert!(a.events > 0 && a.crashes > 0, "{a:?}");
}
