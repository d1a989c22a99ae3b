//! The `phi-access` projection and its readers on a real store, against answers known from
//! the generated traffic: one patient's accesses under a keyed and a legacy pseudonym, none
//! missing and none extra; per-day and per-user-day counts; late events counted; the same rows
//! however often the runner stops and restarts, and after a rebuild; no raw identifier in any
//! row.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;

use chrono::NaiveDate;
use ledger::projection::Runner;
use ledger::{
    GroupCommitWriter, IdentifierMode, Ingest, ManualClock, Pseudonymizer, ReadModelRow, Receipt,
    RowChange, RowQuery, Seq, Store, StoreError, StreamId, SystemClock, Timestamp, WriterConfig,
};
use phi_access::projection::{
    patient_bucket, Month, PhiAccessProjection, CHANGES, DAYS, DAYS_LATE, NAME, PATIENTS,
    USER_ACCESSES, USER_DAYS, USER_DAYS_LATE,
};
use phi_access::{read, AnalyticsConfig, SiteCalendar};
use serde_json::{json, Value};

use crate::{fixed_now, test_pseudonymizer, Tamper};

const TABLES: [&str; 7] = [
    PATIENTS,
    USER_ACCESSES,
    DAYS,
    USER_DAYS,
    DAYS_LATE,
    USER_DAYS_LATE,
    CHANGES,
];

/// The first site day: Monday 2026-11-16 (New York, EST: local = UTC - 5 h).
fn first_day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 16).expect("a date")
}
const DAYS_GENERATED: u32 = 6;
const HOUR: i64 = 3_600_000_000;
const MINUTE: i64 = 60_000_000;

/// Local midnight of 2026-11-16 in New York, in UTC.
const MIDNIGHT: i64 = 1_794_805_200_000_000;

fn local(day: u32, hour: i64, minute: i64) -> Timestamp {
    Timestamp(MIDNIGHT + i64::from(day) * 24 * HOUR + hour * HOUR + minute * MINUTE)
}

const ROLES: [&str; 4] = ["nurse", "nurse", "physician", "clerk"];

fn raw_user(u: usize) -> String {
    format!("staff-x{u}")
}
fn raw_patient(k: usize) -> String {
    format!("pt-x{k}")
}

/// One generated event and what it is known to be.
#[derive(Debug, Clone)]
struct Known {
    json: Value,
    legacy: bool,
    day: u32,
    at: Timestamp,
    /// Raw user id (the pseudonym is keyed or legacy with the event).
    user: Option<String>,
    patient: Option<String>,
    phi: bool,
    login: bool,
    failed_login: bool,
    after_hours_phi: bool,
    export: bool,
    change: bool,
    /// Appended when its day had already closed.
    late: bool,
}

impl Known {
    fn user_pseudonym(&self) -> Option<String> {
        self.user.as_deref().map(|u| pseudonym(u, self.legacy))
    }
    fn patient_pseudonym(&self) -> Option<String> {
        self.patient.as_deref().map(|p| pseudonym(p, self.legacy))
    }
}

fn pseudonym(raw: &str, legacy: bool) -> String {
    if legacy {
        Pseudonymizer::legacy_sha256(raw).to_string()
    } else {
        test_pseudonymizer().pseudonymize(raw).to_string()
    }
}

/// What the legacy system exported for `raw`: its SHA-256 hex.
fn legacy_hex(raw: &str) -> String {
    Pseudonymizer::legacy_sha256(raw)
        .to_string()
        .trim_start_matches("sha256:")
        .to_owned()
}

#[allow(clippy::too_many_arguments)]
fn known(
    day: u32,
    hour: i64,
    minute: i64,
    action: &str,
    outcome: &str,
    u: usize,
    patient: Option<usize>,
    resource: Option<&str>,
) -> Known {
    let at = local(day, hour, minute);
    let phi = patient.is_some();
    let mut json = json!({
        "occurred_at": at.to_rfc3339(), "action": action, "outcome": outcome,
        "actor": {"user_id": raw_user(u), "role": ROLES[u], "ip": format!("10.9.8.{u}"),
                  "session_id": format!("sess-x{u}-{day}")},
        "phi": phi, "source": "ehr-web",
    });
    if let Some(k) = patient {
        json["patient_id"] = raw_patient(k).into();
        json["resource"] = json!({"type": "Patient", "id": raw_patient(k)});
    } else if let Some(kind) = resource {
        json["resource"] = json!({"type": kind, "id": format!("res-x{day}-{minute}")});
    }
    let weekend = day == 5 || day == 6;
    Known {
        json,
        legacy: false,
        day,
        at,
        user: Some(raw_user(u)),
        patient: patient.map(raw_patient),
        phi,
        login: action == "login" || action == "login_failed",
        failed_login: action == "login_failed" || (action == "login" && outcome != "success"),
        after_hours_phi: phi && (weekend || !(7..19).contains(&hour)),
        export: action == "export",
        change: action == "role_change",
        late: false,
    }
}

/// Six site days of four users and six patients: PHI reads in working hours, updates after
/// hours, logins (some failed), non-PHI searches, an export and a role change; then an event
/// out of order but within `late_days`, a late keyed access and a late legacy import.
fn traffic() -> Vec<Known> {
    let mut out = Vec::new();
    for day in 0..DAYS_GENERATED {
        for i in 0..(12 + 2 * day as usize) {
            let u = i % 4;
            let k = (i + day as usize) % 6;
            let m = i as i64;
            out.push(match i % 6 {
                0..=2 => known(day, 9, m, "read", "success", u, Some(k), None),
                3 => known(day, 20, m, "update", "success", u, Some(k), None),
                4 if i % 12 == 4 => known(day, 8, m, "login", "failure", u, None, None),
                4 => known(day, 8, m, "login", "success", u, None, None),
                _ => known(day, 10, m, "search", "success", u, None, Some("Schedule")),
            });
        }
        match day {
            2 => out.push(known(
                day,
                15,
                0,
                "export",
                "success",
                1,
                None,
                Some("Report"),
            )),
            3 => out.push(known(day, 16, 0, "role_change", "success", 3, None, None)),
            _ => {}
        }
    }
    // Reads of a patient whose rows share patient 0's bucket: the readers must tell them apart.
    for day in [2, 5] {
        out.push(known(
            day,
            11,
            0,
            "read",
            "success",
            2,
            Some(neighbour()),
            None,
        ));
    }
    // Day 3 at 22:30 local (03:30 UTC on day 4): out of order, but day 3 is still open.
    out.push(known(3, 22, 30, "read", "success", 0, Some(4), None));
    // Day 1: 4 days behind the newest (day 5), closed: late.
    let mut late = known(1, 11, 0, "read", "success", 2, Some(0), None);
    late.late = true;
    out.push(late);
    // An old access imported from the legacy system (identifiers already its SHA-256 hex).
    let mut legacy = known(0, 14, 0, "read", "success", 0, Some(0), None);
    into_legacy(&mut legacy, 0, 0);
    legacy.late = true;
    out.push(legacy);
    out
}

/// The first patient after the six of the daily traffic whose keyed pseudonym falls in patient
/// 0's bucket of `patient` rows ([`patient_bucket`]): one in 4096 does.
fn neighbour() -> usize {
    let bucket = |k: usize| patient_bucket(&pseudonym(&raw_patient(k), false));
    (6..)
        .find(|&k| bucket(k) == bucket(0))
        .expect("some patient shares the bucket")
}

/// Makes `known` (an access by user `u` to `patient`) an import from the legacy system: its
/// identifiers are already the legacy SHA-256 hex, and it has no session.
fn into_legacy(known: &mut Known, u: usize, patient: usize) {
    known.json["actor"]["user_id"] = legacy_hex(&raw_user(u)).into();
    known.json["actor"]
        .as_object_mut()
        .expect("an object")
        .remove("session_id");
    known.json["patient_id"] = legacy_hex(&raw_patient(patient)).into();
    known.json["resource"]["id"] = legacy_hex(&raw_patient(patient)).into();
    known.legacy = true;
}

/// Appends `events` (keyed or legacy each) in order on a clock that never moves (set after the
/// traffic's days, as a live ledger's clock would be), so the same
/// events give the same entries (and entry hashes) on every store. Returns each one's `seq`.
async fn append(store: &Arc<dyn Store>, s: &StreamId, events: &[Known]) -> Vec<Seq> {
    let (w, task) = GroupCommitWriter::start(
        store.clone(),
        s.clone(),
        // After the traffic's days: the projection never lets an event dated past the ledger
        // clock close other days.
        Arc::new(ManualClock::new(Timestamp(
            fixed_now().0 + 30 * 86_400_000_000,
        ))),
        WriterConfig::default(),
    )
    .await
    .unwrap();
    let keyed = Ingest::new(test_pseudonymizer());
    let mut legacy = Ingest::new(test_pseudonymizer());
    legacy.mode = IdentifierMode::LegacySha256;
    let mut seqs = Vec::new();
    for chunk in events.chunks(7) {
        let prepared = chunk
            .iter()
            .map(|k| {
                let ingest = if k.legacy { &legacy } else { &keyed };
                ingest
                    .prepare(&k.json, None)
                    .unwrap_or_else(|e| panic!("{e:?}: {}", k.json))
            })
            .collect();
        let receipts: Vec<Receipt> = w.append(prepared).await.unwrap();
        seqs.extend(receipts.iter().map(|r| r.seq));
    }
    drop(w);
    task.await.unwrap();
    seqs
}

/// Opens a runner (restoring the saved state), catches up committing every `commit_every`
/// entries, and drops it.
async fn project(store: &Arc<dyn Store>, s: &StreamId, commit_every: usize, rebuild: bool) {
    let (w, task) = GroupCommitWriter::start(
        store.clone(),
        s.clone(),
        Arc::new(SystemClock),
        WriterConfig::default(),
    )
    .await
    .unwrap();
    let projection = PhiAccessProjection::new(AnalyticsConfig::default());
    let mut runner = if rebuild {
        Runner::rebuild(store.clone(), w, projection).await
    } else {
        Runner::open(store.clone(), w, projection).await
    }
    .unwrap();
    runner.set_commit_every(commit_every);
    runner.catch_up(|_, _| {}).await.unwrap();
    drop(runner);
    task.await.unwrap();
}

type Rows = BTreeMap<&'static str, Vec<(String, i64, i64, Value)>>;

/// Every row of every table, values parsed (PostgreSQL normalizes JSON text). The `user_access`
/// rows of one key are merged into one, `ord` 0, listing their seqs ascending: they are cut
/// where the runner's commits fell, and only what they list must not depend on it.
async fn all_rows(store: &dyn Store, s: &StreamId) -> Rows {
    let mut out = Rows::new();
    for table in TABLES {
        let mut rows: Vec<(String, i64, i64, Value)> = store
            .read_model_rows(NAME, s, &RowQuery::table(table, usize::MAX))
            .await
            .unwrap()
            .into_iter()
            .map(|r| {
                (
                    r.key,
                    r.ord,
                    r.at.0,
                    serde_json::from_str(&r.value).unwrap(),
                )
            })
            .collect();
        if table == USER_ACCESSES {
            let mut by_key: BTreeMap<String, (i64, Vec<u64>)> = BTreeMap::new();
            for (key, _, at, value) in rows {
                let listed = by_key.entry(key).or_insert((at, Vec::new()));
                assert_eq!(listed.0, at, "one key, one month");
                for seq in value["seqs"].as_array().expect("seqs") {
                    listed.1.push(seq.as_u64().expect("a seq"));
                }
            }
            rows = by_key
                .into_iter()
                .map(|(key, (at, mut seqs))| {
                    let n = seqs.len();
                    seqs.sort_unstable();
                    seqs.dedup();
                    assert_eq!(seqs.len(), n, "{key}: each access listed once");
                    (key, 0, at, json!({ "seqs": seqs }))
                })
                .collect();
        }
        rows.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        out.insert(table, rows);
    }
    out
}

/// Runs every check. `fresh` makes an empty store (the tamperer is not used).
pub async fn run_all<F, Fut>(fresh: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = (Arc<dyn Store>, Arc<dyn Tamper>)>,
{
    let s = StreamId::default();
    let traffic = traffic();
    let config = AnalyticsConfig::default();
    let cal = SiteCalendar::new(&config);
    assert_eq!(config.late_days, 3, "the traffic's late events assume 3");

    // Reference: everything appended, then one pass.
    let (reference, _) = fresh().await;
    let seqs = append(&reference, &s, &traffic).await;
    project(&reference, &s, usize::MAX, false).await;
    let head = reference.head(&s).await.unwrap().unwrap();
    assert_eq!(
        read::position(reference.as_ref(), &s).await.unwrap(),
        Some(head.seq)
    );
    let expected = all_rows(reference.as_ref(), &s).await;
    check_answers(reference.as_ref(), &s, &cal, &traffic, &seqs, &expected).await;

    // Rebuilding from the first entry gives the same rows.
    project(&reference, &s, usize::MAX, true).await;
    assert_eq!(all_rows(reference.as_ref(), &s).await, expected, "rebuild");

    // The same traffic appended in parts, the runner reopened (its state restored) after each
    // part and committing every few entries: the same rows.
    let (parts, _) = fresh().await;
    let bounds = [0, 9, 30, 31, 55, 80, traffic.len() - 2, traffic.len()];
    for (i, w) in bounds.windows(2).enumerate() {
        append(&parts, &s, &traffic[w[0]..w[1]]).await;
        project(&parts, &s, [3, 1, 7, 2][i % 4], false).await;
        project(&parts, &s, 5, false).await; // nothing new: no change
    }
    assert_eq!(
        parts.head(&s).await.unwrap().unwrap(),
        head,
        "the same entries on both stores"
    );
    assert_eq!(all_rows(parts.as_ref(), &s).await, expected, "in parts");
    project(&parts, &s, 4, true).await;
    assert_eq!(
        all_rows(parts.as_ref(), &s).await,
        expected,
        "rebuilt in steps"
    );

    let (months, _) = fresh().await;
    check_months(&months, &s).await;
}

/// Accesses to one patient by one user over several months (the `patient` and `user_access`
/// rows are keyed by month): open, closed and generous ranges, bounds on a month's first instant, a
/// legacy-hashed access years before, a user's first few across months.
async fn check_months(store: &Arc<dyn Store>, s: &StreamId) {
    let times = [
        "2024-06-10T10:00:00Z", // legacy
        "2025-12-31T23:59:59.999999Z",
        "2026-01-01T00:00:00Z",
        "2026-01-31T12:00:00Z",
        "2026-03-15T08:00:00Z",
        "2026-03-16T08:00:00Z",
    ];
    let events: Vec<Known> = times
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut k = known(0, 9, i as i64, "read", "success", 1, Some(3), None);
            k.json["occurred_at"] = (*t).into();
            k.at = Timestamp::parse_rfc3339(t).unwrap();
            if i == 0 {
                into_legacy(&mut k, 1, 3);
            }
            k
        })
        .collect();
    let seqs = append(store, s, &events).await;
    project(store, s, 2, false).await;

    let both = [
        pseudonym(&raw_patient(3), false),
        pseudonym(&raw_patient(3), true),
    ];
    let utc = |t: &str| Some(Timestamp::parse_rfc3339(t).unwrap());
    let of_patient = |from: Option<Timestamp>, to: Option<Timestamp>| {
        let both = both.clone();
        async move {
            read::accesses_of_patients(store.as_ref(), s, &both, from, to)
                .await
                .unwrap()
                .iter()
                .map(|a| a.seq)
                .collect::<Vec<Seq>>()
        }
    };
    assert_eq!(
        of_patient(None, None).await,
        seqs,
        "every month, open bounds"
    );
    assert_eq!(
        of_patient(utc("1900-01-01T00:00:00Z"), utc("2100-01-01T00:00:00Z")).await,
        seqs,
        "generous bounds"
    );
    assert_eq!(
        of_patient(utc("2026-01-01T00:00:00Z"), utc("2026-03-15T08:00:00Z")).await,
        seqs[2..4],
        "from a month's first instant, to an excluded instant"
    );
    assert_eq!(
        of_patient(None, utc("2026-01-01T00:00:00Z")).await,
        seqs[..2],
        "up to a month's first instant"
    );
    assert!(
        of_patient(utc("2026-02-01T00:00:00Z"), utc("2026-03-01T00:00:00Z"))
            .await
            .is_empty(),
        "a month without accesses"
    );

    let user = pseudonym(&raw_user(1), false);
    let of_user = |from: Option<Timestamp>, to: Option<Timestamp>, limit: usize| {
        let user = user.clone();
        async move {
            read::accesses_of_user(store.as_ref(), s, &user, from, to, limit)
                .await
                .unwrap()
                .iter()
                .map(|a| a.seq)
                .collect::<Vec<Seq>>()
        }
    };
    assert_eq!(of_user(None, None, 3).await, seqs[1..4], "the first three");
    assert_eq!(of_user(None, None, usize::MAX).await, seqs[1..]);
    assert_eq!(
        of_user(utc("2026-02-01T00:00:00Z"), utc("2026-04-01T00:00:00Z"), 10).await,
        seqs[4..],
        "one user's months"
    );

    // A `user_access` row listing an entry the ledger lacks is corrupt, and the error names it.
    let saved = store.projection(NAME, s).await.unwrap().expect("projected");
    let march = Month::of(utc("2026-03-15T08:00:00Z").unwrap());
    let bad = RowChange::Put(ReadModelRow {
        table: USER_ACCESSES.to_owned(),
        key: march.key(&user),
        ord: 1_000_000,
        at: march.start(),
        value: json!({ "seqs": [1_000_000] }).to_string(),
    });
    store
        .commit_projection(NAME, s, Some(saved.seq), &saved, &[bad])
        .await
        .unwrap();
    let err = read::accesses_of_user(store.as_ref(), s, &user, None, None, usize::MAX)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Corrupt(_))
            && err.to_string().contains("user_access")
            && err.to_string().contains("1000000"),
        "{err}"
    );

    // A `patient` row holds only a hash prefix; the access is read from the entry it cites,
    // which must be an access to the row's patient, at its time, with that prefix.
    let march_rows = read::patient_rows(
        store.as_ref(),
        s,
        &both[..1],
        utc("2026-03-01T00:00:00Z"),
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        march_rows.iter().map(|r| r.seq).collect::<Vec<_>>(),
        seqs[4..]
    );
    let cited = &march_rows[0];
    let row = |patient: &str, prefix: &str| {
        RowChange::Put(ReadModelRow {
            table: PATIENTS.to_owned(),
            key: Month::of(cited.at).patient_key(patient),
            ord: cited.seq as i64,
            at: cited.at,
            value: json!({ "p": patient, "h": prefix }).to_string(),
        })
    };
    let another = pseudonym(&raw_patient(4), false);
    for (change, what) in [
        (
            row(&another, &cited.value.entry_hash_prefix),
            "row's patient",
        ),
        (row(&both[0], "0000000000000000"), "hash is not"),
    ] {
        let saved = store.projection(NAME, s).await.unwrap().expect("projected");
        store
            .commit_projection(
                NAME,
                s,
                Some(saved.seq),
                &saved,
                std::slice::from_ref(&change),
            )
            .await
            .unwrap();
        let patient = match &change {
            RowChange::Put(r) if r.value.contains(another.as_str()) => another.clone(),
            _ => both[0].clone(),
        };
        let err = read::accesses_of_patients(store.as_ref(), s, &[patient], None, None)
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Corrupt(_))
                && err.to_string().contains("patient/")
                && err.to_string().contains(what),
            "{err}"
        );
    }
}

async fn check_answers(
    store: &dyn Store,
    s: &StreamId,
    cal: &SiteCalendar,
    traffic: &[Known],
    seqs: &[Seq],
    rows: &Rows,
) {
    let events: Vec<(Seq, &Known)> = seqs.iter().copied().zip(traffic).collect();

    // No raw identifier anywhere in the read model.
    let mut raw: Vec<String> = (0..4).map(raw_user).collect();
    raw.extend((0..6).chain([neighbour()]).map(raw_patient));
    raw.extend((0..4).map(|u| format!("10.9.8.{u}")));
    raw.extend(["sess-x".to_owned(), "res-x".to_owned()]);
    for (table, rows) in rows {
        for (key, _, _, value) in rows {
            let text = format!("{key} {value}");
            for r in &raw {
                assert!(!text.contains(r.as_str()), "{r} in {table}: {text}");
            }
        }
    }

    // One patient under both pseudonyms: exactly the accesses to them, in time order.
    let patient = raw_patient(0);
    let both = [pseudonym(&patient, false), pseudonym(&patient, true)];
    let mut want: Vec<(Timestamp, Seq)> = events
        .iter()
        .filter(|(_, k)| k.patient.as_deref() == Some(patient.as_str()))
        .map(|(seq, k)| (k.at, *seq))
        .collect();
    want.sort();
    assert!(
        want.len() > 5 && events.iter().any(|(_, k)| k.legacy),
        "the traffic has the accesses the check needs"
    );
    let got = read::accesses_of_patients(store, s, &both, None, None)
        .await
        .unwrap();
    let got_seqs: Vec<(Timestamp, Seq)> = got
        .iter()
        .map(|a| (Timestamp::parse_rfc3339(&a.occurred_at).unwrap(), a.seq))
        .collect();
    assert_eq!(got_seqs, want, "accesses of {patient}");
    assert!(got
        .iter()
        .any(|a| a.patient.as_deref() == Some(both[1].as_str())));
    // Every patient, the bucket's neighbour of patient 0 included: exactly their accesses.
    for k in (0..6).chain([neighbour()]) {
        let keyed = pseudonym(&raw_patient(k), false);
        let want: Vec<Seq> = events
            .iter()
            .filter(|(_, e)| !e.legacy && e.patient == Some(raw_patient(k)))
            .map(|(seq, _)| *seq)
            .collect();
        let mut got: Vec<Seq> = read::accesses_of_patients(store, s, &[keyed], None, None)
            .await
            .unwrap()
            .iter()
            .map(|a| a.seq)
            .collect();
        got.sort_unstable();
        assert_eq!(got, want, "accesses of patient {k}");
        assert!(!want.is_empty());
    }
    // Repeated keys and a time range.
    let (from, to) = (local(1, 0, 0), local(4, 0, 0));
    let in_range = read::accesses_of_patients(
        store,
        s,
        &[both[0].clone(), both[1].clone(), both[0].clone()],
        Some(from),
        Some(to),
    )
    .await
    .unwrap();
    let want_in_range: Vec<Seq> = want
        .iter()
        .filter(|(at, _)| *at >= from && *at < to)
        .map(|(_, seq)| *seq)
        .collect();
    assert_eq!(
        in_range.iter().map(|a| a.seq).collect::<Vec<_>>(),
        want_in_range
    );

    // One user's accesses, the first few.
    let user = pseudonym(&raw_user(1), false);
    let mut want_user: Vec<(Timestamp, Seq)> = events
        .iter()
        .filter(|(_, k)| k.phi && !k.legacy && k.user.as_deref() == Some(raw_user(1).as_str()))
        .map(|(seq, k)| (k.at, *seq))
        .collect();
    want_user.sort();
    let got = read::accesses_of_user(store, s, &user, None, None, 5)
        .await
        .unwrap();
    assert_eq!(
        got.iter().map(|a| a.seq).collect::<Vec<_>>(),
        want_user
            .iter()
            .take(5)
            .map(|(_, s)| *s)
            .collect::<Vec<_>>()
    );
    assert!(got.iter().all(|a| a.user.as_deref() == Some(user.as_str())));
    // All of them, each the access its patient's rows hold: the same fields read two ways
    // (from the ledger entries `user_access` lists, and from the lean `patient` rows).
    let all = read::accesses_of_user(store, s, &user, None, None, usize::MAX)
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|a| a.seq).collect::<Vec<_>>(),
        want_user.iter().map(|(_, s)| *s).collect::<Vec<_>>()
    );
    for a in &all {
        if let Some(p) = &a.patient {
            let of_patient =
                read::accesses_of_patients(store, s, std::slice::from_ref(p), None, None)
                    .await
                    .unwrap();
            assert!(of_patient.contains(a), "{a:?}");
        }
    }

    // Per-day totals, late rows merged in.
    let first = first_day();
    let end = first + chrono::Duration::days(i64::from(DAYS_GENERATED));
    let days = read::day_totals(store, s, cal, first, end).await.unwrap();
    assert_eq!(days.len(), DAYS_GENERATED as usize);
    for (d, totals) in days.iter().enumerate() {
        let of_day: Vec<&(Seq, &Known)> =
            events.iter().filter(|(_, k)| k.day == d as u32).collect();
        let count = |f: fn(&Known) -> bool| of_day.iter().filter(|(_, k)| f(k)).count() as u64;
        let day = (first + chrono::Duration::days(d as i64)).to_string();
        assert_eq!(totals.day, day);
        assert_eq!(totals.events, of_day.len() as u64, "{day}");
        assert_eq!(totals.phi_accesses, count(|k| k.phi), "{day}");
        assert_eq!(totals.logins, count(|k| k.login), "{day}");
        assert_eq!(totals.failed_logins, count(|k| k.failed_login), "{day}");
        assert_eq!(
            totals.after_hours_phi,
            count(|k| k.after_hours_phi),
            "{day}"
        );
        assert_eq!(totals.exports, count(|k| k.export), "{day}");
        assert_eq!(
            totals.changes.values().sum::<u64>(),
            count(|k| k.change),
            "{day}"
        );
        assert_eq!(
            totals.phi_by_role.values().sum::<u64>(),
            totals.phi_accesses
        );
        assert_eq!(
            totals.first_seq,
            of_day.iter().map(|(s, _)| *s).min().unwrap()
        );
        assert_eq!(
            totals.last_seq,
            of_day.iter().map(|(s, _)| *s).max().unwrap()
        );
    }
    // The late events are in late rows, and only they.
    let late: BTreeSet<Seq> = events
        .iter()
        .filter(|(_, k)| k.late)
        .map(|(s, _)| *s)
        .collect();
    assert_eq!(late.len(), 2);
    for table in [DAYS_LATE, USER_DAYS_LATE] {
        let ords: BTreeSet<Seq> = rows[&table].iter().map(|r| r.1 as Seq).collect();
        assert_eq!(ords, late, "{table}");
    }
    // A sub-range, and an empty one.
    let mid = read::day_totals(
        store,
        s,
        cal,
        first + chrono::Duration::days(1),
        first + chrono::Duration::days(3),
    )
    .await
    .unwrap();
    assert_eq!(
        mid.iter().map(|t| t.day.as_str()).collect::<Vec<_>>(),
        ["2026-11-17", "2026-11-18"]
    );
    assert!(read::day_totals(store, s, cal, end, first)
        .await
        .unwrap()
        .is_empty());

    // Per user-day: counts, and distinct patients (exact for the open days' events; a late
    // row adds its own patient, here one the user had not accessed that day).
    #[derive(Default)]
    struct Want {
        events: u64,
        phi: u64,
        patients: BTreeSet<String>,
        late_patients: u64,
    }
    let mut want_ud: BTreeMap<(String, String), Want> = BTreeMap::new();
    for (_, k) in &events {
        let Some(user) = k.user_pseudonym() else {
            continue;
        };
        let day = (first + chrono::Duration::days(i64::from(k.day))).to_string();
        let w = want_ud.entry((day, user)).or_default();
        w.events += 1;
        if k.phi {
            w.phi += 1;
            let p = k.patient_pseudonym().unwrap();
            if k.late {
                assert!(
                    !w.patients.contains(&p),
                    "the traffic's late patients are new that day"
                );
                w.late_patients += 1;
            } else {
                w.patients.insert(p);
            }
        }
    }
    let user_days = read::user_days(store, s, cal, first, end).await.unwrap();
    let got_ud: BTreeMap<(String, String), (u64, u64, u64)> = user_days
        .iter()
        .map(|u| {
            (
                (u.day.clone(), u.user.clone()),
                (u.events, u.phi_accesses, u.distinct_patients),
            )
        })
        .collect();
    let want_ud: BTreeMap<(String, String), (u64, u64, u64)> = want_ud
        .into_iter()
        .map(|(k, w)| {
            let distinct = w.patients.len() as u64 + w.late_patients;
            (k, (w.events, w.phi, distinct))
        })
        .collect();
    assert_eq!(got_ud, want_ud);
    let order: Vec<(String, String)> = user_days
        .iter()
        .map(|u| (u.day.clone(), u.user.clone()))
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "sorted by (day, user)"
    );
    let clerk = user_days
        .iter()
        .find(|u| u.user == pseudonym(&raw_user(3), false) && u.day == "2026-11-19")
        .unwrap();
    assert_eq!(clerk.role.as_deref(), Some("clerk"));

    // System changes.
    let changes = read::changes(store, s, local(0, 0, 0), local(DAYS_GENERATED, 0, 0))
        .await
        .unwrap();
    let want_changes: Vec<Seq> = events
        .iter()
        .filter(|(_, k)| k.change)
        .map(|(s, _)| *s)
        .collect();
    assert_eq!(
        changes.iter().map(|c| c.seq).collect::<Vec<_>>(),
        want_changes
    );
    assert_eq!(changes[0].action, "role_change");
}
