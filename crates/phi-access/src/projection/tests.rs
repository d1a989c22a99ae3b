//! The projection on hand-built verified entries, without a store: the rows of one access,
//! what non-PHI events count in, late events, and that a state saved and restored anywhere in
//! the stream leads to the same final rows as an uninterrupted run.

use std::collections::BTreeMap;

use ledger::payload::{StoredActor, StoredResource};
use ledger::{Digest, Pseudonymizer};
use proptest::prelude::*;

use super::*;
use crate::model::{is_phi_access, patient_of, PatientAccess};

/// 2026-11-23, a Monday: 15:00 UTC is 10:00 in New York (working hours).
const MONDAY_10AM: i64 = 1_795_446_000_000_000;
const HOUR: i64 = 3_600_000_000;
const DAY: i64 = 24 * HOUR;

const USER_A: &str = "0fd71958:aaaa";
const USER_B: &str = "0fd71958:bbbb";
const PATIENT_1: &str = "0fd71958:1111";
const PATIENT_2: &str = "0fd71958:2222";

fn event(at: i64, action: &str, user: Option<&str>, patient: Option<&str>) -> StoredEvent {
    StoredEvent {
        phi: patient.is_some(),
        idem: None,
        actor: StoredActor {
            ip: Some("0fd71958:ip".into()),
            role: Some("nurse".into()),
            user_id: user.map(str::to_owned),
            session_id: None,
            user_agent: None,
        },
        action: action.to_owned(),
        detail: None,
        record: None,
        source: "ehr-web".into(),
        outcome: "success".into(),
        request: None,
        resource: patient.map(|p| StoredResource {
            id: Some(p.to_owned()),
            kind: "Patient".into(),
        }),
        patient_id: patient.map(str::to_owned),
        occurred_at: at,
    }
}

fn hash_of(seq: Seq) -> Digest {
    Digest(*blake3::hash(&seq.to_be_bytes()).as_bytes())
}

/// Applies `events` as entries 1.. (after a genesis entry 0) to `p`, starting at `first_seq`.
fn feed(p: &mut PhiAccessProjection, first_seq: Seq, events: &[StoredEvent]) -> Effects {
    let mut effects = Effects::default();
    if first_seq == 1 {
        p.apply(
            &VerifiedEntry {
                seq: 0,
                entry_hash: hash_of(0),
                recorded_at: Timestamp(0),
                event: None,
            },
            &mut effects,
        );
    }
    for (i, e) in events.iter().enumerate() {
        let seq = first_seq + i as Seq;
        p.apply(
            &VerifiedEntry {
                seq,
                entry_hash: hash_of(seq),
                recorded_at: Timestamp(e.occurred_at),
                event: Some(e),
            },
            &mut effects,
        );
    }
    effects
}

/// A read model in memory: what a store holds after the changes.
type Rows = BTreeMap<(String, String, i64), (Timestamp, String)>;

fn commit(rows: &mut Rows, effects: Effects) {
    assert!(effects.own.is_empty(), "the projection appends no entries");
    for c in effects.changes {
        match c {
            RowChange::Put(r) => {
                rows.insert((r.table, r.key, r.ord), (r.at, r.value));
            }
            RowChange::Delete { table, key, ord } => {
                rows.remove(&(table, key, ord));
            }
        }
    }
}

/// Runs the projection over `events`, committing (flush, snapshot, restore into a new
/// projection) before each index in `cuts`, and at the end.
fn run(config: &AnalyticsConfig, events: &[StoredEvent], cuts: &[usize]) -> (Rows, Vec<u8>) {
    let mut rows = Rows::new();
    let mut p = PhiAccessProjection::new(config.clone());
    let mut at = 0;
    let mut cuts: Vec<usize> = cuts
        .iter()
        .copied()
        .filter(|c| *c <= events.len())
        .collect();
    cuts.sort();
    cuts.push(events.len());
    for cut in cuts {
        let mut effects = feed(&mut p, at as Seq + 1, &events[at..cut]);
        p.flush(&mut effects);
        commit(&mut rows, effects);
        let state = p.snapshot();
        p = PhiAccessProjection::new(config.clone());
        p.restore(&state).unwrap();
        assert_eq!(p.snapshot(), state, "restore then snapshot is the identity");
        at = cut;
    }
    (rows, p.snapshot())
}

fn table(rows: &Rows, name: &str) -> Vec<(String, i64, Timestamp, serde_json::Value)> {
    rows.iter()
        .filter(|((t, _, _), _)| t == name)
        .map(|((_, k, o), (at, v))| (k.clone(), *o, *at, serde_json::from_str(v).unwrap()))
        .collect()
}

fn day_totals(rows: &Rows, day: &str) -> DayTotals {
    let mut t = DayTotals::default();
    for (_, _, _, v) in table(rows, DAYS)
        .into_iter()
        .chain(table(rows, DAYS_LATE))
        .filter(|(k, ..)| k == day)
    {
        t.merge(&serde_json::from_value(v).unwrap());
    }
    t
}

/// The user-day of `user` on `day` (site-local, default calendar), late rows merged in. Rows
/// hold neither the user nor the day (their key and `at` do).
fn user_day(rows: &Rows, user: &str, day: &str) -> UserDay {
    let cal = SiteCalendar::new(&AnalyticsConfig::default());
    let mut u = UserDay::default();
    for (_, _, at, v) in table(rows, USER_DAYS)
        .into_iter()
        .chain(table(rows, USER_DAYS_LATE))
        .filter(|(k, ..)| k == user)
    {
        let d: UserDay = serde_json::from_value(v).unwrap();
        assert!(d.user.is_empty() && d.day.is_empty(), "{d:?}");
        if cal.date(at).to_string() == day {
            u.merge(&d);
        }
    }
    u
}

/// The seqs listed by the `user_access` rows of `key`, ascending.
fn listed(rows: &Rows, key: &str) -> Vec<Seq> {
    let mut seqs: Vec<Seq> = table(rows, USER_ACCESSES)
        .into_iter()
        .filter(|(k, ..)| k == key)
        .flat_map(|(.., v)| serde_json::from_value::<UserAccesses>(v).unwrap().seqs)
        .collect();
    seqs.sort_unstable();
    seqs
}

/// `rows` with each key's `user_access` rows merged into one (their rows are cut where commits
/// fell; the seqs they list are what must not depend on it).
fn merged(rows: &Rows) -> Rows {
    let mut out: Rows = rows
        .iter()
        .filter(|((t, _, _), _)| t != USER_ACCESSES)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (key, _, at, _) in table(rows, USER_ACCESSES) {
        let seqs = listed(rows, &key);
        let value = serde_json::to_string(&UserAccesses { seqs }).unwrap();
        out.insert((USER_ACCESSES.to_owned(), key, 0), (at, value));
    }
    out
}

#[test]
fn a_phi_access_is_a_patient_row_and_a_seq_of_its_user() {
    let config = AnalyticsConfig::default();
    let e = event(MONDAY_10AM, "read", Some(USER_A), Some(PATIENT_1));
    let (rows, _) = run(&config, std::slice::from_ref(&e), &[]);
    let patient = table(&rows, PATIENTS);
    assert_eq!(patient.len(), 1);
    let (key, ord, at, value) = &patient[0];
    // Monday 2026-11-23: the November 2026 rows of the patient's bucket.
    assert_eq!(
        (key.as_str(), *ord, *at),
        ("2026-11/7d5", 1, Timestamp(MONDAY_10AM))
    );
    assert_eq!(
        key,
        &Month::of(Timestamp(MONDAY_10AM)).patient_key(PATIENT_1)
    );
    let row: PatientAccess = serde_json::from_value(value.clone()).unwrap();
    assert_eq!(row, PatientAccess::of(PATIENT_1, &hash_of(1)));
    assert_eq!(row.patient, PATIENT_1);
    assert_eq!(row.entry_hash_prefix, hash_of(1).to_hex()[..16]);
    let access = Access::from_event(1, &hash_of(1), &e, &config).unwrap();
    assert_eq!(
        row.mismatch(*at, &access),
        None,
        "the row and its at describe the access of the entry it cites"
    );
    let other = Access::from_event(1, &hash_of(2), &e, &config).unwrap();
    assert!(row.mismatch(*at, &other).is_some(), "another hash");
    let elsewhere = event(MONDAY_10AM, "read", Some(USER_A), Some(PATIENT_2));
    let elsewhere = Access::from_event(1, &hash_of(1), &elsewhere, &config).unwrap();
    assert!(row.mismatch(*at, &elsewhere).is_some(), "another patient");
    assert!(
        row.mismatch(Timestamp(MONDAY_10AM + 1), &access).is_some(),
        "another time"
    );
    assert_eq!(
        value.as_object().unwrap().len(),
        2,
        "only the patient and the hash prefix: the rest is in the entry"
    );

    let user = table(&rows, USER_ACCESSES);
    assert_eq!(user.len(), 1);
    assert_eq!(
        (user[0].0.as_str(), user[0].1, user[0].2),
        (
            format!("2026-11/{USER_A}").as_str(),
            1,
            utc("2026-11-01T00:00:00Z")
        )
    );
    assert_eq!(listed(&rows, &user[0].0), [1]);

    let days = table(&rows, DAYS);
    assert_eq!(days.len(), 1);
    assert_eq!(days[0].0, "2026-11-23");
    assert_eq!(days[0].1, 0);
    assert_eq!(days[0].2.to_rfc3339(), "2026-11-23T05:00:00.000000Z");
    let t = day_totals(&rows, "2026-11-23");
    assert_eq!((t.events, t.phi_accesses, t.after_hours_phi), (1, 1, 0));
    assert_eq!(t.phi_by_role["nurse"], 1);
    assert_eq!(t.phi_by_action["read"], 1);
    assert_eq!(t.phi_by_resource_type["Patient"], 1);
    assert_eq!(t.phi_by_outcome["success"], 1);
    assert_eq!((t.first_seq, t.last_seq), (1, 1));
    let user_days = table(&rows, USER_DAYS);
    assert_eq!(user_days.len(), 1);
    assert_eq!(user_days[0].0, USER_A);
    assert_eq!(
        user_days[0].1,
        day_number(NaiveDate::from_ymd_opt(2026, 11, 23).unwrap())
    );
    let u = user_day(&rows, USER_A, "2026-11-23");
    assert_eq!(
        (u.events, u.phi_accesses, u.phi_reads, u.distinct_patients),
        (1, 1, 1, 1)
    );
    assert!(table(&rows, DAYS_LATE).is_empty() && table(&rows, CHANGES).is_empty());
}

#[test]
fn non_phi_events_count_only_in_the_aggregates() {
    let config = AnalyticsConfig::default();
    let mut schedule = event(MONDAY_10AM + 3, "read", Some(USER_A), None);
    schedule.resource = Some(StoredResource {
        id: Some("0fd71958:cccc".into()),
        kind: "Schedule".into(),
    });
    let mut failed = event(MONDAY_10AM + 2, "login", Some(USER_A), None);
    failed.outcome = "failure".into();
    let events = [
        event(MONDAY_10AM, "login", Some(USER_A), None),
        event(MONDAY_10AM + 1, "login_failed", Some(USER_B), None),
        failed,
        schedule,
        event(MONDAY_10AM + 4, "logout", Some(USER_A), None),
        event(MONDAY_10AM + 5, "export", None, None),
    ];
    let (rows, _) = run(&config, &events, &[]);
    assert!(table(&rows, PATIENTS).is_empty());
    assert!(table(&rows, USER_ACCESSES).is_empty());
    let t = day_totals(&rows, "2026-11-23");
    assert_eq!(t.events, 6);
    assert_eq!(t.logins, 3, "login (any outcome) and login_failed");
    assert_eq!(t.failed_logins, 2);
    assert_eq!(t.failed_logins_by_source["ehr-web"], 2);
    assert_eq!(t.exports, 1);
    assert_eq!(t.phi_accesses, 0);
    assert!(t.phi_by_action.is_empty());
    let a = user_day(&rows, USER_A, "2026-11-23");
    assert_eq!(
        (
            a.events,
            a.logins,
            a.failed_logins,
            a.failures,
            a.phi_accesses,
            a.distinct_patients
        ),
        (4, 2, 1, 1, 0, 0)
    );
    assert_eq!(
        table(&rows, USER_DAYS).len(),
        2,
        "no user-day for an event without a user"
    );
}

#[test]
fn after_hours_reads_distinct_patients_and_role() {
    let config = AnalyticsConfig::default();
    let mut update = event(MONDAY_10AM + 1, "update", Some(USER_A), Some(PATIENT_2));
    update.actor.role = Some("physician".into());
    let mut no_role = event(MONDAY_10AM + 2, "read", Some(USER_A), Some(PATIENT_1));
    no_role.actor.role = None;
    let events = [
        event(MONDAY_10AM, "read", Some(USER_A), Some(PATIENT_1)),
        update,
        no_role,
        // 23:00 in New York, still Monday there.
        event(
            MONDAY_10AM + 13 * HOUR,
            "record_view",
            Some(USER_A),
            Some(PATIENT_1),
        ),
    ];
    let (rows, _) = run(&config, &events, &[2]);
    let u = user_day(&rows, USER_A, "2026-11-23");
    assert_eq!(u.phi_accesses, 4);
    assert_eq!(u.phi_reads, 3, "read, read, record_view; not update");
    assert_eq!(u.distinct_patients, 2);
    assert_eq!(u.after_hours_phi, 1);
    assert_eq!(u.role.as_deref(), Some("nurse"), "the latest role given");
    assert_eq!((u.first_seq, u.last_seq), (1, 4));
    let t = day_totals(&rows, "2026-11-23");
    assert_eq!(t.after_hours_phi, 1);
    assert_eq!(t.phi_by_role["(none)"], 1);
    assert_eq!(t.phi_by_role["physician"], 1);
    assert_eq!(t.phi_by_action["update"], 1);
}

#[test]
fn changes_are_rows_by_action() {
    let config = AnalyticsConfig::default();
    let mut change = event(MONDAY_10AM, "role_change", Some(USER_A), None);
    change.detail = Some("granted admin".into());
    let (rows, _) = run(&config, &[change], &[]);
    let changes = table(&rows, CHANGES);
    assert_eq!(changes.len(), 1);
    assert_eq!((changes[0].0.as_str(), changes[0].1), ("role_change", 1));
    let c: Change = serde_json::from_value(changes[0].3.clone()).unwrap();
    assert_eq!(c.detail.as_deref(), Some("granted admin"));
    assert_eq!(c.user.as_deref(), Some(USER_A));
    assert_eq!(day_totals(&rows, "2026-11-23").changes["role_change"], 1);
}

#[test]
fn legacy_patient_pseudonyms_are_keys_like_any_other() {
    let config = AnalyticsConfig::default();
    let legacy = Pseudonymizer::legacy_sha256("p-20931").to_string();
    assert!(legacy.starts_with("sha256:"));
    let events = [
        event(MONDAY_10AM, "read", Some(USER_A), Some(&legacy)),
        event(MONDAY_10AM + 1, "read", Some(USER_A), Some(PATIENT_1)),
    ];
    let (rows, _) = run(&config, &events, &[]);
    let rows_of = |p: &str| -> Vec<(String, i64)> {
        table(&rows, PATIENTS)
            .into_iter()
            .filter(|r| r.3["p"] == p)
            .map(|r| (r.0, r.1))
            .collect()
    };
    let november = Month::of(Timestamp(MONDAY_10AM));
    assert_eq!(rows_of(&legacy), [(november.patient_key(&legacy), 1)]);
    assert_eq!(rows_of(PATIENT_1), [(november.patient_key(PATIENT_1), 2)]);
    assert_eq!(user_day(&rows, USER_A, "2026-11-23").distinct_patients, 2);
}

#[test]
fn late_events_write_rows_of_their_own_contribution() {
    let config = AnalyticsConfig::default(); // late_days = 3
    let events = [
        event(MONDAY_10AM, "read", Some(USER_A), Some(PATIENT_1)),
        // Friday: Monday is 4 days behind, closed.
        event(MONDAY_10AM + 4 * DAY, "read", Some(USER_B), Some(PATIENT_2)),
        // Monday again: late.
        event(MONDAY_10AM + 60, "read", Some(USER_A), Some(PATIENT_2)),
        // Tuesday: 3 days behind Friday, still open.
        event(MONDAY_10AM + DAY, "read", Some(USER_A), Some(PATIENT_2)),
    ];
    for cuts in [vec![], vec![1], vec![2], vec![3], vec![1, 2, 3]] {
        let (rows, state) = run(&config, &events, &cuts);
        let late = table(&rows, DAYS_LATE);
        assert_eq!(late.len(), 1, "cuts {cuts:?}");
        assert_eq!((late[0].0.as_str(), late[0].1), ("2026-11-23", 3));
        let late_users = table(&rows, USER_DAYS_LATE);
        assert_eq!(late_users.len(), 1);
        assert_eq!((late_users[0].0.as_str(), late_users[0].1), (USER_A, 3));
        assert_eq!(late_users[0].2, late[0].2, "at: the start of the day");
        let only: UserDay = serde_json::from_value(late_users[0].3.clone()).unwrap();
        assert_eq!(
            (only.events, only.phi_accesses, only.distinct_patients),
            (1, 1, 1)
        );
        assert_eq!(
            (only.user.as_str(), only.day.as_str()),
            ("", ""),
            "in the key and at"
        );

        let monday = day_totals(&rows, "2026-11-23");
        assert_eq!((monday.events, monday.phi_accesses), (2, 2));
        assert_eq!((monday.first_seq, monday.last_seq), (1, 3));
        let a = user_day(&rows, USER_A, "2026-11-23");
        assert_eq!((a.events, a.distinct_patients), (2, 2));
        assert_eq!(day_totals(&rows, "2026-11-24").events, 1);
        assert_eq!(table(&rows, DAYS).len(), 3);

        // Monday left memory once written; Tuesday..Friday stay open.
        let mut p = PhiAccessProjection::new(config.clone());
        p.restore(&state).unwrap();
        let open: Vec<i64> = p.days.keys().copied().collect();
        let monday_n = day_number(NaiveDate::from_ymd_opt(2026, 11, 23).unwrap());
        assert_eq!(open, [monday_n + 1, monday_n + 4]);
    }
}

#[test]
fn a_state_of_another_version_or_shape_is_refused() {
    let mut p = PhiAccessProjection::new(AnalyticsConfig::default());
    let mut other = Vec::new();
    ciborium::into_writer(
        &(
            STATE_VERSION + 1,
            &State {
                config: AnalyticsConfig::default().rows_fingerprint().to_vec(),
                newest_day: None,
                days: vec![],
            },
        ),
        &mut other,
    )
    .unwrap();
    let err = p.restore(&other).unwrap_err();
    assert!(err.contains("version"), "{err}");
    assert!(p.restore(b"\xff").is_err());
    let mut bad = Vec::new();
    ciborium::into_writer(&(STATE_VERSION, "not a state"), &mut bad).unwrap();
    assert!(p.restore(&bad).is_err());
}

#[test]
fn a_state_saved_under_another_configuration_of_the_rows_is_refused() {
    let config = AnalyticsConfig::default();
    let (_, state) = run(
        &config,
        &[event(MONDAY_10AM, "read", Some(USER_A), Some(PATIENT_1))],
        &[],
    );
    let resume = |c: AnalyticsConfig| PhiAccessProjection::new(c).restore(&state);
    resume(config.clone()).unwrap();
    // What is read at report time, and what the projection compares without case or order,
    // changes nothing.
    let mut same = config.clone();
    same.unusual.sigma = 5.0;
    same.export_actions.reverse();
    same.change_actions[0] = same.change_actions[0].to_uppercase();
    resume(same).unwrap();
    // What the rows depend on does.
    let mut changes: Vec<AnalyticsConfig> = vec![config.clone(); 6];
    changes[0].clinical_resource_types.pop();
    changes[1].export_actions.push("print".into());
    changes[2].change_actions.clear();
    changes[3].late_days = 7;
    changes[4].site.timezone = "Europe/Paris".into();
    changes[5].site.weekdays_only = false;
    for (i, c) in changes.into_iter().enumerate() {
        let err = resume(c).unwrap_err();
        assert!(
            err.contains("another phi-access configuration"),
            "{i}: {err}"
        );
    }
}

#[test]
fn the_state_is_compact() {
    let config = AnalyticsConfig::default();
    // 50 users each reading 40 patients on one day.
    let events: Vec<StoredEvent> = (0..2_000)
        .map(|i| {
            let user = format!("0fd71958:{:064x}", i % 50);
            let patient = format!("0fd71958:{:064x}", 1_000 + i / 50);
            event(MONDAY_10AM + i as i64, "read", Some(&user), Some(&patient))
        })
        .collect();
    let (_, state) = run(&config, &events, &[]);
    // Per user-day: pseudonym (~75 bytes), counters, 40 patients x 8 bytes.
    assert!(
        state.len() < 50 * (100 + 40 * 8) + 2_000,
        "{} bytes",
        state.len()
    );
}

#[derive(Debug, Clone)]
struct Gen {
    /// Day offset from Monday, 0..8.
    day: u8,
    hour: u8,
    action: u8,
    user: Option<u8>,
    patient: Option<u8>,
}

fn generated(g: &Gen) -> StoredEvent {
    let action = [
        "read",
        "update",
        "login",
        "login_failed",
        "export",
        "role_change",
        "search",
    ][g.action as usize % 7];
    let user = g.user.map(|u| format!("0fd71958:u{u}"));
    let patient = g.patient.map(|p| {
        if matches!(p, 0 | 5 | 10) {
            Pseudonymizer::legacy_sha256(&format!("p{p}")).to_string()
        } else {
            format!("0fd71958:p{p}")
        }
    });
    let at = MONDAY_10AM - 10 * HOUR + i64::from(g.day) * DAY + i64::from(g.hour) * HOUR;
    let mut e = event(at, action, user.as_deref(), patient.as_deref());
    if matches!(g.action, 0 | 3 | 6) {
        e.outcome = "denied".into();
    }
    e
}

fn gens() -> impl Strategy<Value = Vec<Gen>> {
    prop::collection::vec(
        (
            0..8u8,
            0..24u8,
            0..7u8,
            prop::option::weighted(0.9, 0..5u8),
            prop::option::weighted(0.7, 0..12u8),
        )
            .prop_map(|(day, hour, action, user, patient)| Gen {
                day,
                hour,
                action,
                user,
                patient,
            }),
        1..80,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Saving and restoring anywhere, flushing often or once, gives the same final rows, and
    /// merged rows count every event exactly once.
    #[test]
    fn restoring_anywhere_gives_the_rows_of_one_run(
        gens in gens(),
        cuts in prop::collection::vec(0..80usize, 0..6),
        late_days in 0..4u32,
    ) {
        let config = AnalyticsConfig { late_days, ..AnalyticsConfig::default() };
        let events: Vec<StoredEvent> = gens.iter().map(generated).collect();
        let (once, _) = run(&config, &events, &[]);
        let (cut, _) = run(&config, &events, &cuts);
        prop_assert_eq!(merged(&cut), merged(&once));
        let every: Vec<usize> = (1..events.len()).collect();
        let (each, _) = run(&config, &events, &every);
        prop_assert_eq!(merged(&each), merged(&once));

        // Every event once in its day's merged totals; every PHI access once in `patient`.
        let cal = SiteCalendar::new(&config);
        let mut by_day: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        let mut by_user_day: BTreeMap<(String, String), u64> = BTreeMap::new();
        for e in &events {
            let day = cal.date(Timestamp(e.occurred_at)).to_string();
            let phi = u64::from(is_phi_access(e, &config));
            let d = by_day.entry(day.clone()).or_default();
            d.0 += 1;
            d.1 += phi;
            if let Some(u) = &e.actor.user_id {
                *by_user_day.entry((u.clone(), day)).or_default() += 1;
            }
        }
        for (day, (n, phi)) in &by_day {
            let t = day_totals(&once, day);
            prop_assert_eq!((t.events, t.phi_accesses), (*n, *phi), "day {}", day);
        }
        for ((user, day), n) in &by_user_day {
            prop_assert_eq!(user_day(&once, user, day).events, *n);
        }
        let patients = events.iter().filter(|e| patient_of(e).is_some()).count();
        prop_assert_eq!(table(&once, PATIENTS).len(), patients);
        // Every PHI access with a user once in the user's `user_access` rows of its month, in
        // whichever row the cuts put it.
        let mut by_user: BTreeMap<String, Vec<Seq>> = BTreeMap::new();
        for (i, e) in events.iter().enumerate() {
            if let (true, Some(u)) = (is_phi_access(e, &config), &e.actor.user_id) {
                by_user
                    .entry(access_key(u, Timestamp(e.occurred_at)))
                    .or_default()
                    .push(i as Seq + 1);
            }
        }
        for (key, seqs) in &by_user {
            prop_assert_eq!(&listed(&each, key), seqs);
            prop_assert_eq!(&listed(&once, key), seqs);
        }
        let keys: Vec<String> = table(&merged(&each), USER_ACCESSES).into_iter().map(|r| r.0).collect();
        prop_assert_eq!(keys, by_user.keys().cloned().collect::<Vec<_>>());
    }
}

#[test]
fn an_event_dated_far_ahead_does_not_make_todays_events_late() {
    let config = AnalyticsConfig::default();
    let mut p = PhiAccessProjection::new(config);
    let mut effects = Effects::default();
    // A source with a clock decades ahead, recorded on Monday.
    let ahead = event(
        MONDAY_10AM + 70 * 365 * DAY,
        "read",
        Some(USER_A),
        Some(PATIENT_1),
    );
    let monday = event(MONDAY_10AM + 60, "read", Some(USER_B), Some(PATIENT_2));
    for (seq, e) in [(1, &ahead), (2, &monday)] {
        p.apply(
            &VerifiedEntry {
                seq,
                entry_hash: hash_of(seq),
                recorded_at: Timestamp(MONDAY_10AM + 60),
                event: Some(e),
            },
            &mut effects,
        );
    }
    p.flush(&mut effects);
    let mut rows = Rows::new();
    commit(&mut rows, effects);
    assert!(table(&rows, DAYS_LATE).is_empty(), "Monday is not late");
    assert_eq!(day_totals(&rows, "2026-11-23").events, 1);
}

fn utc(s: &str) -> Timestamp {
    Timestamp::parse_rfc3339(s).unwrap()
}

#[test]
fn access_rows_are_keyed_by_utc_month_then_pseudonym() {
    // 23:30 in New York on 30 November is already December in UTC: the bucket is UTC's.
    assert_eq!(
        access_key("k:ab", utc("2026-12-01T04:30:00Z")),
        "2026-12/k:ab"
    );
    assert_eq!(
        access_key("k:ab", utc("2026-11-30T23:59:59.999999Z")),
        "2026-11/k:ab"
    );
    assert_eq!(
        access_key("sha256:ff", utc("0999-01-01T00:00:00Z")),
        "0999-01/sha256:ff"
    );
}

#[test]
fn patient_rows_are_keyed_by_utc_month_then_bucket() {
    let bucket = |p: &str| Month::of(utc("2026-12-01T04:30:00Z")).patient_key(p);
    // The UTC month, then three hex digits: the top 12 bits of the pseudonym's digest.
    assert_eq!(
        bucket("k:ab"),
        format!("2026-12/{:03x}", patient_bucket("k:ab"))
    );
    assert_eq!(
        patient_bucket("k:ab"),
        u64::from_be_bytes(blake3::hash(b"k:ab").as_bytes()[..8].try_into().unwrap()) >> 52
    );
    // Pseudonyms spread over every bucket, evenly: 64 per bucket on average here, and no
    // bucket gets three times its share.
    let mut counts = vec![0u32; PATIENT_BUCKETS as usize];
    for i in 0..PATIENT_BUCKETS * 64 {
        let b = patient_bucket(&format!("k1:{i:064x}"));
        assert!(b < PATIENT_BUCKETS);
        counts[b as usize] += 1;
    }
    assert!(counts.iter().all(|&n| (8..192).contains(&n)), "{counts:?}");
}

#[test]
fn a_range_spans_the_months_of_its_instants() {
    let months = |from: &str, to: &str| -> Vec<String> {
        Month::span(utc(from), utc(to))
            .into_iter()
            .map(|m| m.key(""))
            .collect()
    };
    // `to` is excluded: a range ending at a month's first instant does not reach that month.
    assert_eq!(
        months("2025-11-15T00:00:00Z", "2026-02-01T00:00:00Z"),
        ["2025-11/", "2025-12/", "2026-01/"]
    );
    assert_eq!(
        months("2026-02-01T00:00:00Z", "2026-02-01T00:00:00.000001Z"),
        ["2026-02/"]
    );
    assert!(months("2026-02-01T00:00:00Z", "2026-02-01T00:00:00Z").is_empty());
    assert!(months("2026-03-01T00:00:00Z", "2026-02-01T00:00:00Z").is_empty());
    // Six years are 73 months at most.
    assert_eq!(
        months("2020-11-01T00:00:00Z", "2026-11-01T00:00:00Z").len(),
        72
    );
    assert_eq!(
        months("2020-11-15T00:00:00Z", "2026-11-15T00:00:00Z").len(),
        73
    );
}
