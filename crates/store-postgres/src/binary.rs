//! PostgreSQL's binary COPY format (`COPY ... (FORMAT binary)`) for entry rows: written for
//! appends, read for scans.
//!
//! Writing the rows ourselves, rather than through tokio-postgres's typed `BinaryCopyInWriter`,
//! skips a `ToSql` dispatch and a small buffer per field: every field here is one of four
//! fixed types, so the encoding is a few `put_*` calls per field into one buffer. Reading is
//! the mirror image and turns the server's stream straight into [`Entry`] values without a
//! `Row` per entry.
//!
//! Layout (PostgreSQL docs, "COPY", binary format): an 11-byte signature, a 32-bit flags word,
//! a 32-bit header-extension length and that many bytes; then per row a 16-bit field count and
//! per field a 32-bit length (-1 for NULL) and that many bytes; then a 16-bit -1 trailer. All
//! integers big-endian; `bigint` is 8 bytes, `boolean` 1 byte, `text` UTF-8, `bytea` raw.

use bytes::{Buf, BufMut, BytesMut};
use ledger::{Columns, Digest, Entry, EntryKind, StoreError, StreamId, Timestamp};

/// The columns of `entries`, in the order both directions use.
pub const ENTRY_COLUMNS: &str = "stream, seq, recorded_at, payload, payload_digest, prev_hash, entry_hash, kind, occurred_at, action, outcome, actor, patient, phi, idem";

const FIELDS: i16 = 15;
const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// Appends the header, one row per entry and the trailer to `out`.
pub fn encode_entries(entries: &[Entry], out: &mut BytesMut) {
    // Payloads dominate the size; 160 bytes covers the fixed fields and lengths.
    out.reserve(
        SIGNATURE.len()
            + 10
            + entries
                .iter()
                .map(|e| 160 + e.payload.as_ref().map_or(0, Vec::len) + e.stream.as_str().len())
                .sum::<usize>(),
    );
    out.put_slice(SIGNATURE);
    out.put_i32(0); // flags: no OIDs
    out.put_i32(0); // no header extension
    for e in entries {
        let c = &e.columns;
        out.put_i16(FIELDS);
        bytes(out, Some(e.stream.as_str().as_bytes()));
        int8(out, Some(e.seq as i64));
        int8(out, Some(e.recorded_at.micros()));
        bytes(out, e.payload.as_deref());
        bytes(out, Some(&e.payload_digest.0));
        bytes(out, Some(&e.prev_hash.0));
        bytes(out, Some(&e.entry_hash.0));
        bytes(out, Some(c.kind.as_str().as_bytes()));
        int8(out, c.occurred_at.map(Timestamp::micros));
        bytes(out, c.action.as_deref().map(str::as_bytes));
        bytes(out, c.outcome.as_deref().map(str::as_bytes));
        bytes(out, c.actor.as_deref().map(str::as_bytes));
        bytes(out, c.patient.as_deref().map(str::as_bytes));
        out.put_i32(1);
        out.put_u8(u8::from(c.phi));
        bytes(out, c.idem.as_ref().map(|d| &d.0[..]));
    }
    out.put_i16(-1);
}

fn bytes(out: &mut BytesMut, v: Option<&[u8]>) {
    match v {
        // A field is at most 1 GB in PostgreSQL; entries are far below that, and the server
        // rejects a wrong length anyway.
        Some(b) => {
            out.put_i32(b.len() as i32);
            out.put_slice(b);
        }
        None => out.put_i32(-1),
    }
}

fn int8(out: &mut BytesMut, v: Option<i64>) {
    match v {
        Some(n) => {
            out.put_i32(8);
            out.put_i64(n);
        }
        None => out.put_i32(-1),
    }
}

/// Turns the byte stream of `COPY (SELECT ENTRY_COLUMNS ...) TO STDOUT (FORMAT binary)` into
/// entries. Feed it chunks as they arrive ([`push`](Self::push)) and take every complete row
/// ([`next_entry`](Self::next_entry)); a row split across chunks waits for the rest.
#[derive(Debug, Default)]
pub struct EntryDecoder {
    buf: BytesMut,
    header_read: bool,
    finished: bool,
}

impl EntryDecoder {
    pub fn new() -> EntryDecoder {
        EntryDecoder::default()
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// True once the trailer was read.
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// The next complete row, or `None` when more bytes are needed (or the trailer was read).
    pub fn next_entry(&mut self) -> Result<Option<Entry>, StoreError> {
        if self.finished {
            return Ok(None);
        }
        if !self.header_read {
            if self.buf.len() < SIGNATURE.len() + 8 {
                return Ok(None);
            }
            if &self.buf[..SIGNATURE.len()] != SIGNATURE {
                return Err(corrupt(
                    "COPY stream does not start with the binary signature",
                ));
            }
            let ext = i32::from_be_bytes([self.buf[15], self.buf[16], self.buf[17], self.buf[18]]);
            let ext = usize::try_from(ext)
                .map_err(|_| corrupt("negative COPY header extension length"))?;
            if self.buf.len() < SIGNATURE.len() + 8 + ext {
                return Ok(None);
            }
            self.buf.advance(SIGNATURE.len() + 8 + ext);
            self.header_read = true;
        }
        let Some(len) = row_len(&self.buf)? else {
            return Ok(None);
        };
        let row = self.buf.split_to(len);
        let mut r = &row[..];
        let fields = r.get_i16();
        if fields == -1 {
            self.finished = true;
            return Ok(None);
        }
        if fields != FIELDS {
            return Err(corrupt(format!(
                "COPY row has {fields} fields, expected {FIELDS}"
            )));
        }
        let mut next = || -> Option<&[u8]> {
            let n = r.get_i32();
            if n < 0 {
                None
            } else {
                let (field, rest) = r.split_at(n as usize);
                r = rest;
                Some(field)
            }
        };
        let stream = text(next(), "stream")?;
        let seq = int8_field(next(), "seq")?;
        let recorded_at = int8_field(next(), "recorded_at")?;
        let payload = next().map(<[u8]>::to_vec);
        let payload_digest = digest(next(), "payload_digest")?;
        let prev_hash = digest(next(), "prev_hash")?;
        let entry_hash = digest(next(), "entry_hash")?;
        let kind = text(next(), "kind")?;
        let occurred_at = opt_int8(next(), "occurred_at")?;
        let action = opt_text(next(), "action")?;
        let outcome = opt_text(next(), "outcome")?;
        let actor = opt_text(next(), "actor")?;
        let patient = opt_text(next(), "patient")?;
        let phi = match next() {
            Some([b]) => *b != 0,
            _ => return Err(corrupt("phi is not a boolean")),
        };
        // A wrong-sized digest cannot match any payload's; keep it visible to the verifier as
        // a mismatch rather than failing the read (as the embedded store does).
        let idem = next().map(|b| Digest::from_slice(b).unwrap_or(Digest::ZERO));
        let seq = u64::try_from(seq).map_err(|_| corrupt(format!("negative seq {seq}")))?;
        Ok(Some(Entry {
            stream: StreamId::new(&stream).map_err(|e| corrupt(e.to_string()))?,
            seq,
            recorded_at: Timestamp(recorded_at),
            payload,
            payload_digest,
            prev_hash,
            entry_hash,
            columns: Columns {
                kind: EntryKind::parse(&kind)
                    .ok_or_else(|| corrupt(format!("entry {seq} has unknown kind {kind:?}")))?,
                occurred_at: occurred_at.map(Timestamp),
                action,
                outcome,
                actor,
                patient,
                phi,
                idem,
            },
        }))
    }
}

/// Length of the complete row (or trailer) at the start of `buf`, or `None` if it is not all
/// there yet.
fn row_len(buf: &[u8]) -> Result<Option<usize>, StoreError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let fields = i16::from_be_bytes([buf[0], buf[1]]);
    if fields == -1 {
        return Ok(Some(2));
    }
    if fields < 0 {
        return Err(corrupt(format!("COPY row has {fields} fields")));
    }
    let mut pos = 2usize;
    for _ in 0..fields {
        if buf.len() < pos + 4 {
            return Ok(None);
        }
        let n = i32::from_be_bytes([buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]]);
        pos += 4;
        if n > 0 {
            pos += n as usize;
        }
    }
    Ok((buf.len() >= pos).then_some(pos))
}

fn corrupt(why: impl Into<String>) -> StoreError {
    StoreError::Corrupt(why.into())
}

fn text(v: Option<&[u8]>, name: &str) -> Result<String, StoreError> {
    opt_text(v, name)?.ok_or_else(|| corrupt(format!("{name} is NULL")))
}

fn opt_text(v: Option<&[u8]>, name: &str) -> Result<Option<String>, StoreError> {
    v.map(|b| String::from_utf8(b.to_vec()).map_err(|_| corrupt(format!("{name} is not UTF-8"))))
        .transpose()
}

fn int8_field(v: Option<&[u8]>, name: &str) -> Result<i64, StoreError> {
    opt_int8(v, name)?.ok_or_else(|| corrupt(format!("{name} is NULL")))
}

fn opt_int8(v: Option<&[u8]>, name: &str) -> Result<Option<i64>, StoreError> {
    v.map(|b| {
        <[u8; 8]>::try_from(b)
            .map(i64::from_be_bytes)
            .map_err(|_| corrupt(format!("{name} is not a bigint")))
    })
    .transpose()
}

fn digest(v: Option<&[u8]>, name: &str) -> Result<Digest, StoreError> {
    v.and_then(Digest::from_slice)
        .ok_or_else(|| corrupt(format!("{name} is not 32 bytes")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, payload: Option<Vec<u8>>, idem: Option<Digest>) -> Entry {
        Entry {
            stream: StreamId::new("tenant-1").unwrap(),
            seq,
            recorded_at: Timestamp(1_795_000_000_000_000 + seq as i64),
            payload,
            payload_digest: Digest([1; 32]),
            prev_hash: Digest([2; 32]),
            entry_hash: Digest([3; 32]),
            columns: Columns {
                kind: EntryKind::Event,
                occurred_at: Some(Timestamp(-5)),
                action: Some("read".into()),
                outcome: None,
                actor: Some("u".into()),
                patient: None,
                phi: seq.is_multiple_of(2),
                idem,
            },
        }
    }

    #[test]
    fn round_trips_split_at_every_byte() {
        let entries = vec![
            entry(0, Some(vec![9; 300]), None),
            entry(1, None, Some(Digest([7; 32]))),
            entry(2, Some(Vec::new()), None),
        ];
        let mut buf = BytesMut::new();
        encode_entries(&entries, &mut buf);
        for split in 0..buf.len() {
            let mut d = EntryDecoder::new();
            let mut got = Vec::new();
            for part in [&buf[..split], &buf[split..]] {
                d.push(part);
                while let Some(e) = d.next_entry().unwrap() {
                    got.push(e);
                }
            }
            assert!(d.finished(), "split at {split}");
            assert_eq!(got, entries, "split at {split}");
        }
    }

    #[test]
    fn refuses_a_foreign_stream() {
        let mut d = EntryDecoder::new();
        d.push(b"PGCOPY\n\xff\r\n\x01\0\0\0\0\0\0\0\0");
        assert!(matches!(d.next_entry(), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn a_short_digest_is_corrupt_not_a_panic() {
        let mut row = BytesMut::new();
        row.put_slice(SIGNATURE);
        row.put_i32(0);
        row.put_i32(0);
        row.put_i16(FIELDS);
        bytes(&mut row, Some(b"tenant-1"));
        int8(&mut row, Some(4));
        int8(&mut row, Some(0));
        bytes(&mut row, None);
        bytes(&mut row, Some(&[0; 31]));
        for _ in 0..10 {
            bytes(&mut row, None);
        }
        let mut d = EntryDecoder::new();
        d.push(&row);
        let err = d.next_entry().unwrap_err().to_string();
        assert!(err.contains("payload_digest"), "{err}");
    }
}
