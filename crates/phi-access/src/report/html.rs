//! The reports as one self-contained HTML page each: inline CSS and script, an inline SVG
//! chart, no external reference of any kind (no fonts, images, styles or scripts from
//! elsewhere), so the file can be mailed, archived and opened offline in any browser.
//! Every text from the data goes through [`escape`]. The page reads fully without
//! JavaScript; the script only makes table headers sort their table. Printing hides the
//! controls, starts each section on a new page and keeps table rows whole.

use std::fmt::Write;

use serde_json::Value;

use super::{
    integrity_warning, Count, DayCount, DisclosureReport, HipaaReport, Integrity, PhiAccessSection,
    SecuritySection, SystemChanges,
};
use crate::patterns::{figure, num, Flag};

/// Escapes text for HTML content and quoted attribute values.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

const STYLE: &str = r#"
:root { color-scheme: light; --line: #c9ced6; --muted: #5b6470; --bad: #b00020; --ok: #1b6e3a; --warn: #8a5a00; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif; margin: 0 auto; max-width: 72rem; padding: 1.5rem; color: #1d232b; line-height: 1.4; }
h1 { margin: 0 0 .25rem; font-size: 1.6rem; } h2 { margin-top: 2rem; border-bottom: 2px solid var(--line); padding-bottom: .2rem; } h3 { margin: 1.2rem 0 .4rem; font-size: 1.05rem; }
.meta { color: var(--muted); margin: 0; }
nav a { margin-right: 1rem; }
.banner { padding: .8rem 1rem; border-radius: 4px; margin: 1rem 0; font-weight: 600; border: 2px solid; }
.banner.bad { background: #fde7ea; color: var(--bad); border-color: var(--bad); font-size: 1.15rem; }
.banner.ok { background: #e7f5ec; color: var(--ok); border-color: var(--ok); }
.banner.warn { background: #fff4dc; color: var(--warn); border-color: var(--warn); font-weight: 500; }
table { border-collapse: collapse; margin: .4rem 0 1rem; font-size: .9rem; }
th, td { border: 1px solid var(--line); padding: .25rem .5rem; text-align: left; vertical-align: top; }
th { background: #eef1f5; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th[aria-sort="ascending"]::after { content: " \25B2"; }
table.sortable th[aria-sort="descending"]::after { content: " \25BC"; }
table.kv th { width: 16rem; }
code, .hash { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: .8rem; word-break: break-all; }
.grid { display: flex; flex-wrap: wrap; gap: 0 2rem; }
.empty { color: var(--muted); font-style: italic; }
svg.chart { width: 100%; height: auto; max-height: 20rem; }
svg.chart rect.bar { fill: #3b6ea8; }
svg.chart text { font-size: 11px; fill: #333; }
svg.chart line { stroke: #888; }
pre { background: #f5f6f8; padding: .6rem; overflow-x: auto; font-size: .8rem; }
footer { margin-top: 2rem; color: var(--muted); font-size: .8rem; }
@media print {
  body { max-width: none; padding: 0; font-size: 10pt; }
  .noprint, nav { display: none; }
  section + section { break-before: page; page-break-before: always; }
  tr, .banner, svg { break-inside: avoid; page-break-inside: avoid; }
  thead { display: table-header-group; }
  details > summary { display: none; }
  table.sortable th { cursor: auto; }
  table.sortable th::after { content: none !important; }
  a { color: inherit; text-decoration: none; }
}
"#;

/// Sorts a table by the clicked header: numbers as numbers (a cell's `data-v` when present),
/// other text in natural order; a second click reverses.
const SORT_SCRIPT: &str = r#"
(function () {
  function key(cell) {
    var v = cell ? cell.getAttribute('data-v') : null;
    return v !== null ? v : (cell ? cell.textContent.trim() : '');
  }
  function number(s) { return s !== '' && isFinite(s) ? Number(s) : NaN; }
  function sortBy(table, column, th) {
    var ascending = th.getAttribute('aria-sort') !== 'ascending';
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) { h.removeAttribute('aria-sort'); });
    th.setAttribute('aria-sort', ascending ? 'ascending' : 'descending');
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a.cells[column]), y = key(b.cells[column]);
      var nx = number(x), ny = number(y);
      var c = !isNaN(nx) && !isNaN(ny) ? nx - ny : x.localeCompare(y, undefined, { numeric: true });
      return ascending ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  Array.prototype.forEach.call(document.querySelectorAll('table.sortable'), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, column) {
      th.tabIndex = 0;
      th.title = 'Sort by this column';
      var go = function () { sortBy(table, column, th); };
      th.addEventListener('click', go);
      th.addEventListener('keydown', function (e) {
        if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); go(); }
      });
    });
  });
})();
"#;

/// The page shell: head with the inline style, `body`, the inline sort script.
fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}\n\
         <script>{SORT_SCRIPT}</script>\n</body>\n</html>\n",
        escape(title)
    )
}

/// One table cell: text, or a number that sorts as a number.
enum Cell {
    Text(String),
    /// Shown text and the raw value it sorts by.
    Num(String, f64),
    /// Already-escaped markup (a `<code>` hash).
    Markup(String),
}

impl Cell {
    fn text(s: impl AsRef<str>) -> Cell {
        Cell::Text(s.as_ref().to_owned())
    }
    fn opt(s: &Option<String>) -> Cell {
        Cell::text(s.as_deref().unwrap_or("—"))
    }
    fn count(n: u64) -> Cell {
        Cell::Num(n.to_string(), n as f64)
    }
    fn shown(text: String, v: f64) -> Cell {
        Cell::Num(text, v)
    }
    fn hash(h: &str) -> Cell {
        Cell::Markup(format!("<code>{}</code>", escape(h)))
    }
    fn yes_no(b: bool) -> Cell {
        Cell::text(if b { "yes" } else { "no" })
    }
    fn render(&self) -> String {
        match self {
            Cell::Text(s) => format!("<td>{}</td>", escape(s)),
            Cell::Num(s, v) => format!("<td class=\"num\" data-v=\"{v}\">{}</td>", escape(s)),
            Cell::Markup(m) => format!("<td>{m}</td>"),
        }
    }
}

/// A sortable table; an empty one renders as a short note.
struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<Cell>>,
}

impl Table {
    fn new(headers: &[&'static str]) -> Table {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }
    fn row(&mut self, cells: Vec<Cell>) {
        self.rows.push(cells);
    }
    fn render(&self, empty: &str) -> String {
        if self.rows.is_empty() {
            return format!("<p class=\"empty\">{}</p>\n", escape(empty));
        }
        let mut out = String::from("<table class=\"sortable\">\n<thead><tr>");
        for (i, h) in self.headers.iter().enumerate() {
            let numeric = matches!(self.rows[0].get(i), Some(Cell::Num(..)));
            let class = if numeric { " class=\"num\"" } else { "" };
            let _ = write!(out, "<th scope=\"col\"{class}>{}</th>", escape(h));
        }
        out.push_str("</tr></thead>\n<tbody>\n");
        for r in &self.rows {
            out.push_str("<tr>");
            for c in r {
                out.push_str(&c.render());
            }
            out.push_str("</tr>\n");
        }
        out.push_str("</tbody>\n</table>\n");
        out
    }
}

/// A two-column table of labelled values (not sortable).
fn facts(rows: &[(&str, Cell)]) -> String {
    let mut out = String::from("<table class=\"kv\">\n<tbody>\n");
    for (label, cell) in rows {
        let _ = writeln!(
            out,
            "<tr><th scope=\"row\">{}</th>{}</tr>",
            escape(label),
            cell.render()
        );
    }
    out.push_str("</tbody>\n</table>\n");
    out
}

fn section(id: &str, title: &str, content: &str) -> String {
    format!(
        "<section id=\"{}\">\n<h2>{}</h2>\n{content}</section>\n",
        escape(id),
        escape(title)
    )
}

fn h3(title: &str) -> String {
    format!("<h3>{}</h3>\n", escape(title))
}

fn opt_seq(s: Option<u64>) -> Cell {
    s.map_or_else(|| Cell::text("—"), Cell::count)
}

/// The integrity section: the banner (red when verification failed), then the figures.
fn integrity_section(i: &Integrity) -> String {
    let mut out = match integrity_warning(i) {
        Some(w) => format!(
            "<div class=\"banner bad\" role=\"alert\">{}</div>\n",
            escape(&w)
        ),
        None => format!(
            "<div class=\"banner ok\">The ledger verified over this period: {}</div>\n",
            escape(&i.statement)
        ),
    };
    if i.checkpoint.is_none() {
        out.push_str(
            "<div class=\"banner warn\">No checkpoint anchors this verification: a deleted or \
             rewritten tail of the ledger would not be detected. Keep signed checkpoints outside \
             the database.</div>\n",
        );
    }
    let mut rows = vec![
        ("Verified", Cell::yes_no(i.ok)),
        ("Statement", Cell::text(&i.statement)),
        ("From seq", opt_seq(i.from_seq)),
        ("To seq", opt_seq(i.to_seq)),
        ("Entries verified", Cell::count(i.entries_verified)),
        ("First bad seq", opt_seq(i.first_bad_seq)),
        ("Problem", Cell::opt(&i.problem)),
        ("Detail", Cell::opt(&i.detail)),
        ("Checkpoints stored", Cell::count(i.checkpoints_stored)),
        ("Checkpoints valid", Cell::count(i.checkpoints_valid)),
        ("Read model position (seq)", opt_seq(i.read_model_position)),
    ];
    if let Some(c) = &i.checkpoint {
        rows.extend([
            ("Checkpoint size", Cell::count(c.size)),
            ("Checkpoint root", Cell::hash(&c.root)),
            ("Checkpoint signer", Cell::hash(&c.signer)),
            (
                "Checkpoint signature valid",
                Cell::yes_no(c.signature_valid),
            ),
            (
                "Checkpoint anchors the range",
                Cell::yes_no(c.anchors_range),
            ),
        ]);
    }
    out.push_str(&facts(&rows));
    section("integrity", "Integrity", &out)
}

/// The report's title block (the integrity section, with its banner, comes right after).
fn header(title: &str, meta: &[(&str, String)], nav: &[(&str, &str)]) -> String {
    let mut out = format!("<header>\n<h1>{}</h1>\n", escape(title));
    for (label, value) in meta {
        let _ = writeln!(
            out,
            "<p class=\"meta\">{}: {}</p>",
            escape(label),
            escape(value)
        );
    }
    if !nav.is_empty() {
        out.push_str("<nav class=\"noprint\">");
        for (id, label) in nav {
            let _ = write!(out, "<a href=\"#{}\">{}</a>", escape(id), escape(label));
        }
        out.push_str("</nav>\n");
    }
    out.push_str("</header>\n");
    out
}

/// Bars of PHI accesses per day, with axes, tick labels and a `<title>` per bar.
fn day_chart(days: &[DayCount]) -> String {
    const W: f64 = 960.0;
    const H: f64 = 260.0;
    const LEFT: f64 = 56.0;
    const RIGHT: f64 = 12.0;
    const TOP: f64 = 12.0;
    const BOTTOM: f64 = 44.0;
    let (plot_w, plot_h) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {W} {H}\" role=\"img\" \
         aria-label=\"PHI accesses per day\">\n<title>PHI accesses per day</title>\n"
    );
    if days.is_empty() {
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">No days in this period.</text>\n</svg>",
            W / 2.0,
            H / 2.0
        );
        return svg;
    }
    let max = days.iter().map(|d| d.count).max().unwrap_or(0);
    let step = nice_step(max) as f64;
    let y_max = step * 4.0;
    let y = |v: f64| TOP + plot_h - v / y_max * plot_h;
    for t in 0..=4u32 {
        let v = f64::from(t) * step;
        let _ = writeln!(
            svg,
            "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke-opacity=\"{}\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            W - RIGHT,
            if t == 0 { 1.0 } else { 0.25 },
            LEFT - 6.0,
            y(v) + 4.0,
            num(v),
            yy = y(v),
        );
    }
    let slot = plot_w / days.len() as f64;
    let bar = (slot * 0.8).min(40.0);
    let label_every = days.len().div_ceil(12);
    for (i, d) in days.iter().enumerate() {
        let x = LEFT + slot * i as f64 + (slot - bar) / 2.0;
        let top = y(d.count as f64);
        let _ = writeln!(
            svg,
            "<rect class=\"bar\" x=\"{x:.2}\" y=\"{top:.2}\" width=\"{bar:.2}\" height=\"{:.2}\">\
             <title>{}: {} PHI accesses</title></rect>",
            TOP + plot_h - top,
            escape(&d.day),
            d.count
        );
        if i % label_every == 0 {
            let _ = writeln!(
                svg,
                "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                LEFT + slot * (i as f64 + 0.5),
                TOP + plot_h + 16.0,
                escape(&d.day)
            );
        }
    }
    let _ = write!(
        svg,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">Day (site time)</text>\n\
         <text transform=\"translate(14 {}) rotate(-90)\" text-anchor=\"middle\">PHI accesses</text>\n\
         </svg>\n",
        LEFT + plot_w / 2.0,
        H - 6.0,
        TOP + plot_h / 2.0
    );
    svg
}

/// The y-axis tick step: 1, 2 or 5 × a power of ten, so that four steps reach `max`.
fn nice_step(max: u64) -> u64 {
    let mut magnitude = 1u64;
    loop {
        for m in [1, 2, 5] {
            let step = magnitude.saturating_mul(m);
            if step.saturating_mul(4) >= max {
                return step;
            }
        }
        magnitude = magnitude.saturating_mul(10);
    }
}

fn count_table(first: &'static str, counts: &[Count], empty: &str) -> String {
    let mut t = Table::new(&[first, "Count"]);
    for c in counts {
        t.row(vec![Cell::text(&c.key), Cell::count(c.count)]);
    }
    t.render(empty)
}

/// The compliance report as one self-contained HTML page.
pub fn hipaa_html(r: &HipaaReport) -> String {
    let p = &r.period;
    let meta = [
        ("Stream", r.stream.clone()),
        (
            "Period",
            format!("{} to {} (exclusive), days in {}", p.from, p.to, p.timezone),
        ),
        ("Generated", r.generated_at.clone()),
    ];
    let nav = [
        ("integrity", "Integrity"),
        ("access", "Access summary"),
        ("security", "Security events"),
        ("phi", "PHI access"),
        ("changes", "System changes"),
        ("retention", "Retention"),
    ];
    let body = [
        header(&r.title, &meta, &nav),
        integrity_section(&r.integrity),
        access_html(r),
        security_html(&r.security_events),
        phi_html(&r.phi_access),
        changes_html(&r.system_changes),
        retention_html(r),
        footer(),
    ]
    .concat();
    page(&format!("{} — {}", r.title, r.stream), &body)
}

fn footer() -> String {
    "<footer>Generated by auditledger from verified ledger entries. Users and patients are \
     shown by pseudonym; each figure can be traced to the entries of its seq range.</footer>\n"
        .into()
}

fn access_html(r: &HipaaReport) -> String {
    let a = &r.access_summary;
    let mut out = facts(&[
        ("Events", Cell::count(a.events)),
        ("Logins", Cell::count(a.logins)),
        ("Failed logins", Cell::count(a.failed_logins)),
        ("Distinct users", Cell::count(a.distinct_users)),
    ]);
    out.push_str(&h3("By source"));
    let mut t = Table::new(&["Source", "Events", "Logins", "Failed logins"]);
    for s in &a.by_source {
        t.row(vec![
            Cell::text(&s.source),
            Cell::count(s.events),
            Cell::count(s.logins),
            Cell::count(s.failed_logins),
        ]);
    }
    out.push_str(&t.render("No events in this period."));
    section("access", "Access summary", &out)
}

fn security_html(s: &SecuritySection) -> String {
    let mut out = String::new();
    if !s.available {
        out.push_str(
            "<div class=\"banner warn\">The security projection was not available: no \
             detections are reported for this period.</div>\n",
        );
    }
    out.push_str(&facts(&[
        ("Detections", Cell::count(s.events.len() as u64)),
        ("Blocks issued", Cell::count(s.blocks_issued)),
        ("Blocks lifted", Cell::count(s.blocks_lifted)),
    ]));
    out.push_str("<div class=\"grid\"><div>\n");
    out.push_str(&h3("By severity"));
    out.push_str(&count_table("Severity", &s.by_severity, "No detections."));
    out.push_str("</div><div>\n");
    out.push_str(&h3("By rule"));
    let mut t = Table::new(&["Rule", "Severity", "Count"]);
    for r in &s.by_rule {
        t.row(vec![
            Cell::text(&r.rule),
            Cell::text(&r.severity),
            Cell::count(r.count),
        ]);
    }
    out.push_str(&t.render("No detections."));
    out.push_str("</div></div>\n");
    out.push_str(&h3("Detections"));
    let mut t = Table::new(&["At", "Rule", "Severity", "Summary", "Seq range"]);
    for e in &s.events {
        t.row(vec![
            Cell::text(&e.at),
            Cell::text(&e.rule),
            Cell::text(&e.severity),
            Cell::text(&e.summary),
            Cell::shown(
                format!("{}–{}", e.first_seq, e.last_seq),
                e.first_seq as f64,
            ),
        ]);
    }
    out.push_str(&t.render("No detections in this period."));
    section("security", "Security events", &out)
}

fn phi_html(p: &PhiAccessSection) -> String {
    let mut out = facts(&[
        ("PHI accesses", Cell::count(p.total)),
        ("After hours", Cell::count(p.after_hours)),
        ("Exports", Cell::count(p.exports)),
        ("Unusual-pattern flags", Cell::count(p.unusual.len() as u64)),
    ]);
    out.push_str(&h3("PHI accesses per day"));
    out.push_str(&day_chart(&p.per_day));
    let mut t = Table::new(&["Day", "PHI accesses"]);
    for d in &p.per_day {
        t.row(vec![Cell::text(&d.day), Cell::count(d.count)]);
    }
    out.push_str("<details open><summary>Per-day counts</summary>\n");
    out.push_str(&t.render("No days in this period."));
    out.push_str("</details>\n<div class=\"grid\">\n");
    for (title, first, counts) in [
        ("By role", "Role", &p.by_role),
        ("By action", "Action", &p.by_action),
        ("By resource type", "Resource type", &p.by_resource_type),
        ("By outcome", "Outcome", &p.by_outcome),
    ] {
        out.push_str("<div>\n");
        out.push_str(&h3(title));
        out.push_str(&count_table(first, counts, "None."));
        out.push_str("</div>\n");
    }
    out.push_str("</div>\n");
    out.push_str(&h3("Top users by PHI accesses"));
    let mut t = Table::new(&[
        "User",
        "Role",
        "PHI accesses",
        "Distinct patients (sum of daily)",
        "Days active",
    ]);
    for u in &p.top_users {
        t.row(vec![
            Cell::hash(&u.user),
            Cell::opt(&u.role),
            Cell::count(u.phi_accesses),
            Cell::count(u.distinct_patients_total),
            Cell::count(u.days_active),
        ]);
    }
    out.push_str(&t.render("No PHI access in this period."));
    out.push_str(&h3("Unusual access patterns"));
    out.push_str(&flags_table(&p.unusual));
    section("phi", "PHI access", &out)
}

fn opt_figure(f: &Flag, v: Option<f64>) -> Cell {
    v.map_or_else(|| Cell::text("—"), |v| Cell::shown(figure(f.metric, v), v))
}

fn flags_table(flags: &[Flag]) -> String {
    let mut t = Table::new(&[
        "Day",
        "User",
        "Role",
        "Metric",
        "Value",
        "Baseline mean",
        "Baseline sd",
        "History days",
        "Peer percentile",
        "Peers",
        "Above own",
        "Above peers",
        "Explanation",
        "Seq range",
    ]);
    for f in flags {
        t.row(vec![
            Cell::text(&f.day),
            Cell::hash(&f.user),
            Cell::opt(&f.role),
            Cell::text(f.metric.name()),
            Cell::shown(figure(f.metric, f.value), f.value),
            opt_figure(f, f.baseline_mean),
            opt_figure(f, f.baseline_sd),
            Cell::count(u64::from(f.history_days)),
            opt_figure(f, f.peer_percentile),
            Cell::count(f.peer_users as u64),
            Cell::yes_no(f.above_own_baseline),
            Cell::yes_no(f.above_peers),
            Cell::text(&f.explanation),
            Cell::shown(
                format!("{}–{}", f.first_seq, f.last_seq),
                f.first_seq as f64,
            ),
        ]);
    }
    t.render("No unusual access pattern in this period.")
}

fn changes_html(c: &SystemChanges) -> String {
    let mut t = Table::new(&["Action", "Count"]);
    for a in &c.by_action {
        t.row(vec![Cell::text(&a.action), Cell::count(a.count)]);
    }
    let mut out = t.render("No system change in this period.");
    out.push_str(&h3("Changes"));
    let mut t = Table::new(&[
        "Seq",
        "Occurred at",
        "Action",
        "User",
        "Role",
        "Outcome",
        "Source",
        "Resource type",
        "Detail",
        "Entry hash",
    ]);
    for ch in &c.changes {
        t.row(vec![
            Cell::count(ch.seq),
            Cell::text(&ch.occurred_at),
            Cell::text(&ch.action),
            ch.user
                .as_deref()
                .map_or_else(|| Cell::text("—"), Cell::hash),
            Cell::opt(&ch.role),
            Cell::text(&ch.outcome),
            Cell::text(&ch.source),
            Cell::opt(&ch.resource_type),
            Cell::opt(&ch.detail),
            Cell::hash(&ch.entry_hash),
        ]);
    }
    out.push_str(&t.render("None."));
    section("changes", "System changes", &out)
}

/// A value of the retention detail as a cell: counts sort as numbers, an absent value is "—".
fn value_cell(v: &Value) -> Cell {
    match v {
        Value::Null => Cell::text("—"),
        Value::Bool(b) => Cell::yes_no(*b),
        Value::Number(n) => match n.as_u64() {
            Some(n) => Cell::count(n),
            None => Cell::shown(n.to_string(), n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => Cell::text(s),
        Value::Array(items) if items.is_empty() => Cell::text("—"),
        Value::Array(items) => Cell::text(
            items
                .iter()
                .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                .collect::<Vec<_>>()
                .join(", "),
        ),
        Value::Object(_) => Cell::text(v.to_string()),
    }
}

/// `v[key]` as a cell (absent: "—").
fn field(v: &Value, key: &str) -> Cell {
    value_cell(&v[key])
}

/// A table of the records in `v[list]`, one column per `(header, field)`.
fn records_table(
    v: &Value,
    list: &str,
    columns: &[(&'static str, &str)],
    cell: impl Fn(&Value, &str) -> Cell,
    empty: &str,
) -> String {
    let headers: Vec<&'static str> = columns.iter().map(|(h, _)| *h).collect();
    let mut t = Table::new(&headers);
    for record in v[list].as_array().map(Vec::as_slice).unwrap_or_default() {
        t.row(columns.iter().map(|(_, k)| cell(record, k)).collect());
    }
    t.render(empty)
}

/// The retention section: the latest check's verdict as a banner, the figures, then the
/// policy, the holds in force, the period's checks, the purges and the coverage gaps. The
/// detail is the retention crate's status (docs/PHI-ACCESS.md lists its fields); a field it
/// lacks shows as "—".
fn retention_html(r: &HipaaReport) -> String {
    let ret = &r.retention;
    let Some(d) = ret.detail.as_ref().filter(|_| ret.available) else {
        let mut out = format!(
            "<div class=\"banner warn\">Retention checks are not available: {}.</div>\n",
            escape(&ret.status)
        );
        out.push_str(&facts(&[
            ("Available", Cell::yes_no(ret.available)),
            ("Status", Cell::text(&ret.status)),
        ]));
        return section("retention", "Retention", &out);
    };
    let class = if ret.status.starts_with("COMPLIANT") {
        "ok"
    } else if ret.status.starts_with("VIOLATION") {
        "bad"
    } else {
        "warn"
    };
    let mut out = format!(
        "<div class=\"banner {class}\">{}</div>\n",
        escape(&ret.status)
    );
    let policy = &d["policy"];
    out.push_str(&facts(&[
        ("Available", Cell::yes_no(ret.available)),
        ("Status", Cell::text(&ret.status)),
        ("Period start", field(d, "period_start")),
        ("Period end", field(d, "period_end")),
        ("Read model position (seq)", field(d, "read_model_position")),
        (
            "Policy digest",
            Cell::hash(policy["digest"].as_str().unwrap_or("—")),
        ),
        ("Default horizon (years)", field(policy, "default_years")),
        (
            "Legal holds in force at the end",
            field(d, "holds_in_force"),
        ),
        (
            "Legal holds released in the period",
            field(d, "holds_released_in_period"),
        ),
        ("Retention checks run in the period", field(d, "checks_run")),
        ("Of which compliant", field(d, "checks_compliant")),
        (
            "Purge authorizations (to the end)",
            field(d, "purges_authorized"),
        ),
        ("Of which in the period", field(d, "purges_in_period")),
        ("Payloads authorized to go", field(d, "payloads_authorized")),
        ("Coverage gaps ended in the period", field(d, "gaps_ended")),
    ]));
    let latest = &d["latest_check"];
    out.push_str(&h3("Latest retention check before the end of the period"));
    if latest.is_object() {
        out.push_str(&facts(&[
            ("Entry (seq)", field(latest, "seq")),
            ("Recorded at", field(latest, "recorded_at")),
            ("As of", field(latest, "as_of")),
            ("Compliant", field(latest, "ok")),
            ("Violations", field(latest, "violations")),
            ("Findings", field(latest, "findings")),
            ("Entries verified", field(latest, "entries")),
            ("Head (seq)", field(latest, "head")),
            ("In the period", field(latest, "in_period")),
        ]));
    } else {
        out.push_str("<p class=\"empty\">No retention check was recorded before the end of the period.</p>\n");
    }
    out.push_str(&h3("Policy"));
    out.push_str(&records_table(
        policy,
        "rules",
        &[("Rule", "name"), ("Years", "years"), ("Why", "why")],
        field,
        "No rule.",
    ));
    out.push_str(&h3("Legal holds in force at the end of the period"));
    let pseudonym = |v: &Value, k: &str| match v[k].as_str() {
        Some(p) => Cell::hash(p),
        None => field(v, k),
    };
    out.push_str(&records_table(
        d,
        "holds",
        &[
            ("Seq", "seq"),
            ("Scope", "scope"),
            ("Subject (pseudonym)", "subject"),
            ("Events from", "from"),
            ("Events to", "to"),
            ("Since", "since"),
            ("Reason", "reason"),
        ],
        |v, k| {
            if k == "subject" {
                pseudonym(v, k)
            } else {
                field(v, k)
            }
        },
        "No legal hold in force.",
    ));
    out.push_str(&h3("Retention checks in the period"));
    out.push_str(&records_table(
        d,
        "checks",
        &[
            ("Seq", "seq"),
            ("Recorded at", "recorded_at"),
            ("As of", "as_of"),
            ("Compliant", "ok"),
            ("Violations", "violations"),
            ("Findings", "findings"),
            ("Entries verified", "entries"),
            ("Head (seq)", "head"),
        ],
        field,
        "No retention check was recorded in this period.",
    ));
    out.push_str(&h3("Purge authorizations"));
    out.push_str(&records_table(
        d,
        "purges",
        &[
            ("Seq", "seq"),
            ("Recorded at", "recorded_at"),
            ("From seq", "from"),
            ("To seq", "to"),
            ("Payloads", "count"),
            ("Authorized by", "authorized_by"),
            ("Archive SHA-256", "archive"),
            ("In the period", "in_period"),
        ],
        |v, k| {
            if k == "archive" {
                pseudonym(v, k)
            } else {
                field(v, k)
            }
        },
        "No purge authorization was recorded before the end of the period.",
    ));
    out.push_str(&h3("Coverage gaps that ended in the period"));
    out.push_str(&records_table(
        d,
        "gaps",
        &[
            ("Source", "source"),
            ("Silent from", "from"),
            ("To", "to"),
            ("Minutes", "minutes"),
            ("Resumed at seq", "resumed_seq"),
        ],
        field,
        "No coverage gap ended in this period.",
    ));
    section("retention", "Retention", &out)
}

/// The accounting of disclosures as one self-contained HTML page.
pub fn disclosures_html(r: &DisclosureReport) -> String {
    let mut meta = vec![
        ("Patient (pseudonym)", r.patient.clone()),
        ("Legacy pseudonym", r.legacy_pseudonym.clone()),
        ("Period", format!("{} to {} (exclusive)", r.from, r.to)),
        ("Stream", r.stream.clone()),
        ("Generated", r.generated_at.clone()),
    ];
    if let Some(request) = r.request() {
        meta.push(("Requested by", request));
    }
    let title = "Accounting of disclosures (45 CFR 164.528)";
    let body = [
        header(title, &meta, &[]),
        integrity_section(&r.integrity),
        section(
            "disclosures",
            "Accesses to this patient's PHI",
            &disclosure_lines(r),
        ),
        footer(),
    ]
    .concat();
    page(title, &body)
}

fn disclosure_lines(r: &DisclosureReport) -> String {
    let mut out = format!("<p>{}.</p>\n", escape(&r.summary()));
    let mut t = Table::new(&[
        "Occurred at",
        "User",
        "Role",
        "Action",
        "Outcome",
        "Source",
        "Resource type",
        "Seq",
        "Entry hash",
        "Matched by",
        "Verified",
    ]);
    for l in &r.lines {
        t.row(vec![
            Cell::text(&l.occurred_at),
            l.user
                .as_deref()
                .map_or_else(|| Cell::text("—"), Cell::hash),
            Cell::opt(&l.role),
            Cell::text(&l.action),
            Cell::text(&l.outcome),
            Cell::text(&l.source),
            Cell::opt(&l.resource_type),
            Cell::count(l.seq),
            Cell::hash(&l.entry_hash),
            Cell::text(if l.legacy {
                "legacy pseudonym"
            } else {
                "pseudonym"
            }),
            Cell::text(if l.verified { "yes" } else { "NO" }),
        ]);
    }
    out.push_str(&t.render("No access to this patient's PHI in this period."));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(
            escape(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
    }

    #[test]
    fn nice_steps_reach_the_maximum_in_four() {
        assert_eq!(nice_step(0), 1);
        assert_eq!(nice_step(3), 1);
        assert_eq!(nice_step(5), 2);
        assert_eq!(nice_step(19), 5);
        assert_eq!(nice_step(41), 20);
        assert_eq!(nice_step(4000), 1000);
        assert_eq!(nice_step(u64::MAX), nice_step(u64::MAX));
    }

    fn days(n: usize) -> Vec<DayCount> {
        (0..n)
            .map(|i| DayCount {
                day: format!("d{i}"),
                count: i as u64 % 7,
            })
            .collect()
    }

    #[test]
    fn the_chart_handles_no_day_one_day_and_a_leap_year() {
        let none = day_chart(&[]);
        assert!(none.contains("<svg") && none.contains("No days in this period."));
        let one = day_chart(&days(1));
        assert_eq!(one.matches("<rect").count(), 1);
        assert!(one.contains("<title>d0: 0 PHI accesses</title>"));
        let year = day_chart(&days(366));
        assert_eq!(year.matches("<rect").count(), 366);
        assert!(year.contains("<title>d365: 1 PHI accesses</title>"));
        // About a dozen labels, not 366.
        let labels = year.matches("text-anchor=\"middle\">d").count();
        assert!((10..=14).contains(&labels), "{labels}");
        assert!(!year.contains("NaN") && !year.contains("inf"));
    }
}
