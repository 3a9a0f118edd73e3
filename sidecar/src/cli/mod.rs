//! `webhook-relay dlq`: a command-line client of the admin API (list, show, replay,
//! delete, stats). Tables for people by default, `-o json` for scripts. The token comes
//! from `RELAY_ADMIN_TOKEN` only, never from an argument (arguments show in `ps`). The HTTP
//! side is [`client`].

pub mod client;

pub use client::{Client, Target, encode_segment};

use crate::admin_types::{BulkResult, EventDetail, EventPage, EventSummary, PayloadEncoding, Replayed, Stats};
use clap::{ArgGroup, Args, Subcommand, ValueEnum};
use http::Method;
use serde_json::{Value, json};
use std::process::ExitCode;
use std::time::Duration;
use url::Url;

/// The environment variable holding the admin token.
pub const TOKEN_ENV: &str = "RELAY_ADMIN_TOKEN";

/// `webhook-relay dlq ...`
#[derive(Args, Debug)]
pub struct DlqArgs {
    /// Base URL of the relay's admin listener (adminListen).
    #[arg(long, env = "RELAY_ADMIN_URL", default_value = "http://127.0.0.1:9090", global = true)]
    pub admin_url: Url,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
    #[command(subcommand)]
    pub command: DlqCommand,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StateArg {
    Dead,
    Due,
    Inflight,
    /// Waiting behind the event of its ordering key that goes first (`delivery.ordering`).
    Blocked,
}

impl StateArg {
    fn as_str(self) -> &'static str {
        match self {
            StateArg::Dead => "dead",
            StateArg::Due => "due",
            StateArg::Inflight => "inflight",
            StateArg::Blocked => "blocked",
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum DlqCommand {
    /// List events of one state, oldest first (dead letters unless --state says otherwise).
    List {
        #[arg(long, value_enum, default_value_t = StateArg::Dead)]
        state: StateArg,
        /// Newest first (dead: the latest dead-lettered first).
        #[arg(long)]
        newest: bool,
        /// Events per page (1 to 1000).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Start after this cursor (printed under a page that has more).
        #[arg(long)]
        cursor: Option<String>,
        /// Follow every page to the end.
        #[arg(long, conflicts_with = "cursor")]
        all: bool,
    },
    /// Show one event with its payload.
    Show { id: String },
    /// Replay one dead or due event now, or the dead letters a filter selects (--all: every one).
    #[command(group(ArgGroup::new("which").required(true).multiple(true).args(["id", "all", "since", "until", "status", "error"])))]
    Replay {
        #[arg(conflicts_with_all = ["all", "since", "until", "status", "error", "dry_run"])]
        id: Option<String>,
        #[command(flatten)]
        filter: BulkFilter,
    },
    /// Delete an event's payload and metadata for good, or the dead letters a filter selects
    /// (--all: every one). Dedup entries stay, so a resend is still a duplicate.
    #[command(group(ArgGroup::new("which").required(true).multiple(true).args(["id", "all", "since", "until", "status", "error"])))]
    Delete {
        #[arg(conflicts_with_all = ["all", "since", "until", "status", "error", "dry_run"])]
        id: Option<String>,
        #[command(flatten)]
        filter: BulkFilter,
    },
    /// Queue figures: due, in flight, dead, age of the oldest undelivered event.
    Stats,
}

/// Which dead letters a bulk replay or delete selects.
#[derive(Args, Debug, Clone, Default)]
pub struct BulkFilter {
    /// Every dead letter (with no other filter).
    #[arg(long)]
    pub all: bool,
    /// Dead-lettered at or after: an RFC 3339 time (2026-05-01T12:00:00Z) or an age (2h = two hours ago).
    #[arg(long)]
    pub since: Option<String>,
    /// Dead-lettered at or before: an RFC 3339 time or an age, like --since.
    #[arg(long)]
    pub until: Option<String>,
    /// Last status: a code (503), a class (5xx) or none (no HTTP answer: timeouts, connection errors).
    #[arg(long)]
    pub status: Option<String>,
    /// Text the last error contains (case-insensitive).
    #[arg(long)]
    pub error: Option<String>,
    /// Only count what would be replayed or deleted; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Why a command failed; printed as one line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot reach the admin API at {url} ({why}); set --admin-url or RELAY_ADMIN_URL")]
    Unreachable { url: String, why: String },
    #[error("{message} (HTTP {status}){hint}")]
    Api { status: u16, message: String, hint: &'static str },
}

/// Runs one `dlq` command; prints to stdout, errors to stderr.
pub fn run(args: DlqArgs) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let token = std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty());
    match runtime.block_on(execute(&args, token)) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("webhook-relay dlq: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a command and returns what it prints.
pub async fn execute(args: &DlqArgs, token: Option<String>) -> Result<String, CliError> {
    let api = Client::new(args.admin_url.clone(), token)?;
    let json_out = args.output == Output::Json;
    match &args.command {
        DlqCommand::List { state, newest, limit, cursor, all } => {
            let mut items = vec![];
            let mut cursor = cursor.clone();
            loop {
                let mut target =
                    api.path(&["v1", "events"]).query("state", state.as_str()).query("limit", &limit.to_string());
                if *newest {
                    target = target.query("order", "newest");
                }
                if let Some(c) = &cursor {
                    target = target.query("cursor", c);
                }
                let page: EventPage = api.call_as(Method::GET, target).await?;
                items.extend(page.items);
                cursor = page.next_cursor;
                if !*all || cursor.is_none() {
                    break;
                }
            }
            Ok(if json_out {
                pretty(&EventPage { items, next_cursor: cursor })
            } else {
                list_table(state.as_str(), &items, cursor.as_deref())
            })
        }
        DlqCommand::Show { id } => {
            let ev: EventDetail = api.call_as(Method::GET, api.path(&["v1", "events", id])).await?;
            Ok(if json_out { pretty(&ev) } else { show_text(&ev) })
        }
        DlqCommand::Replay { id: Some(id), .. } => {
            let r: Replayed = api.call_as(Method::POST, api.path(&["v1", "events", id, "replay"])).await?;
            Ok(if json_out {
                pretty(&r)
            } else if r.waiting {
                format!(
                    "replayed {id} (was {}); it waits behind an earlier or in-flight event of its ordering key (state blocked)\n",
                    r.previous_state.as_str()
                )
            } else {
                format!("replayed {id} (was {}); it is due now\n", r.previous_state.as_str())
            })
        }
        DlqCommand::Replay { id: None, filter } => bulk(&api, "replay", filter, json_out).await,
        DlqCommand::Delete { id: Some(id), .. } => {
            api.call(Method::DELETE, api.path(&["v1", "events", id])).await?;
            Ok(if json_out { pretty(&json!({ "deleted": id })) } else { format!("deleted {id}\n") })
        }
        DlqCommand::Delete { id: None, filter } => bulk(&api, "delete", filter, json_out).await,
        DlqCommand::Stats => {
            let s: Stats = api.call_as(Method::GET, api.path(&["v1", "stats"])).await?;
            Ok(if json_out { pretty(&s) } else { stats_table(&s) })
        }
    }
}

/// `POST /v1/dead/<verb>` with the filter, again with each answer's cursor until done;
/// progress goes to stderr while it runs.
async fn bulk(api: &Client, verb: &str, f: &BulkFilter, json_out: bool) -> Result<String, CliError> {
    let now = chrono::Utc::now();
    let mut base = api.path(&["v1", "dead", verb]);
    for (name, value) in [("since", &f.since), ("until", &f.until)] {
        if let Some(v) = value {
            base = base.query(name, &to_rfc3339(v, now)?);
        }
    }
    for (name, value) in [("status", &f.status), ("error", &f.error)] {
        if let Some(v) = value {
            base = base.query(name, v);
        }
    }
    if f.all {
        base = base.query("all", "true");
    }
    if f.dry_run {
        base = base.query("dryRun", "true");
    }
    let done_word = if verb == "replay" { "replayed" } else { "deleted" };
    let (mut matched, mut changed, mut scanned, mut cursor) = (0u64, 0u64, 0u64, None::<String>);
    loop {
        let target = match &cursor {
            Some(c) => base.clone().query("cursor", c),
            None => base.clone(),
        };
        let r: BulkResult = api.call_as(Method::POST, target).await?;
        matched += r.matched;
        changed += r.replayed.or(r.deleted).unwrap_or(0);
        scanned += r.scanned;
        cursor = r.cursor;
        if r.done || cursor.is_none() {
            break;
        }
        eprintln!("… {matched} selected of {scanned} dead letters looked at so far");
    }
    Ok(if json_out {
        pretty(&json!({ done_word: changed, "matched": matched, "scanned": scanned, "dryRun": f.dry_run }))
    } else if f.dry_run {
        format!("would {verb} {matched} dead letter(s) of {scanned} (dry run: nothing changed)\n")
    } else if verb == "replay" {
        format!("replayed {changed} dead letter(s); they are due now\n")
    } else {
        format!("deleted {changed} dead letter(s)\n")
    })
}

/// An RFC 3339 time as given, or an age (`2h`) counted back from `now`.
pub fn to_rfc3339(text: &str, now: chrono::DateTime<chrono::Utc>) -> Result<String, CliError> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text.trim()) {
        return Ok(t.to_utc().to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    }
    let age = webhook_relay_api::duration::parse(text).map_err(|_| {
        CliError::Usage(format!("{text:?} is neither an RFC 3339 time (2026-05-01T12:00:00Z) nor an age (2h)"))
    })?;
    let age = chrono::Duration::from_std(age).map_err(|e| CliError::Usage(e.to_string()))?;
    Ok((now - age).to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

fn pretty<T: serde::Serialize>(v: &T) -> String {
    format!("{}\n", serde_json::to_string_pretty(v).expect("the wire types serialize"))
}

/// A cell: the value, or `-` for none.
fn text<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max { s.to_string() } else { format!("{}…", s.chars().take(max - 1).collect::<String>()) }
}

/// Left-aligned columns two spaces apart; the last column is not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let n = cells.len();
        let mut out = String::new();
        for (i, (cell, w)) in cells.into_iter().zip(&widths).enumerate() {
            out.push_str(cell);
            if i + 1 < n {
                out.push_str(&" ".repeat(w - cell.chars().count() + 2));
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

fn list_table(state: &str, items: &[EventSummary], next: Option<&str>) -> String {
    if items.is_empty() {
        return format!("no {state} events\n");
    }
    let when_header = match state {
        "due" => "NEXT ATTEMPT",
        "inflight" => "LEASE EXPIRES",
        "blocked" => "WAITING SINCE",
        _ => "DEAD AT",
    };
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|e| {
            let when = e
                .next_attempt_at
                .as_ref()
                .or(e.lease_expires_at.as_ref())
                .or(e.dead_at.as_ref())
                .or(e.waiting_since.as_ref());
            vec![
                e.id.clone(),
                e.attempts.to_string(),
                text(when),
                text(e.last_status),
                truncate(&text(e.last_error.as_ref()), 60),
            ]
        })
        .collect();
    let mut out = table(&["ID", "ATTEMPTS", when_header, "LAST STATUS", "LAST ERROR"], &rows);
    if let Some(c) = next {
        out.push_str(&format!("(more: webhook-relay dlq list --state {state} --cursor {c})\n"));
    }
    out
}

fn show_text(e: &EventDetail) -> String {
    let s = &e.summary;
    let mut rows =
        vec![("id", s.id.clone()), ("state", s.state.as_str().to_string()), ("attempts", s.attempts.to_string())];
    for (label, value) in
        [("next attempt", &s.next_attempt_at), ("lease expires", &s.lease_expires_at), ("dead at", &s.dead_at)]
    {
        if let Some(v) = value {
            rows.push((label, v.clone()));
        }
    }
    rows.extend([
        ("received at", text(e.received_at.as_ref())),
        ("content type", e.content_type.clone()),
        ("last attempt", text(e.last_attempt_at.as_ref())),
        ("last status", text(s.last_status)),
        ("last error", text(s.last_error.as_ref())),
    ]);
    let mut out = String::new();
    for (label, value) in rows {
        out.push_str(&format!("{:<14}{value}\n", format!("{label}:")));
    }
    match (e.payload_encoding, &e.payload) {
        (PayloadEncoding::Json, p) => out.push_str(&format!("payload:\n{}", pretty(p))),
        (PayloadEncoding::Base64, Value::String(b)) => out.push_str(&format!("payload (base64):\n{b}\n")),
        (PayloadEncoding::Base64, other) => out.push_str(&format!("payload (base64):\n{other}\n")),
    }
    out
}

fn stats_table(s: &Stats) -> String {
    let age = humantime::format_duration(Duration::from_secs(s.oldest_due_age_seconds)).to_string();
    let mut out = table(
        &["DUE", "IN FLIGHT", "DEAD", "OLDEST DUE AGE"],
        &[vec![s.due.to_string(), s.in_flight.to_string(), s.dead.to_string(), age]],
    );
    if let Some(b) = &s.oldest_blocked {
        let waited = humantime::format_duration(Duration::from_secs(b.age_seconds));
        out.push_str(&format!(
            "blocked: {} event(s) of {} ordering key(s) wait behind the first of their key; longest: key {:?}, {waited}\n",
            s.blocked, s.waiting_keys, b.key
        ));
    }
    let d = &s.destination;
    if let Some(until) = &d.paused_until {
        out.push_str(&format!("paused until {until} (the destination asked with Retry-After)\n"));
    }
    if let Some(c) = &d.circuit {
        let mut line = format!(
            "circuit {} since {}, {} consecutive failure(s) (opens at {})",
            c.state.as_str(),
            text(c.since.as_ref()),
            c.consecutive_failures,
            c.failure_threshold
        );
        if let Some(at) = &c.next_probe_at {
            line.push_str(&format!(", next probe at {at}"));
        }
        out.push_str(&line);
        out.push('\n');
    }
    if let Some(r) = &d.rate_limit {
        out.push_str(&format!(
            "rate limit {}/s, burst {}, {} attempt(s) may start now\n",
            r.per_second, r.burst, r.tokens
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let t = table(&["ID", "N"], &[vec!["long-id".into(), "1".into()], vec!["a".into(), "22".into()]]);
        assert_eq!(t, "ID       N\nlong-id  1\na        22\n");
    }

    #[test]
    fn times_are_rfc3339_or_an_age() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-05-01T12:00:00Z").unwrap().to_utc();
        assert_eq!(to_rfc3339("2h", now).unwrap(), "2026-05-01T10:00:00.000Z");
        assert_eq!(to_rfc3339("2026-05-01T14:00:00+02:00", now).unwrap(), "2026-05-01T12:00:00.000Z");
        assert!(to_rfc3339("tuesday", now).is_err());
    }

    #[test]
    fn ids_are_one_path_segment() {
        let c = Client::new(Url::parse("http://127.0.0.1:9090").unwrap(), None).unwrap();
        let t = |segments: &[&str]| c.request_target(&c.path(segments));
        assert_eq!(t(&["v1", "events", "a/b c"]), "/v1/events/a%2Fb%20c");
        // Dots survive: a `..` segment is not "up one level".
        assert_eq!(t(&["v1", "events", "..", "replay"]), "/v1/events/%2E%2E/replay");
        assert_eq!(t(&["v1", "events", "."]), "/v1/events/%2E");
        assert_eq!(t(&["v1", "events", "50%é"]), "/v1/events/50%25%C3%A9");
        let c = Client::new(Url::parse("http://h/proxy/").unwrap(), None).unwrap();
        assert_eq!(c.request_target(&c.path(&["v1", "stats"]).query("a", "b c")), "/proxy/v1/stats?a=b+c");
    }
}
