//! The readers' futures are `Send` (the server awaits them on its runtime). Their paging is
//! `ledger::readmodel::paged`, tested there; the readers on real stores are in the store
//! conformance suite.

use super::*;

#[test]
fn the_readers_futures_are_send() {
    fn send<T: Send>(_: T) {}
    let store: Option<&dyn Store> = None;
    if let Some(store) = store {
        let s = StreamId::default();
        send(accesses_of_patients(store, &s, &[], None, None));
        send(patient_rows(store, &s, &[], None, None));
        send(accesses_of_user(store, &s, "u", None, None, 1));
        send(changes(store, &s, Timestamp(0), Timestamp(1)));
        send(position(store, &s));
        let cal = SiteCalendar::new(&crate::AnalyticsConfig::default());
        let day = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
        send(day_totals(store, &s, &cal, day, day));
        send(user_days(store, &s, &cal, day, day));
    }
}
