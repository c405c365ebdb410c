//! `/metrics`: Prometheus text format.

use crate::AppState;
use std::fmt::Write;
use std::sync::atomic::Ordering;

pub fn render(app: &AppState) -> String {
    let stats = app.rt.log().stats();
    let mut out = String::new();
    let mut counter = |name: &str, help: &str, v: u64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
    };
    counter(
        "spool_log_commits_total",
        "Durable write transactions of the event log.",
        stats.commits.load(Ordering::Relaxed),
    );
    counter("spool_log_appends_total", "Append requests acknowledged.", stats.appends.load(Ordering::Relaxed));
    counter("spool_log_events_total", "Events written.", stats.events.load(Ordering::Relaxed));
    counter(
        "spool_log_failed_commits_total",
        "Write transactions that failed.",
        stats.failed_commits.load(Ordering::Relaxed),
    );
    counter("spool_commands_total", "Commands decided.", app.rt.commands_total.load(Ordering::Relaxed));
    counter("spool_effects_total", "Effects executed.", app.rt.effects_total.load(Ordering::Relaxed));
    counter(
        "spool_search_commits_total",
        "Commits of the search projections' indexes in this process.",
        spool_runtime::search::SEARCH_COMMITS.load(Ordering::Relaxed),
    );
    let _ = writeln!(
        out,
        "# HELP spool_applied_seq Sequence number of the last folded event.\n# TYPE spool_applied_seq gauge"
    );
    let _ = writeln!(out, "spool_applied_seq {}", app.rt.applied_seq());
    let _ = writeln!(
        out,
        "# HELP spool_waiting Workflows that have not ended, by kind and by what they wait on.\n# TYPE spool_waiting gauge"
    );
    for ((kind, reason), n) in app.rt.waiting_gauges() {
        let _ = writeln!(out, "spool_waiting{{kind=\"{kind}\",reason=\"{reason}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP spool_http_responses_total HTTP responses by status class.\n# TYPE spool_http_responses_total counter"
    );
    for (i, class) in ["2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
        let _ = writeln!(
            out,
            "spool_http_responses_total{{class=\"{class}\"}} {}",
            app.responses[i].load(Ordering::Relaxed)
        );
    }
    out
}
