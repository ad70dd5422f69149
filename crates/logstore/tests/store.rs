//! `LogStore` behaviour: round trips, listing, stats, pruning, migration, redaction.
#![allow(clippy::unwrap_used)]

mod common;

use common::{T0, entry};
use rusqlite::Connection;
use uniproxy_logstore::{
    CopiedSpan, LogStore, NewEntry, Query, ROW_OVERHEAD_BYTES, Retention, SCHEMA_VERSION,
    StatsQuery, StatusFilter, StoreError, StoreOptions, Usage, redact_headers,
};

fn temp_store() -> (tempfile::TempDir, LogStore) {
    let dir = tempfile::tempdir().unwrap();
    let store =
        LogStore::open(&dir.path().join("nested/dir/log.db"), StoreOptions::default()).unwrap();
    (dir, store)
}

#[test]
fn insert_get_round_trips_every_field() {
    let (_dir, store) = temp_store();
    let original = NewEntry {
        request_id: "chatcmpl-abc".into(),
        received_ms: T0,
        first_byte_ms: Some(T0 + 120),
        finished_ms: T0 + 950,
        client_model: "gpt-4o".into(),
        actual_model: "claude-sonnet-4-20250514".into(),
        platform: "anthropic".into(),
        stream: true,
        status: 499,
        error_type: Some("client_closed".into()),
        error_message: Some("client went away after 3 chunks".into()),
        usage: Usage {
            prompt_tokens: Some(1_234),
            completion_tokens: Some(56),
            total_tokens: Some(1_290),
            cached_tokens: Some(1_000),
            reasoning_tokens: Some(7),
        },
        client_request: r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"héllo \u0000 ✓"}]}"#
            .into(),
        upstream_request: r#"{"model":"claude-sonnet-4-20250514","max_tokens":4096}"#.into(),
        upstream_copies: Vec::new(),
        response: r#"{"role":"assistant","content":"partial"}"#.into(),
        raw_chunks: Some("data: {\"a\":1}\n\ndata: [DONE]\n\n".into()),
        client_addr: Some("[::1]:51234".into()),
        user_agent: Some("openai-python/1.50".into()),
        request_headers: r#"{"content-type":"application/json","x-request-id":"r1"}"#.into(),
        dropped_fields: vec!["logit_bias".into(), "seed".into()],
        key_hash: Some("9f86d0".into()),
        attempts: 3,
    };
    let id = store.insert(&original).unwrap();
    let got = store.get(id).unwrap().unwrap();
    assert_eq!(got.id, id);
    assert_eq!(got.entry, original);
    assert_eq!(got.latency_ms, 950);
    assert_eq!(got.ttft_ms, Some(120));

    // Every optional field absent also round-trips.
    let bare = NewEntry {
        request_id: "bare".into(),
        received_ms: T0,
        finished_ms: T0,
        ..NewEntry::default()
    };
    let id = store.insert(&bare).unwrap();
    let got = store.get(id).unwrap().unwrap();
    assert_eq!(got.entry, NewEntry { request_headers: "{}".into(), ..bare });
    assert_eq!(got.ttft_ms, None);
    assert!(store.get(id + 100).unwrap().is_none());
    assert_eq!(store.count().unwrap(), 2);
    assert!(store.integrity_check().unwrap());
    assert!(store.size_bytes().unwrap() > 0);
}

/// An entry whose upstream request is its client request with the model moved and rewritten,
/// as an OpenAI-compatible upstream gets it, and the runs that say so.
fn copied_entry(i: u64) -> NewEntry {
    let messages =
        format!(r#""messages":[{{"role":"user","content":"héllo {i} ✓ a question long enough"}}]"#);
    let client = format!(r#"{{"model":"alias",{messages},"stream":false}}"#);
    let upstream = format!(r#"{{{messages},"model":"gpt-4o-mini","stream":false}}"#);
    let from = client.find(&messages).unwrap();
    NewEntry {
        upstream_copies: vec![CopiedSpan { at: 1, from, len: messages.len() }],
        client_request: client,
        upstream_request: upstream,
        ..entry(i)
    }
}

#[test]
fn an_upstream_request_of_the_clients_bytes_is_stored_once_and_read_whole() {
    let (dir, store) = temp_store();
    let original = copied_entry(1);
    let id = store.insert(&original).unwrap();
    assert_eq!(store.get(id).unwrap().unwrap().entry, original);

    // What the row holds: the bytes between the runs, and the runs.
    let conn = Connection::open(dir.path().join("nested/dir/log.db")).unwrap();
    let (kept, spans): (String, String) = conn
        .query_row(
            "SELECT upstream_request, upstream_copies FROM bodies WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(kept, r#"{,"model":"gpt-4o-mini","stream":false}"#);
    let s = original.upstream_copies[0];
    assert_eq!(spans, format!("[[1,{},{}]]", s.from, s.len));
    let summary = store.list(&Query::default()).unwrap().items.remove(0);
    let stored = original.request_headers.len()
        + original.client_request.len()
        + kept.len()
        + spans.len()
        + original.response.len();
    assert_eq!(summary.body_bytes, u64::try_from(stored).unwrap(), "the bytes stored");

    // A search sees the whole request: text across a run's edge is found; the client request
    // has `{"model":"alias","messages"`, so only the rebuilt upstream request has this.
    let search = |text: &str| {
        store.list(&Query { search: Some(text.into()), ..Query::default() }).unwrap().items.len()
    };
    assert_eq!(search(r#"{"messages":[{"role""#), 1);
    assert_eq!(search(r#"enough"}],"model":"gpt-4o-mini""#), 1);
    assert_eq!(search(r#"{,"model""#), 0, "the stored remainder is not the request");

    // Runs that do not hold leave the request whole, and nothing is lost.
    for spans in [
        vec![CopiedSpan { at: 2, from: 0, len: 10 }],
        vec![CopiedSpan { at: 1, from: s.from, len: s.len + 100 }],
    ] {
        let bad = NewEntry { upstream_copies: spans, ..copied_entry(2) };
        let id = store.insert(&bad).unwrap();
        let got = store.get(id).unwrap().unwrap().entry;
        assert_eq!(got.upstream_request, bad.upstream_request);
        assert!(got.upstream_copies.is_empty());
    }

    // A damaged row is an error to read, not a panic or a wrong request; a search goes on.
    let id = store.insert(&copied_entry(3)).unwrap();
    conn.execute("UPDATE bodies SET upstream_copies = '[[1,0,99999]]' WHERE id = ?1", [id])
        .unwrap();
    let err = store.get(id).unwrap_err();
    assert!(matches!(err, StoreError::UpstreamCopies { id: i } if i == id), "{err}");
    conn.execute("UPDATE bodies SET upstream_copies = 'nonsense' WHERE id = ?1", [id]).unwrap();
    let err = store.get(id).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { column: "upstream_copies", .. }), "{err}");
    assert_eq!(search("héllo 3"), 1);
    assert_eq!(search(r#"{"messages""#), 3, "all but the damaged row");
}

#[test]
fn insert_missing_stores_what_the_batch_span_does_not_hold() {
    let (_dir, store) = temp_store();
    // Entries 1 and 3 are stored; the batch holds 0 to 4, and 2 twice.
    store.insert_batch(&[entry(1), entry(3)]).unwrap();
    let batch = [entry(0), entry(1), entry(2), entry(2), entry(3), entry(4)];
    assert_eq!(store.insert_missing(&batch).unwrap(), 4, "0, 2 twice, 4");
    assert_eq!(store.insert_missing(&batch).unwrap(), 0);
    assert_eq!(store.insert_missing(&[]).unwrap(), 0);
    assert_eq!(store.count().unwrap(), 6);
    // The check reads the batch's time span only: an id stored at another time is another
    // request (ids are the client's to choose when it sends one).
    let mut later = entry(1);
    later.received_ms += 3_600_000;
    assert_eq!(store.insert_missing(&[later]).unwrap(), 1);
    let ids: Vec<String> =
        store.list(&Query::default()).unwrap().items.into_iter().map(|e| e.request_id).collect();
    assert_eq!(
        ids,
        [1, 4, 3, 2, 2, 1, 0].map(|i| format!("chatcmpl-{i:06}")),
        "newest first, each stored entry once"
    );
}

#[test]
fn list_filters_and_keyset_paging() {
    let (_dir, store) = temp_store();
    let mut batch = Vec::new();
    for i in 0..100 {
        let mut e = entry(i);
        if i % 10 == 3 {
            e.status = 500;
            e.error_type = Some("upstream_error".into());
            e.error_message = Some(format!("boom number {i}"));
        }
        if i % 10 == 7 {
            e.status = 429;
        }
        if i % 4 == 0 {
            e.client_model = "claude".into();
            e.actual_model = "claude-3-5".into();
        }
        if i == 42 {
            e.response = r#"{"content":"the needle_in 100% haystack"}"#.into();
        }
        if i == 61 {
            // An id no body holds (an OpenAI-compatible upstream's answer keeps its own).
            e.request_id = "chatcmpl-proxy-own-61".into();
        }
        batch.push(e);
    }
    store.insert_batch(&batch).unwrap();

    // Newest first, paged by cursor, with every entry exactly once.
    let mut seen = Vec::new();
    let mut query = Query { limit: 7, with_total: true, ..Query::default() };
    loop {
        let page = store.list(&query).unwrap();
        assert_eq!(page.total, Some(100));
        seen.extend(page.items.iter().map(|e| e.id));
        match page.next_before_id {
            Some(cursor) => query.before_id = Some(cursor),
            None => break,
        }
    }
    assert_eq!(seen.len(), 100);
    // Entries were received in id order here, so newest first means ids down.
    assert!(seen.windows(2).all(|w| w[0] > w[1]), "ids must strictly decrease");

    let count = |q: Query| store.list(&Query { limit: 1000, ..q }).unwrap().items;
    let errors = count(Query { status: Some(StatusFilter::Error), ..Query::default() });
    assert_eq!(errors.len(), 20);
    let fives = count(Query { status: Some("5xx".parse().unwrap()), ..Query::default() });
    assert_eq!(fives.len(), 10);
    assert!(fives.iter().all(|e| e.status == 500));
    let exact = count(Query { status: Some(StatusFilter::Exact(429)), ..Query::default() });
    assert_eq!(exact.len(), 10);
    assert!(exact.iter().all(|e| e.status == 429));
    let ok = count(Query { status: Some(StatusFilter::Exact(200)), ..Query::default() });
    assert_eq!(ok.len(), 80);
    assert!(ok.iter().all(|e| e.status == 200));
    let total = |status| {
        store
            .list(&Query { status: Some(status), with_total: true, ..Query::default() })
            .unwrap()
            .total
    };
    assert_eq!(total(StatusFilter::Exact(429)), Some(10));
    assert_eq!(total(StatusFilter::Exact(200)), Some(80));
    assert_eq!(total(StatusFilter::Exact(404)), Some(0));
    assert_eq!(count(Query { status: Some(StatusFilter::Class(2)), ..Query::default() }).len(), 80);

    // The model filter matches either the client or the actual model.
    assert_eq!(count(Query { model: Some("claude".into()), ..Query::default() }).len(), 25);
    assert_eq!(count(Query { model: Some("claude-3-5".into()), ..Query::default() }).len(), 25);
    assert_eq!(count(Query { stream: Some(true), ..Query::default() }).len(), 50);

    // Time range: [T0 + 10 s, T0 + 20 s) holds entries 10..20.
    let range =
        count(Query { from_ms: Some(T0 + 10_000), to_ms: Some(T0 + 20_000), ..Query::default() });
    let ids: Vec<_> = range.iter().map(|e| e.request_id.clone()).collect();
    assert_eq!(ids.first().map(String::as_str), Some("chatcmpl-000019"));
    assert_eq!(ids.len(), 10);

    // Search covers the request id, bodies and the error message; LIKE wildcards are literal.
    let by_id = count(Query { search: Some("proxy-own-61".into()), ..Query::default() });
    assert_eq!(
        by_id.iter().map(|e| e.request_id.as_str()).collect::<Vec<_>>(),
        ["chatcmpl-proxy-own-61"]
    );
    let hits = count(Query { search: Some("needle_in 100%".into()), ..Query::default() });
    assert_eq!(hits.iter().map(|e| e.request_id.as_str()).collect::<Vec<_>>(), ["chatcmpl-000042"]);
    assert!(count(Query { search: Some("needle%haystack".into()), ..Query::default() }).is_empty());
    assert_eq!(count(Query { search: Some("boom number 53".into()), ..Query::default() }).len(), 1);
    assert_eq!(count(Query { search: Some("QUESTION 77".into()), ..Query::default() }).len(), 1);

    // Filters combine with AND, and with paging: errors (i % 10 in {3, 7},
    // all odd, so never streamed) received from entry 50 on.
    let q = Query {
        status: Some(StatusFilter::Error),
        stream: Some(false),
        from_ms: Some(T0 + 50_000),
        limit: 4,
        with_total: true,
        ..Query::default()
    };
    let page = store.list(&q).unwrap();
    assert_eq!(page.total, Some(10));
    assert_eq!(page.items.len(), 4);
    assert_eq!(page.items[0].request_id, "chatcmpl-000097");
    let next = store.list(&Query { before_id: page.next_before_id, ..q.clone() }).unwrap();
    assert_eq!(next.items[0].request_id, "chatcmpl-000077");
    assert_eq!(next.total, Some(10), "the total ignores the cursor");

    assert!("6xx".parse::<StatusFilter>().is_err());
    assert!("abc".parse::<StatusFilter>().is_err());
    assert_eq!("error".parse::<StatusFilter>().unwrap(), StatusFilter::Error);
}

#[test]
fn listing_follows_receive_time_and_survives_ties() {
    let (_dir, store) = temp_store();
    // Written out of receive order (a long request finishes last), with ties.
    let times = [5, 1, 3, 3, 3, 9, 2];
    let batch: Vec<_> = times
        .iter()
        .enumerate()
        .map(|(i, t)| NewEntry { received_ms: T0 + t, ..entry(i as u64) })
        .collect();
    store.insert_batch(&batch).unwrap();
    let mut order = Vec::new();
    let mut query = Query { limit: 2, ..Query::default() };
    loop {
        let page = store.list(&query).unwrap();
        order.extend(page.items.iter().map(|e| (e.received_ms - T0, e.id)));
        match page.next_before_id {
            Some(cursor) => query.before_id = Some(cursor),
            None => break,
        }
    }
    assert_eq!(order, [(9, 6), (5, 1), (3, 5), (3, 4), (3, 3), (2, 7), (1, 2)]);

    // A cursor whose entry was pruned meanwhile ends the listing.
    let page = store.list(&Query { before_id: Some(1_000), ..Query::default() }).unwrap();
    assert!(page.items.is_empty());
    assert_eq!(page.next_before_id, None);
}

#[test]
fn stats_percentiles_on_known_data() {
    let (_dir, store) = temp_store();
    // Latencies 1..=100 ms and TTFT 1..=100 / 2, one request per second.
    let batch: Vec<_> = (1..=100u64)
        .map(|i| {
            let mut e = entry(i);
            let latency = i64::try_from(i).unwrap();
            e.finished_ms = e.received_ms + latency;
            e.first_byte_ms = Some(e.received_ms + latency / 2);
            if i > 90 {
                e.status = 502;
            }
            e
        })
        .collect();
    store.insert_batch(&batch).unwrap();

    let stats =
        store.stats(&StatsQuery { bucket_ms: Some(10_000), ..StatsQuery::default() }).unwrap();
    assert_eq!(stats.requests, 100);
    assert_eq!(stats.errors, 10);
    assert!((stats.error_rate - 0.1).abs() < 1e-9);
    assert_eq!(stats.prompt_tokens, 1_000);
    assert_eq!(stats.total_tokens, 1_500);
    let latency = stats.latency.unwrap();
    assert_eq!((latency.p50, latency.p90, latency.p99), (50, 90, 99));
    // TTFT over the 90 answered without error: 1/2..=90/2.
    let ttft = stats.ttft.unwrap();
    assert_eq!((ttft.p50, ttft.p90, ttft.p99), (22, 40, 45));

    // Entry i arrives at T0 + i s; T0 is a multiple of 10 s, so bucket k holds i in 10k..10k+9.
    assert_eq!(stats.series.len(), 11);
    let first = stats.series[0];
    assert_eq!((first.start_ms, first.requests, first.p50_latency_ms), (T0, 9, 5));
    let b9 = stats.series[9];
    assert_eq!((b9.requests, b9.errors, b9.tokens), (10, 9, 150));
    assert_eq!(stats.series.iter().map(|b| b.requests).sum::<u64>(), 100);

    // A range: requests 11..=20.
    let ranged = store
        .stats(&StatsQuery {
            from_ms: Some(T0 + 11_000),
            to_ms: Some(T0 + 21_000),
            ..StatsQuery::default()
        })
        .unwrap();
    assert_eq!(ranged.requests, 10);
    assert_eq!(ranged.latency.unwrap().p50, 15);
    assert!(ranged.series.is_empty());

    let empty = store
        .stats(&StatsQuery { from_ms: Some(0), to_ms: Some(1), ..StatsQuery::default() })
        .unwrap();
    assert_eq!(empty.requests, 0);
    assert_eq!(empty.latency, None);
    assert_eq!(empty.error_rate, 0.0);
}

#[test]
fn requests_the_proxy_refused_itself_leave_the_percentiles_alone() {
    let (_dir, store) = temp_store();
    let mut batch: Vec<_> = (1..=10u64)
        .map(|i| {
            let mut e = entry(i);
            e.finished_ms = e.received_ms + 100 * i64::try_from(i).unwrap();
            e.first_byte_ms = Some(e.received_ms + 10);
            e
        })
        .collect();
    // Thirty refused before the upstream was asked (a wrong key): answered at once.
    batch.extend((11..=40u64).map(|i| {
        let mut e = entry(i);
        (e.status, e.attempts) = (401, 0);
        e.error_type = Some("authentication_error".into());
        e.finished_ms = e.received_ms;
        e.first_byte_ms = Some(e.received_ms);
        e
    }));
    store.insert_batch(&batch).unwrap();
    let stats = store.stats(&StatsQuery { bucket_ms: Some(60_000), ..StatsQuery::default() });
    let stats = stats.unwrap();
    assert_eq!((stats.requests, stats.errors), (40, 30), "counted as requests and errors");
    let latency = stats.latency.unwrap();
    assert_eq!((latency.p50, latency.p99), (500, 1000), "the ten that asked the model");
    assert_eq!(stats.ttft.unwrap().p50, 10);
    assert_eq!(stats.series[0].p50_latency_ms, 500);
}

#[test]
fn token_counts_an_upstream_made_huge_saturate_the_sums() {
    // Stored saturated at i64::MAX each (a broken or hostile server said 2^63 + 5): three of
    // them are more than a u64 holds.
    let (_dir, store) = temp_store();
    let batch: Vec<_> = (1..=3u64)
        .map(|i| {
            let mut e = entry(i);
            e.usage.prompt_tokens = Some(u64::MAX);
            e.usage.total_tokens = Some(u64::MAX);
            e
        })
        .collect();
    store.insert_batch(&batch).unwrap();
    let stats = store.stats(&StatsQuery { bucket_ms: Some(60_000), ..StatsQuery::default() });
    let stats = stats.unwrap();
    assert_eq!((stats.prompt_tokens, stats.total_tokens), (u64::MAX, u64::MAX));
    assert_eq!(stats.series[0].tokens, u64::MAX);
}

fn big_entry(i: u64) -> NewEntry {
    let mut e = entry(i);
    e.response = "x".repeat(20_000);
    e
}

#[test]
fn prune_by_age_rows_and_bytes_reclaims_space() {
    let (dir, store) = temp_store();
    let batch: Vec<_> = (0..600).map(big_entry).collect();
    store.insert_batch(&batch).unwrap();
    store.reclaim_space().unwrap();
    let path = dir.path().join("nested/dir/log.db");
    let file_before = std::fs::metadata(&path).unwrap().len();

    // Entry i was received at T0 + i s. With now = T0 + 1 day + 300 s, a
    // one-day limit drops entries 0..300.
    let now = T0 + 86_400_000 + 300_000;
    let report = store
        .prune(&Retention {
            older_than_days: Some(1),
            max_rows: None,
            max_bytes: None,
            now_ms: now,
        })
        .unwrap();
    assert_eq!(report.deleted_by_age, 300);
    assert_eq!(store.count().unwrap(), 300);
    assert!(report.size_after < report.size_before / 2 + 200_000, "{report:?}");
    let file_after = std::fs::metadata(&path).unwrap().len();
    assert!(file_after < file_before * 6 / 10, "file {file_before} -> {file_after}");
    let oldest = store.list(&Query { limit: 1000, ..Query::default() }).unwrap().items;
    assert_eq!(oldest.last().unwrap().request_id, "chatcmpl-000300");
    assert!(store.get(1).unwrap().is_none());

    let report = store
        .prune(&Retention { max_rows: Some(120), now_ms: now, ..Retention::default() })
        .unwrap();
    assert_eq!(report.deleted_by_rows, 180);
    assert_eq!(store.count().unwrap(), 120);
    let page = store.list(&Query { limit: 1000, ..Query::default() }).unwrap().items;
    assert_eq!(page.last().unwrap().request_id, "chatcmpl-000480");

    // About 20 KB each: 50 entries fit in 1.1 MB.
    let report = store
        .prune(&Retention { max_bytes: Some(1_100_000), now_ms: now, ..Retention::default() })
        .unwrap();
    assert_eq!(store.count().unwrap(), 120 - report.deleted_by_bytes);
    assert!((50..=53).contains(&store.count().unwrap()), "{report:?}");
    assert!(store.size_bytes().unwrap() < 1_500_000, "{report:?}");

    // Nothing to do is a no-op.
    let report = store
        .prune(&Retention { max_rows: Some(1_000), now_ms: now, ..Retention::default() })
        .unwrap();
    assert_eq!(report.deleted(), 0);
    assert!(store.integrity_check().unwrap());
}

#[test]
fn prune_in_place_deletes_and_leaves_the_space_to_new_entries() {
    let (_dir, store) = temp_store();
    let batch: Vec<_> = (0..300).map(big_entry).collect();
    store.insert_batch(&batch).unwrap();
    store.reclaim_space().unwrap();
    let retention = Retention { max_rows: Some(100), now_ms: T0, ..Retention::default() };

    let report = store.prune_in_place(&retention).unwrap();
    assert_eq!(report.deleted_by_rows, 200);
    assert_eq!(store.count().unwrap(), 100);
    let page = store.list(&Query { limit: 1000, ..Query::default() }).unwrap().items;
    assert_eq!(page.last().unwrap().request_id, "chatcmpl-000200");
    // No checkpoint, no vacuum: the freed pages stay in the file for new entries.
    assert!(report.size_after >= report.size_before, "{report:?}");
    // Pruning gives them back.
    let report = store.prune(&retention).unwrap();
    assert_eq!(report.deleted(), 0);
    let report = store.prune(&Retention { max_rows: Some(10), ..retention }).unwrap();
    assert_eq!(report.deleted_by_rows, 90);
    assert!(report.size_after < report.size_before / 2, "{report:?}");
    assert!(store.integrity_check().unwrap());
}

/// Entries 10..15 written first, then 0..5 (older: a spill file replayed, streams that
/// ran long): ids out of step with age.
fn store_written_out_of_age_order() -> (tempfile::TempDir, LogStore) {
    let (dir, store) = temp_store();
    let newer: Vec<_> = (10..15).map(big_entry).collect();
    let older: Vec<_> = (0..5).map(big_entry).collect();
    store.insert_batch(&newer).unwrap();
    store.insert_batch(&older).unwrap();
    (dir, store)
}

fn kept(store: &LogStore) -> Vec<String> {
    let page = store.list(&Query { limit: 100, ..Query::default() }).unwrap().items;
    let mut ids: Vec<String> = page.into_iter().map(|e| e.request_id).collect();
    ids.sort();
    ids
}

#[test]
fn prune_by_rows_and_bytes_drops_the_oldest_received_not_the_first_written() {
    let newest: Vec<String> = (10..15).map(|i| format!("chatcmpl-{i:06}")).collect();
    let now = T0 + 60_000;

    let (_dir, store) = store_written_out_of_age_order();
    let report =
        store.prune(&Retention { max_rows: Some(5), now_ms: now, ..Retention::default() }).unwrap();
    assert_eq!(report.deleted_by_rows, 5);
    assert_eq!(kept(&store), newest);

    let (_dir, store) = store_written_out_of_age_order();
    // About 20 KB each: five fit.
    let budget = 5 * (20_000 + 2_000 + ROW_OVERHEAD_BYTES);
    let report =
        store.prune(&Retention { max_bytes: Some(budget), now_ms: now, ..Retention::default() });
    assert_eq!(report.unwrap().deleted_by_bytes, 5);
    assert_eq!(kept(&store), newest);

    // By age, the same: everything received before entry 10.
    let (_dir, store) = store_written_out_of_age_order();
    let day_later = T0 + 10_000 + 86_400_000;
    let report = store
        .prune(&Retention { older_than_days: Some(1), now_ms: day_later, ..Retention::default() })
        .unwrap();
    assert_eq!(report.deleted_by_age, 5);
    assert_eq!(kept(&store), newest);
}

#[test]
fn migrates_from_version_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    {
        // A database as the first release wrote it.
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(include_str!("../src/migrations/001_initial.sql")).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute(
            "INSERT INTO requests (request_id, received_ms, finished_ms, latency_ms, client_model, actual_model, \
             platform, stream, status, total_tokens) VALUES ('old-1', ?1, ?2, 250, 'gpt-4', 'gpt-4', 'openai', 0, 200, 42)",
            [T0, T0 + 250],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO bodies (id, request_headers, client_request, upstream_request, response) \
             VALUES (1, '{}', '{\"a\":1}', '{\"a\":1}', '{\"ok\":true}')",
            [],
        )
        .unwrap();
    }
    let store = LogStore::open(&path, StoreOptions::default()).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    const { assert!(SCHEMA_VERSION >= 2) };
    let page_size: i64 =
        Connection::open(&path).unwrap().query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
    assert_eq!(page_size, 4096, "an existing file keeps its page size");

    let old = store.get(1).unwrap().unwrap();
    assert_eq!(old.entry.request_id, "old-1");
    assert_eq!(old.entry.usage.total_tokens, Some(42));
    assert_eq!(old.entry.attempts, 1, "the v2 default");
    assert!(old.entry.dropped_fields.is_empty());
    assert_eq!(old.entry.raw_chunks, None);
    let summary = &store.list(&Query::default()).unwrap().items[0];
    assert_eq!(summary.body_bytes, 2 + 7 + 7 + 11, "backfilled from the bodies");

    // New rows use the new columns, and reopening is a no-op.
    let mut e = entry(1);
    e.attempts = 2;
    let id = store.insert(&e).unwrap();
    drop(store);
    let store = LogStore::open(&path, StoreOptions::default()).unwrap();
    assert_eq!(store.get(id).unwrap().unwrap().entry.attempts, 2);
    assert_eq!(store.count().unwrap(), 2);

    // A file from a newer build is refused rather than damaged.
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    drop(store);
    let err = LogStore::open(&path, StoreOptions::default()).unwrap_err();
    assert!(matches!(err, uniproxy_logstore::StoreError::SchemaVersion { .. }), "{err}");
}

#[test]
fn fresh_database_uses_wal_and_incremental_vacuum() {
    let (dir, store) = temp_store();
    drop(store);
    let conn = Connection::open(dir.path().join("nested/dir/log.db")).unwrap();
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    let vacuum: i64 = conn.query_row("PRAGMA auto_vacuum", [], |r| r.get(0)).unwrap();
    let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    assert_eq!(vacuum, 2, "INCREMENTAL");
    assert_eq!(page_size, 16_384);
    let indexes: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'index' AND name LIKE 'requests_%' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(indexes, ["requests_failed", "requests_received_ms"]);
}

#[test]
fn headers_written_by_the_builder_are_stored_as_written() {
    let (_dir, store) = temp_store();
    let mut e = entry(1);
    let mut headers = uniproxy_logstore::HeadersBuilder::with_capacity(128);
    headers.header("Content-Type", b"application/json");
    headers.header("X-Goog-Api-Key", b"AIza-secret");
    headers.header_values("cookie", [&b"a=1"[..], b"b=2"]);
    e.request_headers = headers.finish();
    let id = store.insert(&e).unwrap();
    let stored = store.get(id).unwrap().unwrap().entry.request_headers;
    assert_eq!(
        stored,
        r#"{"Content-Type":"application/json","X-Goog-Api-Key":"[redacted]","cookie":["[redacted]","[redacted]"]}"#
    );
    // Read back, it is text the store redacted: written again, it is kept as it is.
    let mut again = entry(2);
    again.request_headers = stored.clone();
    let id = store.insert(&again).unwrap();
    assert_eq!(store.get(id).unwrap().unwrap().entry.request_headers, stored);
}

#[test]
fn secret_headers_are_redacted() {
    let (_dir, store) = temp_store();
    let mut e = entry(1);
    e.request_headers = r#"{"Authorization":"Bearer sk-live-123","API-Key":"k1","x-api-key":"k2",
        "x-goog-api-key":"k3","proxy-authorization":"Basic eA==","Cookie":["a=1","b=2"],
        "content-type":"application/json"}"#
        .into();
    let id = store.insert(&e).unwrap();
    let stored = store.get(id).unwrap().unwrap().entry.request_headers;
    for secret in ["sk-live-123", "k1", "k2", "k3", "eA==", "a=1"] {
        assert!(!stored.contains(secret), "{secret} leaked: {stored:?}");
    }
    let v: serde_json::Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(v["Authorization"], "[redacted]");
    assert_eq!(v["Cookie"], "[redacted]");
    assert_eq!(v["content-type"], "application/json");

    // Pair and name/value shapes, and text that is not JSON.
    let pairs = redact_headers(r#"[["authorization","Bearer x"],["accept","*/*"]]"#);
    assert_eq!(pairs, r#"[["authorization","[redacted]"],["accept","*/*"]]"#);
    let named = redact_headers(r#"[{"name":"X-Api-Key","value":"s"},{"name":"a","value":"b"}]"#);
    assert_eq!(named, r#"[{"name":"X-Api-Key","value":"[redacted]"},{"name":"a","value":"b"}]"#);
    assert!(!redact_headers("authorization: Bearer sk-1").contains("sk-1"));
    let clean = r#"{ "accept" : "*/*" }"#;
    assert_eq!(redact_headers(clean), clean, "untouched text is kept byte for byte");
}

#[test]
fn in_memory_store_works() {
    let store = LogStore::open_in_memory().unwrap();
    store.insert_batch(&[entry(1), entry(2)]).unwrap();
    assert_eq!(store.count().unwrap(), 2);
    assert_eq!(store.list(&Query::default()).unwrap().items[0].request_id, "chatcmpl-000002");
}

#[test]
fn another_programs_database_is_refused_whole_not_added_to() {
    let dir = tempfile::tempdir().unwrap();
    // What a Python service of its own kind keeps: a `requests` table (uniproxy's name too),
    // and one that is not.
    let path = dir.path().join("logs.db");
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(
        "CREATE TABLE requests (id INTEGER PRIMARY KEY, created_at TEXT, model TEXT, prompt TEXT);
         CREATE TABLE users (id INTEGER PRIMARY KEY);
         INSERT INTO requests (created_at, model, prompt) VALUES ('2025-01-01', 'gpt-4o', 'hi');",
    )
    .unwrap();
    drop(conn);
    assert_eq!(LogStore::foreign_tables(&path).unwrap(), ["requests", "users"]);
    for read_only in [false, true] {
        let options = StoreOptions { read_only, ..StoreOptions::default() };
        match LogStore::open(&path, options) {
            Err(StoreError::Foreign { tables }) => assert_eq!(tables, ["requests", "users"]),
            other => panic!("read_only {read_only}: {:?}", other.map(|_| ())),
        }
    }
    // Nothing of uniproxy's was added, and the other program's rows are as they were.
    let conn = Connection::open(&path).unwrap();
    let tables: i64 =
        conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0)).unwrap();
    assert_eq!(tables, 2);
    let version: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(version, 0);

    // A file of uniproxy's own, a fresh one and none at all have no foreign tables.
    let own = dir.path().join("own.db");
    drop(LogStore::open(&own, StoreOptions::default()).unwrap());
    assert!(LogStore::foreign_tables(&own).unwrap().is_empty());
    let fresh = dir.path().join("fresh.db");
    drop(Connection::open(&fresh).unwrap());
    assert!(LogStore::foreign_tables(&fresh).unwrap().is_empty());
    assert!(LogStore::foreign_tables(&dir.path().join("none.db")).unwrap().is_empty());
}

#[test]
fn a_current_database_opens_while_another_process_holds_its_write_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    drop(LogStore::open(&path, StoreOptions::default()).unwrap());
    let writer = Connection::open(&path).unwrap();
    writer.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let options = StoreOptions {
        busy_timeout: std::time::Duration::from_millis(50),
        ..StoreOptions::default()
    };
    // Nothing to migrate: no write lock wanted, so no 'cannot migrate ... database is locked'.
    let store = LogStore::open(&path, options).unwrap();
    assert_eq!(store.list(&Query::default()).unwrap().items.len(), 0);
    writer.execute_batch("COMMIT").unwrap();
}

#[test]
fn search_finds_text_as_a_json_body_writes_it() {
    let (_dir, store) = temp_store();
    let mut quoted = entry(1);
    quoted.client_request =
        r#"{"messages":[{"role":"user","content":"Er sagte \"Anna\",\nund ging"}]}"#.into();
    let mut escaped = entry(2);
    // Python's json.dumps writes non-ASCII as \u escapes.
    escaped.client_request =
        r#"{"messages":[{"role":"user","content":"Gr\u00fc\u00dfe aus Z\u00fcrich \ud83d\ude00"}]}"#
            .into();
    let mut raw = entry(3);
    raw.response = r#"{"content":"Grüße, C:\\temp"}"#.into();
    store.insert_batch(&[quoted, escaped, raw]).unwrap();
    let found = |text: &str| -> Vec<String> {
        let page = store.list(&Query { search: Some(text.into()), ..Query::default() }).unwrap();
        let mut ids: Vec<String> = page.items.into_iter().map(|e| e.request_id).collect();
        ids.sort();
        ids
    };
    assert_eq!(found(r#"sagte "Anna""#), ["chatcmpl-000001"]);
    assert_eq!(found("Anna\",\nund"), ["chatcmpl-000001"]);
    assert_eq!(found("Grüße"), ["chatcmpl-000002", "chatcmpl-000003"]);
    assert_eq!(found("zürich 😀"), ["chatcmpl-000002"]);
    assert_eq!(found(r"C:\temp"), ["chatcmpl-000003"]);
    // As before: the plain text of plain bodies, and nothing that is not there.
    assert_eq!(found("ging"), ["chatcmpl-000001"]);
    assert!(found("Grüsse").is_empty());
}

#[test]
fn a_search_of_the_longest_length_runs_whatever_its_characters() {
    let (_dir, store) = temp_store();
    store.insert_batch(&[entry(1)]).unwrap();
    // Each of these grows most in one of the search's forms: `\u0001` (6 bytes, then its
    // backslash escaped for LIKE), `\\` escaped twice, an astral character as two `\u`
    // escapes, and `%` escaped for LIKE.
    for unit in ["\u{1}", "\\", "😀", "%", "ü", "a"] {
        let text = unit.repeat(uniproxy_logstore::MAX_SEARCH_BYTES / unit.len());
        let page = store.list(&Query { search: Some(text), ..Query::default() });
        assert!(page.is_ok(), "{unit:?}: {page:?}");
    }
}

#[test]
fn a_search_with_a_nul_finds_only_bodies_that_have_one() {
    let (_dir, store) = temp_store();
    let mut nul = entry(1);
    nul.client_request = r#"{"messages":[{"role":"user","content":"a\u0000b"}]}"#.into();
    let mut other = entry(2);
    other.client_request = r#"{"messages":[{"role":"user","content":"a"}]}"#.into();
    other.error_message = Some("ends with a".into());
    store.insert_batch(&[nul, other]).unwrap();
    let found = |text: &str| -> Vec<String> {
        let page = store.list(&Query { search: Some(text.into()), ..Query::default() }).unwrap();
        page.items.into_iter().map(|e| e.request_id).collect()
    };
    // SQLite ends a LIKE pattern at a NUL: `%\0%` was `%`, every row, and `%a\0b%` was `%a`.
    assert_eq!(found("\0"), ["chatcmpl-000001"]);
    assert_eq!(found("a\0b"), ["chatcmpl-000001"]);
    assert_eq!(found("\0zzz"), Vec::<String>::new());
}

#[test]
fn pruning_every_entry_leaves_none_of_their_text_in_the_files() {
    // `logs prune --all` is how an operator removes a secret pasted into a prompt: the
    // deleted entries' text must not stay behind in the database's pages.
    let (dir, store) = temp_store();
    let secret = "sk-live-PASTED-BY-MISTAKE-0123456789";
    let batch: Vec<_> = (0..50)
        .map(|i| {
            let mut e = if i % 2 == 0 { big_entry(i) } else { entry(i) };
            e.client_request =
                format!(r#"{{"messages":[{{"role":"user","content":"{secret}"}}]}}"#);
            e
        })
        .collect();
    store.insert_batch(&batch).unwrap();
    let report =
        store.prune(&Retention { max_rows: Some(0), now_ms: T0, ..Retention::default() }).unwrap();
    assert_eq!(report.deleted_by_rows, 50);
    assert_eq!(store.count().unwrap(), 0);
    for file in std::fs::read_dir(dir.path().join("nested/dir")).unwrap() {
        let path = file.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let found = bytes.windows(secret.len()).filter(|w| *w == secret.as_bytes()).count();
        let at = bytes.windows(secret.len()).position(|w| w == secret.as_bytes());
        assert_eq!(
            found,
            0,
            "{} still holds the deleted text at {at:?} of {}",
            path.display(),
            bytes.len()
        );
    }
}
