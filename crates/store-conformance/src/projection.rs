//! What every store must do for projections: saved positions that move only from the position
//! a runner read (so two runners never both apply an entry), read-model changes committed with
//! the position or not at all, and range reads of the rows.
//!
//! Values are compared as parsed JSON: PostgreSQL keeps them as `jsonb`, which normalizes key
//! order and whitespace.

use std::sync::Arc;

use ledger::{
    Digest, ReadModelRow, RowChange, RowQuery, SavedProjection, Seq, Store, StoreError, StreamId,
    Timestamp,
};
use serde_json::{json, Value};

/// Runs every projection check against `store` (each on names of its own, so any store works,
/// empty or not).
pub async fn run_all(store: Arc<dyn Store>) {
    no_position_before_the_first_commit(store.as_ref()).await;
    commits_move_the_position(store.as_ref()).await;
    a_stale_position_is_a_conflict_and_changes_nothing(store.as_ref()).await;
    a_failed_commit_writes_nothing(store.as_ref()).await;
    puts_upsert_and_deletes_remove(store.as_ref()).await;
    changes_apply_in_order(store.as_ref()).await;
    queries_by_key_time_and_limit(store.as_ref()).await;
    projections_and_streams_are_separate(store.as_ref()).await;
    reset_forgets_position_and_rows(store.as_ref()).await;
    values_round_trip_as_json(store.as_ref()).await;
    concurrent_runners_one_wins(store.clone()).await;
    a_commit_of_5000_rows(store.as_ref()).await;
}

fn stream(name: &str) -> StreamId {
    StreamId::new(name).expect("a valid stream name")
}

/// A fixed instant plus `micros`.
pub fn at(micros: i64) -> Timestamp {
    Timestamp(1_795_000_000_000_000 + micros)
}

/// A position at `seq` whose hash and state are derived from `seq` (every byte value occurs).
pub fn saved(seq: Seq) -> SavedProjection {
    let mut hash = [0u8; 32];
    for (i, b) in hash.iter_mut().enumerate() {
        *b = (seq as u8).wrapping_mul(31).wrapping_add(i as u8 * 7);
    }
    SavedProjection {
        seq,
        entry_hash: Digest(hash),
        state: (0..=255u8)
            .cycle()
            .skip(seq as usize % 256)
            .take(300 + seq as usize % 7)
            .collect(),
    }
}

pub fn row(table: &str, key: &str, ord: i64, micros: i64, value: Value) -> ReadModelRow {
    ReadModelRow {
        table: table.to_owned(),
        key: key.to_owned(),
        ord,
        at: at(micros),
        value: value.to_string(),
    }
}

pub fn put(table: &str, key: &str, ord: i64, micros: i64, value: Value) -> RowChange {
    RowChange::Put(row(table, key, ord, micros, value))
}

pub fn delete(table: &str, key: &str, ord: i64) -> RowChange {
    RowChange::Delete {
        table: table.to_owned(),
        key: key.to_owned(),
        ord,
    }
}

/// A row as comparable data: its value parsed.
fn parsed(r: &ReadModelRow) -> (String, String, i64, Timestamp, Value) {
    let value = serde_json::from_str(&r.value)
        .unwrap_or_else(|e| panic!("the store returned a value that is not JSON ({e}): {r:?}"));
    (r.table.clone(), r.key.clone(), r.ord, r.at, value)
}

fn parsed_all(rows: &[ReadModelRow]) -> Vec<(String, String, i64, Timestamp, Value)> {
    rows.iter().map(parsed).collect()
}

/// `(key, ord)` of each row, in the order read.
fn keys(rows: &[ReadModelRow]) -> Vec<(String, i64)> {
    rows.iter().map(|r| (r.key.clone(), r.ord)).collect()
}

fn expect_conflict(result: Result<(), StoreError>, what: &str) {
    match result {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("{what}: expected a conflict, got {other:?}"),
    }
}

async fn rows(store: &dyn Store, name: &str, s: &StreamId, q: RowQuery) -> Vec<ReadModelRow> {
    store
        .read_model_rows(name, s, &q)
        .await
        .expect("read_model_rows")
}

async fn all_rows(store: &dyn Store, name: &str, s: &StreamId, table: &str) -> Vec<ReadModelRow> {
    rows(store, name, s, RowQuery::table(table, 100_000)).await
}

pub async fn no_position_before_the_first_commit(store: &dyn Store) {
    let s = stream("proj-empty");
    assert_eq!(store.projection("never", &s).await.unwrap(), None);
    assert!(all_rows(store, "never", &s, "t").await.is_empty());
    // Resetting what was never committed is fine.
    store.reset_projection("never", &s).await.unwrap();
    assert_eq!(store.projection("never", &s).await.unwrap(), None);
}

pub async fn commits_move_the_position(store: &dyn Store) {
    let s = stream("proj-commit");
    let first = saved(3);
    store
        .commit_projection(
            "p",
            &s,
            None,
            &first,
            &[put("t", "a", 0, 1, json!({"n": 1}))],
        )
        .await
        .expect("the first commit, expecting no position");
    assert_eq!(
        store.projection("p", &s).await.unwrap().as_ref(),
        Some(&first),
        "seq, entry_hash and state bytes round-trip exactly"
    );
    let second = saved(10);
    store
        .commit_projection(
            "p",
            &s,
            Some(3),
            &second,
            &[put("t", "b", 0, 2, json!({"n": 2}))],
        )
        .await
        .expect("the second commit, expecting the first's position");
    assert_eq!(store.projection("p", &s).await.unwrap(), Some(second));
    assert_eq!(
        keys(&all_rows(store, "p", &s, "t").await),
        [("a".to_owned(), 0), ("b".to_owned(), 0)]
    );
    // A commit without changes moves the position alone; an empty state is kept as empty.
    let third = SavedProjection {
        seq: 11,
        entry_hash: Digest([0xff; 32]),
        state: Vec::new(),
    };
    store
        .commit_projection("p", &s, Some(10), &third, &[])
        .await
        .unwrap();
    assert_eq!(store.projection("p", &s).await.unwrap(), Some(third));
    // seq 0 (the genesis entry) is a position like any other.
    store
        .commit_projection("p-genesis", &s, None, &saved(0), &[])
        .await
        .unwrap();
    assert_eq!(
        store.projection("p-genesis", &s).await.unwrap(),
        Some(saved(0))
    );
}

pub async fn a_stale_position_is_a_conflict_and_changes_nothing(store: &dyn Store) {
    let s = stream("proj-stale");
    let t = "t";
    store
        .commit_projection(
            "p",
            &s,
            None,
            &saved(5),
            &[
                put(t, "keep", 0, 1, json!({"v": "original"})),
                put(t, "doomed", 0, 2, json!({"v": "still here"})),
            ],
        )
        .await
        .unwrap();
    let before = all_rows(store, "p", &s, t).await;
    let losing_changes = [
        put(t, "new", 0, 3, json!({"v": "must not appear"})),
        put(t, "keep", 0, 4, json!({"v": "must not replace"})),
        delete(t, "doomed", 0),
    ];
    // A runner that read seq 3, after another moved it to 5.
    expect_conflict(
        store
            .commit_projection("p", &s, Some(3), &saved(9), &losing_changes)
            .await,
        "an expected position older than the saved one",
    );
    // One that thinks it is ahead.
    expect_conflict(
        store
            .commit_projection("p", &s, Some(7), &saved(9), &losing_changes)
            .await,
        "an expected position newer than the saved one",
    );
    // One that thinks there is no position yet.
    expect_conflict(
        store
            .commit_projection("p", &s, None, &saved(9), &losing_changes)
            .await,
        "expecting no position when there is one",
    );
    assert_eq!(
        store.projection("p", &s).await.unwrap(),
        Some(saved(5)),
        "the position did not move"
    );
    assert_eq!(
        parsed_all(&all_rows(store, "p", &s, t).await),
        parsed_all(&before),
        "no change of a refused commit was applied"
    );
    // Expecting a position of a projection that has none.
    expect_conflict(
        store
            .commit_projection("unknown", &s, Some(5), &saved(9), &losing_changes)
            .await,
        "expecting a position that does not exist",
    );
    assert_eq!(store.projection("unknown", &s).await.unwrap(), None);
    assert!(all_rows(store, "unknown", &s, t).await.is_empty());
    // The runner that read 5 still commits.
    store
        .commit_projection("p", &s, Some(5), &saved(9), &losing_changes)
        .await
        .unwrap();
    assert_eq!(
        keys(&all_rows(store, "p", &s, t).await),
        [("new".to_owned(), 0), ("keep".to_owned(), 0)]
    );
}

/// A commit that fails part way (here: its third change's value is not JSON, which every store
/// refuses) leaves the position and every row as they were.
pub async fn a_failed_commit_writes_nothing(store: &dyn Store) {
    let s = stream("proj-atomic");
    let t = "t";
    store
        .commit_projection(
            "p",
            &s,
            None,
            &saved(1),
            &[put(t, "a", 0, 1, json!({"v": 1}))],
        )
        .await
        .unwrap();
    let mut bad = row(t, "c", 0, 3, json!({}));
    bad.value = "{not json".to_owned();
    let result = store
        .commit_projection(
            "p",
            &s,
            Some(1),
            &saved(2),
            &[
                put(t, "a", 0, 1, json!({"v": "replaced"})),
                put(t, "b", 0, 2, json!({"v": 2})),
                RowChange::Put(bad),
                delete(t, "a", 0),
            ],
        )
        .await;
    assert!(
        result.is_err(),
        "a value that is not JSON is refused: {result:?}"
    );
    assert_eq!(store.projection("p", &s).await.unwrap(), Some(saved(1)));
    assert_eq!(
        parsed_all(&all_rows(store, "p", &s, t).await),
        parsed_all(&[row(t, "a", 0, 1, json!({"v": 1}))])
    );
}

pub async fn puts_upsert_and_deletes_remove(store: &dyn Store) {
    let s = stream("proj-upsert");
    let t = "t";
    store
        .commit_projection(
            "p",
            &s,
            None,
            &saved(1),
            &[
                put(t, "k", 0, 10, json!({"v": 1})),
                put(t, "k", 1, 11, json!({"v": 1})),
            ],
        )
        .await
        .unwrap();
    // A second put of (table, key, ord) replaces the row: its time and its value.
    store
        .commit_projection(
            "p",
            &s,
            Some(1),
            &saved(2),
            &[put(t, "k", 0, 20, json!({"v": 2, "more": [1, 2]}))],
        )
        .await
        .unwrap();
    assert_eq!(
        parsed_all(&all_rows(store, "p", &s, t).await),
        parsed_all(&[
            row(t, "k", 1, 11, json!({"v": 1})),
            row(t, "k", 0, 20, json!({"v": 2, "more": [1, 2]})),
        ])
    );
    // A delete removes exactly its row; deleting an absent row is fine.
    store
        .commit_projection(
            "p",
            &s,
            Some(2),
            &saved(3),
            &[
                delete(t, "k", 1),
                delete(t, "absent", 0),
                delete("other", "k", 0),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        parsed_all(&all_rows(store, "p", &s, t).await),
        parsed_all(&[row(t, "k", 0, 20, json!({"v": 2, "more": [1, 2]}))])
    );
    store
        .commit_projection("p", &s, Some(3), &saved(4), &[delete(t, "k", 0)])
        .await
        .unwrap();
    assert!(all_rows(store, "p", &s, t).await.is_empty());
}

/// Changes of one commit apply in order, including several to one row.
pub async fn changes_apply_in_order(store: &dyn Store) {
    let s = stream("proj-order");
    let t = "t";
    store
        .commit_projection(
            "p",
            &s,
            None,
            &saved(1),
            &[
                put(t, "put-put", 0, 1, json!({"v": "first"})),
                put(t, "put-put", 0, 2, json!({"v": "second"})),
                put(t, "put-delete", 0, 1, json!({"v": 1})),
                delete(t, "put-delete", 0),
                delete(t, "delete-put", 0),
                put(t, "delete-put", 0, 3, json!({"v": "back"})),
                put(t, "put-delete-put", 0, 1, json!({"v": 1})),
                delete(t, "put-delete-put", 0),
                put(t, "put-delete-put", 0, 4, json!({"v": "last"})),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        parsed_all(&all_rows(store, "p", &s, t).await),
        parsed_all(&[
            row(t, "put-put", 0, 2, json!({"v": "second"})),
            row(t, "delete-put", 0, 3, json!({"v": "back"})),
            row(t, "put-delete-put", 0, 4, json!({"v": "last"})),
        ])
    );
}

pub async fn queries_by_key_time_and_limit(store: &dyn Store) {
    let s = stream("proj-query");
    let t = "accesses";
    // Three patients' accesses; ties on `at` across keys and within one key.
    let data = [
        ("p-1", 0, 100),
        ("p-1", 1, 200),
        ("p-1", 2, 300),
        ("p-2", 0, 200),
        ("p-2", 1, 250),
        ("p-3", 0, 300),
        ("p-3", 1, 300),
        ("p-3", 2, 400),
    ];
    let mut changes: Vec<RowChange> = data
        .iter()
        .map(|&(k, o, a)| put(t, k, o, a, json!({"patient": k, "n": o})))
        .collect();
    // Rows of another table are never in a read of this one.
    changes.push(put("logins", "p-1", 0, 250, json!({})));
    changes.reverse(); // insertion order must not matter
    store
        .commit_projection("p", &s, None, &saved(1), &changes)
        .await
        .unwrap();
    let ordered = |rows: &[ReadModelRow]| -> Vec<(String, i64)> { keys(rows) };
    let k = |key: &str, ord: i64| (key.to_owned(), ord);

    // The whole table: (at, key, ord) ascending.
    let oldest_first = vec![
        k("p-1", 0),
        k("p-1", 1),
        k("p-2", 0),
        k("p-2", 1),
        k("p-1", 2),
        k("p-3", 0),
        k("p-3", 1),
        k("p-3", 2),
    ];
    let all = all_rows(store, "p", &s, t).await;
    assert_eq!(ordered(&all), oldest_first);
    assert_eq!(all[0].table, t);
    assert_eq!(all[0].at, at(100));
    // Newest first: the exact reverse.
    let newest = rows(
        store,
        "p",
        &s,
        RowQuery {
            newest_first: true,
            ..RowQuery::table(t, 100)
        },
    )
    .await;
    let mut newest_first = oldest_first.clone();
    newest_first.reverse();
    assert_eq!(ordered(&newest), newest_first);
    // Limits, both ways.
    assert_eq!(
        ordered(&rows(store, "p", &s, RowQuery::table(t, 3)).await),
        oldest_first[..3]
    );
    assert_eq!(
        ordered(
            &rows(
                store,
                "p",
                &s,
                RowQuery {
                    newest_first: true,
                    ..RowQuery::table(t, 2)
                }
            )
            .await
        ),
        newest_first[..2]
    );
    assert!(rows(store, "p", &s, RowQuery::table(t, 0)).await.is_empty());
    // One key.
    assert_eq!(
        ordered(&rows(store, "p", &s, RowQuery::key(t, "p-3", 100)).await),
        [k("p-3", 0), k("p-3", 1), k("p-3", 2)]
    );
    assert_eq!(
        ordered(
            &rows(
                store,
                "p",
                &s,
                RowQuery {
                    newest_first: true,
                    ..RowQuery::key(t, "p-1", 2)
                }
            )
            .await
        ),
        [k("p-1", 2), k("p-1", 1)]
    );
    assert!(rows(store, "p", &s, RowQuery::key(t, "p-9", 100))
        .await
        .is_empty());
    // Time ranges are [from, to).
    let range = |from: Option<i64>, to: Option<i64>| RowQuery {
        from: from.map(at),
        to: to.map(at),
        ..RowQuery::table(t, 100)
    };
    assert_eq!(
        ordered(&rows(store, "p", &s, range(Some(200), Some(300))).await),
        [k("p-1", 1), k("p-2", 0), k("p-2", 1)],
        "from is included, to is not"
    );
    assert_eq!(
        ordered(&rows(store, "p", &s, range(Some(300), None)).await),
        [k("p-1", 2), k("p-3", 0), k("p-3", 1), k("p-3", 2)]
    );
    assert_eq!(
        ordered(&rows(store, "p", &s, range(None, Some(200))).await),
        [k("p-1", 0)]
    );
    assert!(rows(store, "p", &s, range(Some(300), Some(300)))
        .await
        .is_empty());
    // Key, range, order and limit together.
    let q = RowQuery {
        from: Some(at(150)),
        to: Some(at(400)),
        limit: 1,
        newest_first: true,
        ..RowQuery::key(t, "p-1", 0)
    };
    assert_eq!(ordered(&rows(store, "p", &s, q).await), [k("p-1", 2)]);
    // Keys compare by byte (UTF-8), whatever a database's collation would say.
    let words = ["b", "_x", "a", "B", "é", "A-2", "A10", "z"];
    let changes: Vec<RowChange> = words
        .iter()
        .map(|w| put("words", w, 0, 7, json!({})))
        .collect();
    store
        .commit_projection("p", &s, Some(1), &saved(2), &changes)
        .await
        .unwrap();
    let mut bytewise = words.map(str::to_owned).to_vec();
    bytewise.sort();
    assert_eq!(
        all_rows(store, "p", &s, "words")
            .await
            .into_iter()
            .map(|r| r.key)
            .collect::<Vec<_>>(),
        bytewise
    );
    // Values come back as stored (as JSON).
    let p2 = rows(store, "p", &s, RowQuery::key(t, "p-2", 100)).await;
    assert_eq!(
        parsed_all(&p2),
        parsed_all(&[
            row(t, "p-2", 0, 200, json!({"patient": "p-2", "n": 0})),
            row(t, "p-2", 1, 250, json!({"patient": "p-2", "n": 1})),
        ])
    );
}

pub async fn projections_and_streams_are_separate(store: &dyn Store) {
    let x = stream("proj-sep-x");
    let y = stream("proj-sep-y");
    let t = "t";
    let runs = [("a", &x, 1), ("b", &x, 2), ("a", &y, 3)];
    for (name, s, n) in runs {
        store
            .commit_projection(
                name,
                s,
                None,
                &saved(n),
                &[put(t, "k", 0, 1, json!({"from": format!("{name}/{s}")}))],
            )
            .await
            .unwrap();
    }
    for (name, s, n) in runs {
        assert_eq!(store.projection(name, s).await.unwrap(), Some(saved(n)));
        assert_eq!(
            parsed_all(&all_rows(store, name, s, t).await),
            parsed_all(&[row(t, "k", 0, 1, json!({"from": format!("{name}/{s}")}))]),
            "{name}/{s} sees its own row only"
        );
    }
    assert_eq!(store.projection("b", &y).await.unwrap(), None);
    assert!(all_rows(store, "b", &y, t).await.is_empty());
    // A position of one projection or stream is no position of another.
    expect_conflict(
        store
            .commit_projection("b", &y, Some(2), &saved(9), &[])
            .await,
        "b/y has no position",
    );
    // Resetting one leaves the others.
    store.reset_projection("a", &x).await.unwrap();
    assert_eq!(store.projection("a", &x).await.unwrap(), None);
    assert!(all_rows(store, "a", &x, t).await.is_empty());
    assert_eq!(store.projection("b", &x).await.unwrap(), Some(saved(2)));
    assert_eq!(store.projection("a", &y).await.unwrap(), Some(saved(3)));
    assert_eq!(all_rows(store, "b", &x, t).await.len(), 1);
    assert_eq!(all_rows(store, "a", &y, t).await.len(), 1);
}

pub async fn reset_forgets_position_and_rows(store: &dyn Store) {
    let s = stream("proj-reset");
    let changes: Vec<RowChange> = (0..50)
        .map(|i| {
            put(
                ["t1", "t2"][i % 2],
                &format!("k{i}"),
                0,
                i as i64,
                json!({"i": i}),
            )
        })
        .collect();
    store
        .commit_projection("p", &s, None, &saved(49), &changes)
        .await
        .unwrap();
    assert_eq!(all_rows(store, "p", &s, "t1").await.len(), 25);
    store.reset_projection("p", &s).await.unwrap();
    assert_eq!(store.projection("p", &s).await.unwrap(), None);
    assert!(all_rows(store, "p", &s, "t1").await.is_empty());
    assert!(all_rows(store, "p", &s, "t2").await.is_empty());
    // A rebuild starts from no position.
    expect_conflict(
        store
            .commit_projection("p", &s, Some(49), &saved(50), &[])
            .await,
        "the old position is gone",
    );
    store
        .commit_projection("p", &s, None, &saved(0), &changes[..1])
        .await
        .expect("a rebuild commits from no position");
    assert_eq!(store.projection("p", &s).await.unwrap(), Some(saved(0)));
    assert_eq!(
        keys(&all_rows(store, "p", &s, "t1").await),
        [("k0".to_owned(), 0)]
    );
}

pub async fn values_round_trip_as_json(store: &dyn Store) {
    let s = stream("proj-json");
    let values = [
        json!({}),
        json!({"z": 1, "a": 2, "m": {"nested": [1, 2.5, -3, null, true, false, "x"]}}),
        json!({"text": "quotes \" and \\ backslashes, newline\n, tab\t, unicode é 漢字 🙂"}),
        json!({"big": 9_007_199_254_740_993_i64, "neg": -42, "small": 0.125, "exp": 1e300}),
        json!({"empty": "", "list": [], "obj": {}}),
    ];
    let changes: Vec<RowChange> = values
        .iter()
        .enumerate()
        .map(|(i, v)| put("t", "k", i as i64, 1, v.clone()))
        .collect();
    store
        .commit_projection("p", &s, None, &saved(1), &changes)
        .await
        .unwrap();
    let back = all_rows(store, "p", &s, "t").await;
    let got: Vec<Value> = back
        .iter()
        .map(|r| serde_json::from_str(&r.value).unwrap())
        .collect();
    assert_eq!(got, values);
    // Keys and tables are text, kept exactly.
    let odd = "Key with spaces, 'quotes', \"double\", ünïcode and a % sign";
    store
        .commit_projection(
            "p",
            &s,
            Some(1),
            &saved(2),
            &[put("table/with.dots", odd, -1, -5, json!({"ok": true}))],
        )
        .await
        .unwrap();
    let r = rows(store, "p", &s, RowQuery::key("table/with.dots", odd, 10)).await;
    assert_eq!(r.len(), 1);
    assert_eq!((r[0].key.as_str(), r[0].ord, r[0].at), (odd, -1, at(-5)));
}

/// Several runners of one projection commit from the same position at once: exactly one wins,
/// the others get a conflict, and only the winner's rows are there.
pub async fn concurrent_runners_one_wins(store: Arc<dyn Store>) {
    let s = stream("proj-race");
    for expected in [None, Some(1)] {
        let next = expected.map_or(1, |e| e + 1);
        let runners: Vec<_> = (0..8i64)
            .map(|i| {
                let (store, s) = (store.clone(), s.clone());
                tokio::spawn(async move {
                    let changes: Vec<RowChange> = (0..20)
                        .map(|j| put("t", &format!("r{i}-{j}"), 0, j, json!({"runner": i})))
                        .collect();
                    let result = store
                        .commit_projection("p", &s, expected, &saved(next), &changes)
                        .await;
                    (i, result)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for r in runners {
            let (i, result) = r.await.expect("runner task");
            match result {
                Ok(()) => winners.push(i),
                Err(StoreError::Conflict(_)) => {}
                Err(e) => panic!("runner {i}: {e}"),
            }
        }
        assert_eq!(winners.len(), 1, "exactly one runner wins: {winners:?}");
        let rows = all_rows(store.as_ref(), "p", &s, "t").await;
        assert_eq!(rows.len(), 20, "only the winner's rows");
        let winner = winners[0];
        assert!(rows
            .iter()
            .all(|r| r.key.starts_with(&format!("r{winner}-"))));
        store.reset_projection("p", &s).await.unwrap();
        if expected.is_some() {
            break;
        }
        // Next round: everyone expects the position 1 a single commit saves now.
        store
            .commit_projection("p", &s, None, &saved(1), &[])
            .await
            .unwrap();
    }
}

/// Thousands of rows per commit is normal (a first run over a large ledger).
pub async fn a_commit_of_5000_rows(store: &dyn Store) {
    let s = stream("proj-bulk");
    let n = 5000i64;
    let value = |i: i64, round: &str| {
        json!({"seq": i, "round": round, "actor": format!("u-{}", i % 97),
               "detail": "x".repeat(200)})
    };
    let changes: Vec<RowChange> = (0..n)
        .map(|i| {
            put(
                "accesses",
                &format!("p-{}", i % 100),
                i,
                i,
                value(i, "first"),
            )
        })
        .collect();
    let started = std::time::Instant::now();
    store
        .commit_projection("p", &s, None, &saved(n as Seq), &changes)
        .await
        .expect("a commit of 5000 rows");
    let first = started.elapsed();
    let all = all_rows(store, "p", &s, "accesses").await;
    assert_eq!(all.len(), n as usize);
    assert!(all.windows(2).all(|w| w[0].at < w[1].at));
    assert_eq!(
        parsed(&all[1234]),
        parsed(&row("accesses", "p-34", 1234, 1234, value(1234, "first")))
    );
    assert_eq!(
        rows(store, "p", &s, RowQuery::key("accesses", "p-7", 1000))
            .await
            .len(),
        50
    );
    // Replace every row and delete some, in one commit.
    let mut changes: Vec<RowChange> = (0..n)
        .map(|i| {
            put(
                "accesses",
                &format!("p-{}", i % 100),
                i,
                i,
                value(i, "second"),
            )
        })
        .collect();
    changes.extend(
        (0..n)
            .step_by(10)
            .map(|i| delete("accesses", &format!("p-{}", i % 100), i)),
    );
    let started = std::time::Instant::now();
    store
        .commit_projection("p", &s, Some(n as Seq), &saved(2 * n as Seq), &changes)
        .await
        .expect("a commit of 5000 replacements and 500 deletes");
    let second = started.elapsed();
    let all = all_rows(store, "p", &s, "accesses").await;
    assert_eq!(all.len(), (n - n / 10) as usize);
    assert!(all.iter().all(|r| r.ord % 10 != 0));
    assert_eq!(
        parsed(&all[0]),
        parsed(&row("accesses", "p-1", 1, 1, value(1, "second")))
    );
    eprintln!(
        "projection commit of {n} rows: {first:?}; of {n} replacements and {} deletes: {second:?}",
        n / 10
    );
}
