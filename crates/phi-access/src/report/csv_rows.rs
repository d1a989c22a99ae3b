//! The reports as CSV: one long ("tidy") layout for both, derived from the JSON model field by
//! field, so every figure of the JSON is in the CSV under the same names, in the same order,
//! and a field added to a model appears without touching this file.

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Serialize;

use super::{DisclosureReport, HipaaReport, WithWarning};

/// The compliance report as CSV, with one value per line.
///
/// Layout: a header `section,table,key,subkey,value`, then one row per value, in the order
/// of the JSON model ([`hipaa_json`](super::hipaa_json)):
///
/// | JSON                                   | section | table      | key       | subkey  |
/// |----------------------------------------|---------|------------|-----------|---------|
/// | top-level value `title`                | report  |            | title     |         |
/// | `integrity.ok`                         | integrity |          | ok        |         |
/// | `integrity.checkpoint.size`            | integrity | checkpoint | size    |         |
/// | `phi_access.per_day[2].count`          | phi_access | per_day  | 3         | count   |
/// | `phi_access.unusual[0].value`          | phi_access | unusual  | 1         | value   |
///
/// - A section is a top-level object (`integrity`, `access_summary`, `security_events`,
///   `phi_access`, `system_changes`, `retention`, `period`); top-level plain values
///   (`warning`, `title`, `generated_at`, `stream`) are in section `report`.
/// - A table is a list or an object inside a section. The rows of a list are keyed by
///   their 1-based position, with the record's field names as `subkey`; the entries of an
///   object are keyed by their names.
/// - Deeper values (inside a record, e.g. a retention detail) have their names joined
///   with `.` in `subkey` (list positions 1-based).
/// - Values: numbers as in the JSON, `true`/`false`, text as is, an absent value (JSON
///   `null`) as an empty cell. An empty list has no rows. A text that a spreadsheet would
///   take for a formula (first character `=`, `+`, `-`, `@`, tab or carriage return) is
///   written with a leading `'` (see [`defuse`]).
/// - When the ledger did not verify, the first row is `report,,warning,,The ledger did NOT
///   verify over this period: ...`.
///
/// RFC 4180 quoting, `\n` line ends, UTF-8: a spreadsheet opens it, and a pivot on
/// (`table`, `key`) × `subkey` turns any table back into columns.
pub fn hipaa_csv(r: &HipaaReport) -> String {
    long_csv(r)
}

/// The disclosures report as CSV, in the same layout as [`hipaa_csv`]: `report,,patient,,…`
/// and the other top-level fields (`warning` first), the `integrity` section, and the lines
/// as table `lines` of section `report`, keyed by position (`report,lines,1,seq,…`).
pub fn disclosures_csv(r: &DisclosureReport) -> String {
    long_csv(&WithWarning::of(r))
}

/// The CSV header of the long layout.
pub(crate) const HEADER: [&str; 5] = ["section", "table", "key", "subkey", "value"];

fn long_csv<T: Serialize>(model: &T) -> String {
    let mut rows = Vec::new();
    flatten_top(&to_node(model), &mut rows);
    let mut w = ::csv::WriterBuilder::new()
        .terminator(::csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    // Writing to memory cannot fail, and every field is valid UTF-8 text.
    w.write_record(HEADER).expect("write to memory");
    for row in &rows {
        w.write_record(row).expect("write to memory");
    }
    let bytes = w.into_inner().expect("flush to memory");
    String::from_utf8(bytes).expect("fields are UTF-8")
}

/// A JSON value that keeps the order of object fields (serde_json's `Value` sorts them
/// unless a workspace-wide feature is on).
#[derive(Debug, Clone, PartialEq)]
enum Node {
    /// A number or a boolean, as the CSV cell shows it.
    Plain(String),
    /// A text.
    Text(String),
    Null,
    List(Vec<Node>),
    Object(Vec<(String, Node)>),
}

/// `model` as a [`Node`], through its JSON text (which keeps the declared field order).
fn to_node<T: Serialize>(model: &T) -> Node {
    // The report models are plain data with string keys: serializing and reading back the
    // JSON that serde_json itself wrote cannot fail.
    let json = serde_json::to_string(model).expect("report models serialize");
    serde_json::from_str(&json).expect("serde_json reads what it wrote")
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Plain(v.to_string()))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Plain(v.to_string()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Plain(v.to_string()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Node::Null, |n| Node::Plain(n.to_string())))
    }
    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Text(v.to_owned()))
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::List(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut fields = Vec::new();
        while let Some(entry) = map.next_entry::<String, Node>()? {
            fields.push(entry);
        }
        Ok(Node::Object(fields))
    }
}

/// A text a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, tab, carriage return
/// first) gets a leading `'`, which spreadsheets show as plain text: free text in a report
/// (a change's detail, a detection's summary) comes from the services and must not run.
pub(crate) fn defuse(text: &str) -> String {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    }
}

type Row = [String; 5];

fn row(section: &str, table: &str, key: &str, subkey: &str, value: &str) -> Row {
    [section, table, key, subkey, value].map(str::to_owned)
}

/// The top level: plain values and lists under `report`, objects as sections.
fn flatten_top(top: &Node, rows: &mut Vec<Row>) {
    let Node::Object(fields) = top else {
        return cell("report", "", "", "", top, rows);
    };
    for (name, node) in fields {
        match node {
            Node::Object(entries) => flatten_section(name, entries, rows),
            Node::List(items) => flatten_list("report", name, items, rows),
            _ => cell("report", "", name, "", node, rows),
        }
    }
}

fn flatten_section(section: &str, fields: &[(String, Node)], rows: &mut Vec<Row>) {
    for (name, node) in fields {
        match node {
            Node::List(items) => flatten_list(section, name, items, rows),
            Node::Object(entries) => {
                for (key, value) in entries {
                    cell(section, name, key, "", value, rows);
                }
            }
            _ => cell(section, "", name, "", node, rows),
        }
    }
}

fn flatten_list(section: &str, table: &str, items: &[Node], rows: &mut Vec<Row>) {
    for (i, item) in items.iter().enumerate() {
        cell(section, table, &(i + 1).to_string(), "", item, rows);
    }
}

/// One value at (`section`, `table`, `key`), its inner names joined onto `subkey`.
fn cell(section: &str, table: &str, key: &str, subkey: &str, node: &Node, rows: &mut Vec<Row>) {
    let join = |name: &str| {
        if subkey.is_empty() {
            name.to_owned()
        } else {
            format!("{subkey}.{name}")
        }
    };
    match node {
        Node::Plain(v) => rows.push(row(section, table, key, subkey, v)),
        Node::Text(v) => rows.push(row(section, table, key, subkey, &defuse(v))),
        Node::Null => rows.push(row(section, table, key, subkey, "")),
        Node::List(items) => {
            for (i, item) in items.iter().enumerate() {
                cell(section, table, key, &join(&(i + 1).to_string()), item, rows);
            }
        }
        Node::Object(fields) => {
            for (name, value) in fields {
                cell(section, table, key, &join(name), value, rows);
            }
        }
    }
}
