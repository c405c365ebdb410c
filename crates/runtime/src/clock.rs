//! Time and randomness enter Spool here and nowhere else.

#![allow(clippy::disallowed_methods)] // the one place of the wall clock and OS randomness
use rand::{Rng, SeedableRng};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
    /// Notified when the clock jumps (a test clock's `advance`); the wall clock never is, and
    /// the timer service re-reads it at least every `TIMER_IDLE_MS` anyway.
    fn jumped(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        None
    }
    /// Move a controllable clock forward (`false`: this clock cannot be moved).
    fn advance_by(&self, _ms: u64) -> bool {
        false
    }
}

/// The wall clock. The only `SystemTime::now()` of the workspace.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(spool_model::num::ms).unwrap_or(0)
    }
}

/// A clock that moves only when told to (and wakes the timer service when it does).
#[derive(Debug)]
pub struct TestClock(AtomicU64, std::sync::Arc<tokio::sync::Notify>);

impl TestClock {
    pub fn new(start_ms: u64) -> Self {
        TestClock(AtomicU64::new(start_ms), Default::default())
    }
    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
        self.1.notify_one();
    }
}

impl Clock for TestClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
    fn jumped(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        Some(self.1.clone())
    }
    fn advance_by(&self, ms: u64) -> bool {
        self.advance(ms);
        true
    }
}

pub trait IdSource: Send + Sync + 'static {
    /// Random bits for the ids of one decision.
    fn entropy(&self) -> u128;
    /// A new secret: `prefix` followed by 43 characters of base64url (256 bits).
    fn secret(&self, prefix: &str) -> String;
}

fn secret_from(bytes: [u8; 32], prefix: &str) -> String {
    use base64::Engine;
    format!("{prefix}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// The operating system's randomness.
#[derive(Debug, Default)]
pub struct SystemIds;

impl IdSource for SystemIds {
    fn entropy(&self) -> u128 {
        rand::rng().random()
    }
    fn secret(&self, prefix: &str) -> String {
        secret_from(rand::rng().random(), prefix)
    }
}

/// Deterministic ids for tests and simulation.
#[derive(Debug)]
pub struct SeededIds(Mutex<rand::rngs::StdRng>);

impl SeededIds {
    pub fn new(seed: u64) -> Self {
        SeededIds(Mutex::new(rand::rngs::StdRng::seed_from_u64(seed)))
    }
}

impl IdSource for SeededIds {
    fn entropy(&self) -> u128 {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).random()
    }
    fn secret(&self, prefix: &str) -> String {
        let bytes: [u8; 32] = self.0.lock().unwrap_or_else(|p| p.into_inner()).random();
        secret_from(bytes, prefix)
    }
}
