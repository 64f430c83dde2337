//! W11: the inspector's pages on a large SQLite store. 1,000,000 commands and their 1,000,000
//! events over 100,000 streams (ten each, with stored entity states), the newest 60,000 events
//! in the last minute, three handler positions and an outbox; then the overview, a type's first
//! page of streams, a prefix search, one stream and a page of the global log are each requested
//! over HTTP from a real `sourceflow-inspect` server, and their median latency is reported. The
//! overview is held to 100 ms, as is a stream's page. A correlation trace is timed too, for
//! information: no index leads to a correlation id, so it reads both logs whole.
//!
//! The store is filled with set-based SQL inserts (a recursive counter per 100,000 rows), the
//! way W7 seeds its log: the rows are those the store writes, in commit order.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use chrono::{SecondsFormat, TimeDelta, Utc};
use sourceflow_sqlx::SqliteStore;
use sqlx::Connection as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{progress, Settings};
use crate::raw;
use crate::report::{median, Row, Target};

/// Streams the log is spread over.
const STREAMS: u64 = 100_000;
/// Events (and commands) stamped within the last minute.
const RECENT: u64 = 60_000;
/// Requests timed per page (after warming up).
const SAMPLES: usize = 30;
/// Requests timed for a correlation trace, which reads both logs.
const TRACE_SAMPLES: usize = 5;
/// The overview's and a stream page's target, in milliseconds.
const TARGET_MS: f64 = 100.0;
/// The entity type of the seeded streams.
const TYPE: &str = "bench.Inspected";

/// Fills `path` (an opened, migrated store file) with `count` commands and events.
async fn seed(path: &Path, count: u64) -> anyhow::Result<()> {
    const CHUNK: u64 = 100_000;
    let mut connection = raw::connect(path).await?;
    let old = (Utc::now() - TimeDelta::hours(2)).to_rfc3339_opts(SecondsFormat::Nanos, true);
    let recent = (Utc::now() - TimeDelta::seconds(20)).to_rfc3339_opts(SecondsFormat::Nanos, true);
    // Row i: stream i % STREAMS, sequence i / STREAMS + 1; its event gets position i + 1.
    let commands = "INSERT INTO sf_commands (stream_type, stream_id, sequence, message_id, name, \
         version, correlation_id, causation_id, created_at, payload, first_event, last_event) \
         WITH RECURSIVE n(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM n WHERE i < ?2) \
         SELECT ?4, printf('s-%06d', i % ?3), i / ?3 + 1, \
         printf('00000000-0000-7000-8000-%012x', i), 'bench.Change', 1, \
         printf('00000000-0000-7000-9000-%012x', i), NULL, ?5, \
         printf('{\"amount\":%d}', i % 97), i / ?3 + 1, i / ?3 + 1 FROM n";
    let events = "INSERT INTO sf_events (stream_type, stream_id, sequence, command_sequence, \
         message_id, name, version, correlation_id, causation_id, created_at, payload) \
         WITH RECURSIVE n(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM n WHERE i < ?2) \
         SELECT ?4, printf('s-%06d', i % ?3), i / ?3 + 1, i / ?3 + 1, \
         printf('00000000-0000-7000-a000-%012x', i), 'bench.Changed', 1, \
         printf('00000000-0000-7000-9000-%012x', i), \
         printf('00000000-0000-7000-8000-%012x', i), ?5, \
         printf('{\"amount\":%d,\"total\":%d}', i % 97, i) FROM n";
    let mut written = 0;
    while written < count {
        let end = (written + CHUNK).min(count);
        // The chunk's rows older than the last minute, then the recent ones.
        let split = count.saturating_sub(RECENT).clamp(written, end);
        let mut tx = connection.begin().await?;
        for (from, to, time) in [(written, split, &old), (split, end, &recent)] {
            if from == to {
                continue;
            }
            for sql in [commands, events] {
                sqlx::query(sql)
                    .bind(from as i64)
                    .bind(to as i64 - 1)
                    .bind(STREAMS as i64)
                    .bind(TYPE)
                    .bind(time)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        written = end;
        progress(format!("  {written} commands and events written"));
    }
    let mut tx = connection.begin().await?;
    sqlx::query(
        "INSERT INTO sf_entities (entity_type, entity_id, version, state, updated_at) \
         SELECT stream_type, stream_id, MAX(sequence), '{\"total\":1}', ?1 FROM sf_commands \
         GROUP BY stream_type, stream_id",
    )
    .bind(&recent)
    .execute(&mut *tx)
    .await?;
    for (handler, behind) in [
        ("bench.Summary", 0_i64),
        ("bench.Audit", 1_500),
        ("bench.Mailer", 40),
    ] {
        sqlx::query(
            "INSERT INTO sf_positions (handler, position, updated_at) \
             SELECT ?1, MAX(position) - ?2, ?3 FROM sf_events",
        )
        .bind(handler)
        .bind(behind)
        .bind(&recent)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query(
        "INSERT INTO sf_outbox (stream_type, stream_id, message_id, name, version, \
         correlation_id, causation_id, created_at, payload) \
         SELECT stream_type, stream_id, message_id, name, version, correlation_id, NULL, \
         created_at, payload FROM sf_commands WHERE stream_type = ?1 AND stream_id = 's-000007'",
    )
    .bind(TYPE)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    connection.close().await?;
    Ok(())
}

/// One `GET` over a fresh connection; returns the body after checking the status.
async fn get(addr: &str, target: &str) -> anyhow::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    ensure!(
        text.starts_with("HTTP/1.1 200"),
        "{target}: {}",
        text.lines().next().unwrap_or("")
    );
    Ok(text)
}

/// The median latency of `target` over `samples` requests, after one to warm up.
async fn latency(
    addr: &str,
    target: &str,
    expect: &str,
    samples: usize,
) -> anyhow::Result<Duration> {
    {
        let body = get(addr, target).await?;
        ensure!(body.contains(expect), "{target} does not show {expect:?}");
    }
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let started = Instant::now();
        get(addr, target).await?;
        times.push(started.elapsed());
    }
    Ok(median(&mut times))
}

/// W11: seeds the store, serves the inspector on loopback, times its pages.
///
/// # Errors
/// A failed seed, or a page that does not answer 200 with what the seed put there.
pub async fn w11(settings: &Settings, dir: &Path) -> anyhow::Result<Vec<Row>> {
    let count: u64 = settings.pick(100_000, 1_000_000);
    let path = dir.join("w11.db");
    drop(SqliteStore::open(&path).await?);
    progress(format!(
        "W11: seeding {count} commands and events over {STREAMS} streams"
    ));
    let started = Instant::now();
    seed(&path, count).await?;
    let seeding = started.elapsed();

    let store = SqliteStore::open(&path).await?;
    let router = sourceflow_inspect::router(std::sync::Arc::new(store));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let server = tokio::spawn(async move { axum::serve(listener, router).await });

    let label = if settings.quick {
        "(100,000 events, quick)"
    } else {
        "(1,000,000 events)"
    };
    // A correlation id of the seed: command 42's.
    let correlation = "00000000-0000-7000-9000-00000000002a";
    let pages: [(&str, String, String, bool); 6] = [
        (
            "overview",
            "/".to_owned(),
            format!("id=\"head\">{count}<"),
            true,
        ),
        (
            "a stream's page",
            format!("/stream?type={TYPE}&id=s-000042"),
            "id=\"command-1\"".to_owned(),
            true,
        ),
        (
            "a type's first page of streams",
            format!("/streams?type={TYPE}"),
            "s-000049".to_owned(),
            false,
        ),
        (
            "a prefix search",
            format!("/streams?type={TYPE}&prefix=s-0999"),
            "s-099912".to_owned(),
            false,
        ),
        (
            "a page of the global log",
            format!("/log?after={}", count / 2),
            format!("<td class=\"num\">{}</td>", count / 2 + 1),
            false,
        ),
        (
            "a correlation trace (a scan of both logs)",
            format!("/trace?correlation={correlation}"),
            "1 commands and 1 events".to_owned(),
            false,
        ),
    ];
    let mut rows = Vec::new();
    for (what, target, expect, checked) in pages {
        progress(format!("W11: timing {what}"));
        let samples = if target.starts_with("/trace") {
            TRACE_SAMPLES
        } else {
            SAMPLES
        };
        let ms = latency(&addr, &target, &expect, samples)
            .await
            .with_context(|| format!("W11 {what}"))?
            .as_secs_f64()
            * 1e3;
        let what = format!("inspector: {what} {label}: median latency (ms)");
        let measured = format!("{ms:.1} ms");
        let row = if checked {
            Row::checked("W11", what, measured, ms, Target::AtMost(TARGET_MS))
        } else {
            Row::info("W11", what, measured)
        };
        rows.push(row.note(format!(
            "HTTP over loopback, median of {samples}; seeded in {:.1} s",
            seeding.as_secs_f64()
        )));
    }
    server.abort();
    Ok(rows)
}
