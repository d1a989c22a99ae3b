//! Times in reports for people and `--json`: RFC 3339 in UTC with microseconds (the read
//! model's rows keep plain microseconds, which round-trip exactly).

use ledger::Timestamp;
use serde::Serializer;

pub(crate) fn rfc3339<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339())
}

pub(crate) fn opt_rfc3339<S: Serializer>(t: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&t.to_rfc3339()),
        None => s.serialize_none(),
    }
}
