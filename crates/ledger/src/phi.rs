//! Free-text fields (`detail`, `user_agent`, `request.path`) must not carry PHI: they are
//! stored as written, not pseudonymized. This module recognises the shapes PHI usually takes
//! (SSN, e-mail address, phone number, medical record number) and either rejects the value or
//! replaces each match, as the site's policy says.

use std::borrow::Cow;
use std::sync::OnceLock;

use regex::Regex;

/// What to do with free text that looks like PHI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PhiPolicy {
    /// Refuse the event, naming the field and the kind of PHI (the default: a service that
    /// leaks PHI into free text should hear about it).
    #[default]
    Reject,
    /// Replace each match with `[REDACTED:<kind>]` and store the event.
    Redact,
}

/// The kinds of PHI recognised, in the order they are tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhiKind {
    Ssn,
    Email,
    Phone,
    Mrn,
}

impl PhiKind {
    pub fn name(self) -> &'static str {
        match self {
            PhiKind::Ssn => "ssn",
            PhiKind::Email => "email",
            PhiKind::Phone => "phone",
            PhiKind::Mrn => "mrn",
        }
    }
}

/// Compiled patterns; build once (they are shared process-wide).
pub struct PhiScanner {
    patterns: Vec<(PhiKind, Regex)>,
}

impl PhiScanner {
    /// The process-wide scanner.
    pub fn global() -> &'static PhiScanner {
        static SCANNER: OnceLock<PhiScanner> = OnceLock::new();
        SCANNER.get_or_init(PhiScanner::new)
    }

    fn new() -> PhiScanner {
        // The patterns are constants; a failure to compile is a programming error caught by
        // every test run, hence `expect`.
        let compile = |p: &str| Regex::new(p).expect("PHI pattern compiles");
        PhiScanner {
            patterns: vec![
                // 123-45-6789, 123 45 6789
                (PhiKind::Ssn, compile(r"\b\d{3}[- ]\d{2}[- ]\d{4}\b")),
                (
                    PhiKind::Email,
                    compile(r"(?i)\b[a-z0-9._%+\-]+@[a-z0-9.\-]+\.[a-z]{2,}\b"),
                ),
                // (555) 123-4567, 555-123-4567, 555.123.4567, +1 555 123 4567
                (
                    PhiKind::Phone,
                    compile(r"(?:\+?1[\s.\-]?)?(?:\(\d{3}\)\s?|\b\d{3}[\s.\-])\d{3}[\s.\-]\d{4}\b"),
                ),
                // "MRN 1234567", "MRN: A123456", "mrn#00123", or a bare run of 7 to 10 digits.
                (
                    PhiKind::Mrn,
                    compile(r"(?i)\bmrn\s*[:#=]?\s*[a-z]?\d{3,}\b|\b\d{7,10}\b"),
                ),
            ],
        }
    }

    /// The first kind of PHI found in `text`, if any.
    pub fn find(&self, text: &str) -> Option<PhiKind> {
        self.patterns
            .iter()
            .find(|(_, re)| re.is_match(text))
            .map(|(kind, _)| *kind)
    }

    /// `text` with every match replaced by `[REDACTED:<kind>]`.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for (kind, re) in &self.patterns {
            if re.is_match(&out) {
                let replacement = format!("[REDACTED:{}]", kind.name());
                out = Cow::Owned(re.replace_all(&out, replacement.as_str()).into_owned());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_each_kind() {
        let s = PhiScanner::global();
        assert_eq!(s.find("patient ssn 123-45-6789"), Some(PhiKind::Ssn));
        assert_eq!(s.find("sent to jane.doe@example.org"), Some(PhiKind::Email));
        assert_eq!(s.find("call (555) 123-4567"), Some(PhiKind::Phone));
        assert_eq!(s.find("call 555-123-4567 now"), Some(PhiKind::Phone));
        assert_eq!(s.find("MRN: 0048213"), Some(PhiKind::Mrn));
        assert_eq!(s.find("record 12345678"), Some(PhiKind::Mrn));
    }

    #[test]
    fn ordinary_text_passes() {
        let s = PhiScanner::global();
        for ok in [
            "viewed chart summary",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
            "exported 250 records",
            "/patients/{id}/observations",
            "coverage calculated for 2026-11",
        ] {
            assert_eq!(s.find(ok), None, "{ok}");
        }
    }

    #[test]
    fn redacts_every_match() {
        let s = PhiScanner::global();
        let out = s.redact("ssn 123-45-6789 mail a@b.io");
        assert_eq!(out, "ssn [REDACTED:ssn] mail [REDACTED:email]");
        assert_eq!(s.find(&out), None);
    }
}
