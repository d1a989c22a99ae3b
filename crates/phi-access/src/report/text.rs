//! The accounting of disclosures for a terminal: the integrity statement first, then the
//! request, then one table line per access. Control characters from the data are replaced,
//! so a crafted value cannot drive the terminal.

use super::{integrity_warning, DisclosureReport};

/// Entry hashes are shortened to this many hex digits in the terminal table; the JSON, CSV
/// and HTML renderings carry them whole.
const HASH_DIGITS: usize = 16;

/// The accounting of disclosures as plain text.
pub fn disclosures_text(r: &DisclosureReport) -> String {
    let i = &r.integrity;
    let mut out = String::new();
    match integrity_warning(i) {
        Some(w) => {
            out.push_str(&format!("WARNING: {}\n", clean(&w)));
            out.push_str(&format!("Integrity: {}\n", clean(&i.statement)));
        }
        None => out.push_str(&format!("Integrity: {}\n", clean(&i.statement))),
    }
    out.push_str("\nACCOUNTING OF DISCLOSURES (45 CFR 164.528)\n");
    let mut facts = vec![
        ("Patient (pseudonym)", r.patient.clone()),
        ("Legacy pseudonym", r.legacy_pseudonym.clone()),
        ("Period", format!("{} to {} (exclusive)", r.from, r.to)),
        ("Stream", r.stream.clone()),
        ("Generated", r.generated_at.clone()),
    ];
    if let Some(request) = r.request() {
        facts.push(("Requested by", request));
    }
    facts.push(("Accesses", r.summary()));
    for (label, value) in facts {
        out.push_str(&format!("{:<21}{}\n", format!("{label}:"), clean(&value)));
    }
    out.push('\n');
    if r.lines.is_empty() {
        out.push_str("No access to this patient's PHI in this period.\n");
        return out;
    }
    out.push_str(&lines_table(r));
    out
}

fn lines_table(r: &DisclosureReport) -> String {
    let headers = [
        "OCCURRED AT (UTC)",
        "USER",
        "ROLE",
        "ACTION",
        "OUTCOME",
        "SOURCE",
        "RESOURCE",
        "SEQ",
        "ENTRY HASH",
        "MATCH",
        "VERIFIED",
    ];
    let dash = || "-".to_owned();
    let rows: Vec<Vec<String>> = r
        .lines
        .iter()
        .map(|l| {
            vec![
                l.occurred_at.clone(),
                l.user.clone().unwrap_or_else(dash),
                l.role.clone().unwrap_or_else(dash),
                l.action.clone(),
                l.outcome.clone(),
                l.source.clone(),
                l.resource_type.clone().unwrap_or_else(dash),
                l.seq.to_string(),
                short_hash(&l.entry_hash),
                if l.legacy { "legacy" } else { "keyed" }.to_owned(),
                if l.verified { "yes" } else { "NO" }.to_owned(),
            ]
        })
        .collect();
    text_table(&headers, &rows)
}

fn short_hash(h: &str) -> String {
    if h.chars().count() > HASH_DIGITS {
        format!("{}…", h.chars().take(HASH_DIGITS).collect::<String>())
    } else {
        h.to_owned()
    }
}

/// Left-aligned columns two spaces apart; the last column is not padded.
fn text_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| clean(c)).collect())
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(c);
                s.push_str(&" ".repeat(w - c.chars().count() + 2));
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(headers.to_vec());
    for r in &rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// `s` with control characters (escape sequences, line breaks) replaced by a space.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}
