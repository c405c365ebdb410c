//! Per-API-key rate limits (contract-search.md §2.14).
//!
//! A request counts in its [`Category`] when that category has a limit, else in `default` when
//! `default` has one, else it is not limited. Windows are fixed and aligned to the server's clock
//! (the caller passes `now_ms`, so the test clock moves them): a minute window is
//! `now_ms / 60_000`, an hour window `now_ms / 3_600_000`. Counters live in this node's memory.
//!
//! Limits come from `SPOOL_RATE_LIMITS` ([`parse_env`]) or the config file's `[rate_limits]`
//! table (converted by the caller to pairs for [`from_pairs`]).

use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};

const MINUTE_MS: u64 = 60_000;
const HOUR_MS: u64 = 3_600_000;

/// Largest `N` accepted in `N/minute` or `N/hour`.
pub const LIMIT_MAX: u64 = 1_000_000_000;

/// Most (key, category) counters a [`Limiter`] keeps.
pub const COUNTERS_MAX: usize = 100_000;

/// What a request is counted as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Category {
    Default,
    Search,
    Upload,
    Processing,
}

impl Category {
    pub const ALL: [Category; 4] = [Category::Default, Category::Search, Category::Upload, Category::Processing];

    pub fn as_str(self) -> &'static str {
        match self {
            Category::Default => "default",
            Category::Search => "search",
            Category::Upload => "upload",
            Category::Processing => "processing",
        }
    }

    /// The category named `s` (ASCII case ignored).
    pub fn parse(s: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.as_str().eq_ignore_ascii_case(s))
    }
}

/// The non-empty segments of a path, without a query string or an `/api/v2` prefix.
fn segments(path: &str) -> Vec<&str> {
    let path = path.split('?').next().unwrap_or("");
    let path = match path.strip_prefix("/api/v2") {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
        _ => path,
    };
    path.split('/').filter(|s| !s.is_empty()).collect()
}

/// The category of a request; `path` is the part after `/api/v2` (e.g. `/indexes/abc/search`).
///
/// - search: `POST /indexes/{id}/search|image-search|multimodal-search`, anything under
///   `/search/`, `/playground/search`, `/workflow/search`, `/workflow/search/page`;
/// - upload: any path ending in `/upload` (`/videos/upload`, `/workflow/upload`) except for
///   `GET`/`HEAD`;
/// - processing: `POST /prompt-runs/execute`, `/videos/{id}/process`, `/workflow/process`,
///   `/workflow/define`;
/// - everything else: default.
pub fn category_of(method: &str, path: &str) -> Category {
    let segs = segments(path);
    let post = method.eq_ignore_ascii_case("POST");
    let reads = method.eq_ignore_ascii_case("GET") || method.eq_ignore_ascii_case("HEAD");
    match segs.as_slice() {
        ["indexes", _, "search" | "image-search" | "multimodal-search"] if post => Category::Search,
        ["search", ..] | ["playground", "search"] | ["workflow", "search"] | ["workflow", "search", "page"] => {
            Category::Search
        }
        ["prompt-runs", "execute"] | ["videos", _, "process"] | ["workflow", "process" | "define"] if post => {
            Category::Processing
        }
        [.., "upload"] if !reads => Category::Upload,
        _ => Category::Default,
    }
}

/// Whether a request to `path` (after `/api/v2`) is counted at all: the rate-limit status and
/// refresh routes, `/auth/processing-activity` and `/openapi.json` are not.
pub fn counted(path: &str) -> bool {
    !matches!(
        segments(path).as_slice(),
        ["rate-limit", "status" | "refresh"] | ["auth", "processing-activity"] | ["openapi.json"]
    )
}

/// The limits of one category; at least one of the two is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limit {
    pub minute: Option<u64>,
    pub hour: Option<u64>,
}

/// The configured limits; a category without an entry has no limit of its own.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RateLimits {
    pub by_category: BTreeMap<Category, Limit>,
}

impl RateLimits {
    pub fn is_empty(&self) -> bool {
        self.by_category.is_empty()
    }

    /// The category a request of `cat` counts in and its limit: `cat` if limited, else `default`
    /// if limited, else none.
    fn effective(&self, cat: Category) -> Option<(Category, Limit)> {
        if let Some(l) = self.by_category.get(&cat) {
            return Some((cat, *l));
        }
        self.by_category.get(&Category::Default).map(|l| (Category::Default, *l))
    }

    /// Adds `rate` (`N/minute`, `N/hour`, …) for the category named `cat`; `item` names the
    /// configuration item in errors.
    fn add(&mut self, cat: &str, rate: &str, item: &str) -> Result<(), String> {
        let cat = cat.trim();
        let Some(category) = Category::parse(cat) else {
            return Err(format!(
                "rate limit \"{item}\": unknown category \"{cat}\" (expected default, search, upload or processing)"
            ));
        };
        let Some((n, window)) = rate.split_once('/') else {
            return Err(format!("rate limit \"{item}\": expected N/minute or N/hour"));
        };
        let (n, window) = (n.trim(), window.trim());
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("rate limit \"{item}\": \"{n}\" is not a whole number"));
        }
        let n = match n.parse::<u64>() {
            Ok(0) => return Err(format!("rate limit \"{item}\": the limit must be at least 1")),
            Ok(v) if v <= LIMIT_MAX => v,
            _ => return Err(format!("rate limit \"{item}\": the limit must be at most {LIMIT_MAX}")),
        };
        let per_minute = match window.to_ascii_lowercase().as_str() {
            "minute" | "min" | "m" => true,
            "hour" | "h" => false,
            _ => {
                return Err(format!(
                    "rate limit \"{item}\": unknown window \"{window}\" (expected minute, min, m, hour or h)"
                ));
            }
        };
        let limit = self.by_category.entry(category).or_default();
        let (slot, name) = if per_minute { (&mut limit.minute, "per-minute") } else { (&mut limit.hour, "per-hour") };
        if slot.is_some() {
            return Err(format!("rate limit \"{item}\": {} already has a {name} limit", category.as_str()));
        }
        *slot = Some(n);
        Ok(())
    }
}

/// Parses `SPOOL_RATE_LIMITS`: comma-separated `category=N/window` items, e.g.
/// `search=30/minute,search=1000/hour,default=600/minute`. Windows: `minute`, `min`, `m`,
/// `hour`, `h`. Whitespace around the parts is ignored, as are empty items; an empty string
/// means no limits. `N` is 1 to [`LIMIT_MAX`]; a category gets at most one limit per window.
pub fn parse_env(spec: &str) -> Result<RateLimits, String> {
    let mut limits = RateLimits::default();
    for item in spec.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let Some((cat, rate)) = item.split_once('=') else {
            return Err(format!("rate limit \"{item}\": expected category=N/minute or category=N/hour"));
        };
        limits.add(cat, rate, item)?;
    }
    Ok(limits)
}

/// Builds limits from the config file's `[rate_limits]` table, as (category, rates) pairs:
/// `search = "30/minute"` is `("search", ["30/minute"])`, `search = ["30/minute", "1000/hour"]`
/// is `("search", ["30/minute", "1000/hour"])`. Same rules as [`parse_env`]; an empty list is
/// refused.
pub fn from_pairs(pairs: &[(String, Vec<String>)]) -> Result<RateLimits, String> {
    let mut limits = RateLimits::default();
    for (cat, rates) in pairs {
        if rates.is_empty() {
            return Err(format!("rate limit \"{cat}\": no limit given (expected \"N/minute\" or \"N/hour\")"));
        }
        for rate in rates {
            limits.add(cat, rate, &format!("{cat} = {rate}"))?;
        }
    }
    Ok(limits)
}

/// One (key, category)'s counts in its last windows.
#[derive(Debug, Clone, Copy, Default)]
struct Counter {
    minute_window: u64,
    minute_count: u64,
    hour_window: u64,
    hour_count: u64,
    /// When it last counted a request (for eviction).
    last_ms: u64,
}

impl Counter {
    /// Requests counted in the given windows (0 for a window that is not the stored one).
    fn used(&self, minute: u64, hour: u64) -> (u64, u64) {
        (
            if self.minute_window == minute { self.minute_count } else { 0 },
            if self.hour_window == hour { self.hour_count } else { 0 },
        )
    }

    fn count(&mut self, minute: u64, hour: u64, now_ms: u64) {
        let (m, h) = self.used(minute, hour);
        self.minute_window = minute;
        self.minute_count = m.saturating_add(1);
        self.hour_window = hour;
        self.hour_count = h.saturating_add(1);
        self.last_ms = now_ms;
    }
}

#[derive(Debug)]
struct Inner {
    limits: RateLimits,
    counters: HashMap<(String, Category), Counter>,
    cap: usize,
}

impl Inner {
    /// Makes room for one more counter: drops the counters whose hour window is not the current
    /// one; if the map is still full, drops the least recently used tenth.
    fn make_room(&mut self, now_ms: u64) {
        if self.counters.len() < self.cap {
            return;
        }
        let hour = now_ms / HOUR_MS;
        self.counters.retain(|_, c| c.hour_window == hour);
        let len = self.counters.len();
        if len < self.cap {
            return;
        }
        let evict = (self.cap / 10).max(1).max(len + 1 - self.cap).min(len);
        let mut by_age: Vec<(u64, &(String, Category))> = self.counters.iter().map(|(k, c)| (c.last_ms, k)).collect();
        by_age.select_nth_unstable_by_key(evict - 1, |(t, _)| *t);
        let victims: Vec<(String, Category)> = by_age[..evict].iter().map(|(_, k)| (*k).clone()).collect();
        drop(by_age);
        for k in &victims {
            self.counters.remove(k);
        }
    }
}

/// Seconds from `now_ms` to `end_ms`, rounded up, at least 1.
fn secs_until(end_ms: u64, now_ms: u64) -> u64 {
    end_ms.saturating_sub(now_ms).div_ceil(1000).max(1)
}

/// The live counters and the limits they enforce; share it in an `Arc`.
///
/// Memory is bounded: at most [`COUNTERS_MAX`] (key, category) counters. When a new one is
/// needed and the map is full, counters whose hour window has passed are dropped (they no
/// longer count anything); if it is still full, the least recently used tenth is dropped, and
/// those keys start again from zero (nobody is refused for lack of room). Keys are
/// authenticated principals, so reaching the bound takes that many live keys within one hour.
#[derive(Debug)]
pub struct Limiter {
    inner: Mutex<Inner>,
}

impl Limiter {
    pub fn new(limits: RateLimits) -> Limiter {
        Limiter::with_cap(limits, COUNTERS_MAX)
    }

    fn with_cap(limits: RateLimits, cap: usize) -> Limiter {
        Limiter { inner: Mutex::new(Inner { limits, counters: HashMap::new(), cap: cap.max(1) }) }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the limits (refresh). Counts of categories that stay limited are kept.
    pub fn replace(&self, limits: RateLimits) {
        let mut inner = self.lock();
        inner.counters.retain(|(_, cat), _| limits.by_category.contains_key(cat));
        inner.limits = limits;
    }

    /// No limits configured.
    pub fn is_empty(&self) -> bool {
        self.lock().limits.is_empty()
    }

    /// The limits in force.
    pub fn limits(&self) -> RateLimits {
        self.lock().limits.clone()
    }

    /// Counters held (at most [`COUNTERS_MAX`]).
    pub fn tracked(&self) -> usize {
        self.lock().counters.len()
    }

    /// Counts a request of `key` in `cat` (or in `default`, see the module doc) at `now_ms`.
    /// `Err(seconds)` when it would go over the minute or hour limit: it is not counted, and
    /// `seconds` (at least 1, rounded up) runs to the end of the window that refuses it (the
    /// later one when both do).
    pub fn check(&self, key: &str, cat: Category, now_ms: u64) -> Result<(), u64> {
        let mut inner = self.lock();
        let Some((cat, limit)) = inner.limits.effective(cat) else {
            return Ok(());
        };
        let minute = now_ms / MINUTE_MS;
        let hour = now_ms / HOUR_MS;
        let id = (key.to_owned(), cat);
        let (minute_used, hour_used) = inner.counters.get(&id).map_or((0, 0), |c| c.used(minute, hour));
        let mut retry: Option<u64> = None;
        if limit.minute.is_some_and(|m| minute_used >= m) {
            retry = Some(secs_until(minute.saturating_add(1).saturating_mul(MINUTE_MS), now_ms));
        }
        if limit.hour.is_some_and(|h| hour_used >= h) {
            let s = secs_until(hour.saturating_add(1).saturating_mul(HOUR_MS), now_ms);
            retry = Some(retry.map_or(s, |r| r.max(s)));
        }
        if let Some(s) = retry {
            return Err(s);
        }
        if !inner.counters.contains_key(&id) {
            inner.make_room(now_ms);
        }
        inner.counters.entry(id).or_default().count(minute, hour, now_ms);
        Ok(())
    }

    /// The `categories` object of `RateLimitStatus` for `key`: one entry per configured category
    /// with `minute_used`, `minute_limit`, `minute_remaining`, `hour_used`, `hour_limit`,
    /// `hour_remaining` and `reset_at`; `{}` when nothing is limited.
    ///
    /// A category with only a minute limit reports `hour_limit = minute_limit × 60` (the cap the
    /// minute limit implies); one with only an hour limit reports `minute_limit = hour_limit`.
    /// `reset_at` is Unix epoch seconds of the next reset of the binding window: the end of the
    /// hour window when the hour limit is used up, else the end of the minute window.
    pub fn status(&self, key: &str, now_ms: u64) -> Value {
        let inner = self.lock();
        let minute = now_ms / MINUTE_MS;
        let hour = now_ms / HOUR_MS;
        let mut out = serde_json::Map::new();
        for (cat, limit) in &inner.limits.by_category {
            let minute_limit = limit.minute.or(limit.hour);
            let hour_limit = limit.hour.or(limit.minute.map(|m| m.saturating_mul(60)));
            let (Some(minute_limit), Some(hour_limit)) = (minute_limit, hour_limit) else {
                continue;
            };
            let (minute_used, hour_used) =
                inner.counters.get(&(key.to_owned(), *cat)).map_or((0, 0), |c| c.used(minute, hour));
            let reset_ms = if limit.hour.is_some_and(|h| hour_used >= h) {
                hour.saturating_add(1).saturating_mul(HOUR_MS)
            } else {
                minute.saturating_add(1).saturating_mul(MINUTE_MS)
            };
            out.insert(
                cat.as_str().to_owned(),
                json!({
                    "minute_used": minute_used,
                    "minute_limit": minute_limit,
                    "minute_remaining": minute_limit.saturating_sub(minute_used),
                    "hour_used": hour_used,
                    "hour_limit": hour_limit,
                    "hour_remaining": hour_limit.saturating_sub(hour_used),
                    "reset_at": reset_ms / 1000,
                }),
            );
        }
        Value::Object(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 10:00:00.000 on day 0 of the epoch: the start of a minute and of an hour.
    const T0: u64 = 10 * HOUR_MS;

    fn lim(minute: Option<u64>, hour: Option<u64>) -> Limit {
        Limit { minute, hour }
    }

    fn limiter(spec: &str) -> Limiter {
        Limiter::new(parse_env(spec).unwrap())
    }

    fn pair(cat: &str, rates: &[&str]) -> (String, Vec<String>) {
        (cat.to_owned(), rates.iter().map(|r| (*r).to_owned()).collect())
    }

    #[test]
    fn categories_of_routes() {
        let c = category_of;
        assert_eq!(c("POST", "/indexes/abc/search"), Category::Search);
        assert_eq!(c("POST", "/indexes/abc/image-search"), Category::Search);
        assert_eq!(c("POST", "/indexes/abc/multimodal-search"), Category::Search);
        assert_eq!(c("GET", "/indexes/abc/search"), Category::Default);
        assert_eq!(c("POST", "/search/filter/abc"), Category::Search);
        assert_eq!(c("POST", "/search/multi-run"), Category::Search);
        assert_eq!(c("POST", "/playground/search?run_id=x"), Category::Search);
        assert_eq!(c("POST", "/workflow/search"), Category::Search);
        assert_eq!(c("GET", "/workflow/search/page?cursor=c"), Category::Search);
        assert_eq!(c("POST", "/api/v2/indexes/abc/search"), Category::Search);
        assert_eq!(c("POST", "/videos/upload"), Category::Upload);
        assert_eq!(c("POST", "/workflow/upload"), Category::Upload);
        assert_eq!(c("GET", "/videos/upload"), Category::Default);
        assert_eq!(c("POST", "/prompt-runs/execute"), Category::Processing);
        assert_eq!(c("POST", "/videos/v1/process"), Category::Processing);
        assert_eq!(c("POST", "/workflow/process"), Category::Processing);
        assert_eq!(c("POST", "/workflow/define"), Category::Processing);
        assert_eq!(c("GET", "/prompt-runs/execute"), Category::Default);
        assert_eq!(c("GET", "/videos"), Category::Default);
        assert_eq!(c("POST", "/indexes"), Category::Default);
        assert_eq!(c("GET", "/indexes/abc"), Category::Default);
        assert!(!counted("/rate-limit/status"));
        assert!(!counted("/rate-limit/refresh"));
        assert!(!counted("/auth/processing-activity"));
        assert!(!counted("/openapi.json"));
        assert!(counted("/videos"));
        assert!(counted("/indexes/abc/search"));
        for cat in Category::ALL {
            assert_eq!(Category::parse(cat.as_str()), Some(cat));
        }
    }

    #[test]
    fn parses_env_specs() {
        let l = parse_env("search=30/minute,search=1000/hour,default=600/minute").unwrap();
        assert_eq!(l.by_category.len(), 2);
        assert_eq!(l.by_category[&Category::Search], lim(Some(30), Some(1000)));
        assert_eq!(l.by_category[&Category::Default], lim(Some(600), None));

        let l = parse_env(" search = 30 / min , upload=5/h, processing=2/m ,Default=7/HOUR, ").unwrap();
        assert_eq!(l.by_category[&Category::Search], lim(Some(30), None));
        assert_eq!(l.by_category[&Category::Upload], lim(None, Some(5)));
        assert_eq!(l.by_category[&Category::Processing], lim(Some(2), None));
        assert_eq!(l.by_category[&Category::Default], lim(None, Some(7)));

        assert!(parse_env("").unwrap().is_empty());
        assert!(parse_env("   ").unwrap().is_empty());
        assert_eq!(
            parse_env("search=1000000000/minute").unwrap().by_category[&Category::Search].minute,
            Some(LIMIT_MAX)
        );
    }

    #[test]
    fn refuses_bad_env_specs_naming_the_item() {
        for (spec, bad) in [
            ("searh=30/minute", "searh"),
            ("search=0/minute", "search=0/minute"),
            ("search=abc/minute", "abc"),
            ("search=-1/minute", "-1"),
            ("search=+5/minute", "+5"),
            ("search=1.5/minute", "1.5"),
            ("search=/minute", "search=/minute"),
            ("search=1000000001/minute", "search=1000000001/minute"),
            ("search=99999999999999999999999/minute", "search=99999999999999999999999/minute"),
            ("search=30/day", "day"),
            ("search=30", "search=30"),
            ("search", "search"),
            ("default=1/m,search=30/minute,search=40/min", "search=40/min"),
            ("search=1/h, search = 2 / hour", "search = 2 / hour"),
        ] {
            let err = parse_env(spec).unwrap_err();
            assert!(err.contains(bad), "{spec}: {err}");
        }
    }

    #[test]
    fn parses_config_pairs() {
        let l = from_pairs(&[pair("search", &["30/minute", "1000/hour"]), pair("default", &["600/minute"])]).unwrap();
        assert_eq!(l.by_category[&Category::Search], lim(Some(30), Some(1000)));
        assert_eq!(l.by_category[&Category::Default], lim(Some(600), None));
        assert!(from_pairs(&[]).unwrap().is_empty());

        assert!(from_pairs(&[pair("search", &[])]).unwrap_err().contains("search"));
        assert!(from_pairs(&[pair("nope", &["1/m"])]).unwrap_err().contains("nope"));
        assert!(from_pairs(&[pair("search", &["0/m"])]).unwrap_err().contains("search = 0/m"));
        assert!(from_pairs(&[pair("search", &["1/m", "2/minute"])]).unwrap_err().contains("search = 2/minute"));
        assert!(from_pairs(&[pair("search", &["1/m"]), pair("search", &["2/m"])]).is_err());
    }

    #[test]
    fn counts_and_refuses_with_the_time_left_in_the_window() {
        let l = limiter("search=2/minute,search=3/hour");
        let now = T0 + 5_500;
        assert_eq!(l.check("a", Category::Search, now), Ok(()));
        assert_eq!(l.check("a", Category::Search, now), Ok(()));
        // 54.5 s left in the minute: rounded up.
        assert_eq!(l.check("a", Category::Search, now), Err(55));
        assert_eq!(l.check("a", Category::Search, T0 + MINUTE_MS - 1), Err(1));
        // Another key has its own counters.
        assert_eq!(l.check("b", Category::Search, now), Ok(()));
        // Next minute: the refusals were not counted, so the hour has one left.
        let next = T0 + MINUTE_MS + 5_000;
        assert_eq!(l.check("a", Category::Search, next), Ok(()));
        assert_eq!(l.check("a", Category::Search, next), Err((HOUR_MS - MINUTE_MS - 5_000) / 1000));
        // Next hour: all windows rolled over.
        assert_eq!(l.check("a", Category::Search, T0 + HOUR_MS), Ok(()));
        assert_eq!(l.check("a", Category::Search, T0 + HOUR_MS), Ok(()));
        assert_eq!(l.check("a", Category::Search, T0 + HOUR_MS), Err(60));
    }

    #[test]
    fn both_windows_exceeded_waits_for_the_later() {
        let l = limiter("upload=1/minute,upload=1/hour");
        assert_eq!(l.check("a", Category::Upload, T0 + 5_000), Ok(()));
        assert_eq!(l.check("a", Category::Upload, T0 + 5_000), Err(3595));
    }

    #[test]
    fn unlimited_categories_fall_back_to_default() {
        let l = limiter("default=1/minute");
        assert_eq!(l.check("a", Category::Search, T0), Ok(()));
        assert_eq!(l.check("a", Category::Upload, T0), Err(60));
        assert_eq!(l.check("a", Category::Default, T0), Err(60));

        let l = limiter("search=1/minute");
        for _ in 0..10 {
            assert_eq!(l.check("a", Category::Default, T0), Ok(()));
            assert_eq!(l.check("a", Category::Upload, T0), Ok(()));
        }
        assert_eq!(l.check("a", Category::Search, T0), Ok(()));
        assert_eq!(l.check("a", Category::Search, T0), Err(60));

        let l = limiter("search=1/minute,default=1/minute");
        assert_eq!(l.check("a", Category::Search, T0), Ok(()));
        assert_eq!(l.check("a", Category::Processing, T0), Ok(()));
        assert_eq!(l.check("a", Category::Search, T0), Err(60));
        assert_eq!(l.check("a", Category::Default, T0), Err(60));

        let l = Limiter::new(RateLimits::default());
        assert!(l.is_empty());
        assert_eq!(l.check("a", Category::Search, T0), Ok(()));
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn status_reports_the_current_windows() {
        let l = limiter("search=30/minute,search=1000/hour,default=600/minute,upload=100/hour");
        let now = T0 + 5_000;
        l.check("a", Category::Search, now).unwrap();
        l.check("a", Category::Search, now).unwrap();
        let minute_end = (T0 + MINUTE_MS) / 1000;
        assert_eq!(
            l.status("a", now),
            json!({
                "default": {"minute_used": 0, "minute_limit": 600, "minute_remaining": 600,
                    "hour_used": 0, "hour_limit": 36000, "hour_remaining": 36000, "reset_at": minute_end},
                "search": {"minute_used": 2, "minute_limit": 30, "minute_remaining": 28,
                    "hour_used": 2, "hour_limit": 1000, "hour_remaining": 998, "reset_at": minute_end},
                "upload": {"minute_used": 0, "minute_limit": 100, "minute_remaining": 100,
                    "hour_used": 0, "hour_limit": 100, "hour_remaining": 100, "reset_at": minute_end},
            })
        );
        // Another minute of the same hour: the minute count is past, the hour count stays.
        let later = T0 + 2 * MINUTE_MS;
        assert_eq!(l.status("a", later)["search"]["minute_used"], 0);
        assert_eq!(l.status("a", later)["search"]["hour_used"], 2);
        assert_eq!(l.status("a", later)["search"]["reset_at"], (T0 + 3 * MINUTE_MS) / 1000);
        assert_eq!(l.status("a", T0 + HOUR_MS)["search"]["hour_used"], 0);
        assert_eq!(l.status("b", now)["search"]["minute_used"], 0);

        // An exhausted hour window binds.
        let l = limiter("processing=1/hour");
        l.check("a", Category::Processing, now).unwrap();
        assert_eq!(
            l.status("a", now)["processing"],
            json!({"minute_used": 1, "minute_limit": 1, "minute_remaining": 0,
                "hour_used": 1, "hour_limit": 1, "hour_remaining": 0, "reset_at": (T0 + HOUR_MS) / 1000})
        );

        assert_eq!(Limiter::new(RateLimits::default()).status("a", now), json!({}));
    }

    #[test]
    fn replace_keeps_counts_of_categories_still_limited() {
        let l = limiter("search=1/minute,upload=1/minute");
        l.check("a", Category::Search, T0).unwrap();
        l.check("a", Category::Upload, T0).unwrap();
        l.replace(parse_env("search=1/minute").unwrap());
        assert_eq!(l.tracked(), 1);
        assert_eq!(l.check("a", Category::Search, T0), Err(60));
        assert_eq!(l.check("a", Category::Upload, T0), Ok(()));
        l.replace(RateLimits::default());
        assert!(l.is_empty());
        assert_eq!(l.tracked(), 0);
        assert_eq!(l.check("a", Category::Search, T0), Ok(()));
        assert_eq!(l.status("a", T0), json!({}));
    }

    #[test]
    fn memory_stays_bounded() {
        let l = Limiter::with_cap(parse_env("default=5/minute").unwrap(), 50);
        for i in 0..500u64 {
            l.check(&format!("k{i}"), Category::Default, T0 + i).unwrap();
            assert!(l.tracked() <= 50);
        }
        // The most recent keys are still tracked.
        for _ in 0..4 {
            l.check("k499", Category::Default, T0 + 500).unwrap();
        }
        assert_eq!(l.check("k499", Category::Default, T0 + 500), Err(60));
        // When full, counters of a past hour are swept first.
        let l = Limiter::with_cap(parse_env("default=5/minute").unwrap(), 50);
        for i in 0..50u64 {
            l.check(&format!("k{i}"), Category::Default, T0 + i).unwrap();
        }
        assert_eq!(l.tracked(), 50);
        l.check("late", Category::Default, T0 + HOUR_MS).unwrap();
        assert_eq!(l.tracked(), 1);

        let l = limiter("search=1/hour");
        for i in 0..COUNTERS_MAX + 10 {
            l.check(&format!("k{i}"), Category::Search, T0).unwrap();
        }
        assert!(l.tracked() <= COUNTERS_MAX);
    }
}
