-- auditledger embedded store, schema 3: purging payloads, the one sanctioned change to an entry
-- (retention, issue 9; `Store::purge_payloads` in crates/ledger/src/store.rs).
--
-- HIPAA asks for six years of audit records, and a policy may let a payload go after that.
-- The chain does not need it: entry_hash covers the payload only through payload_digest, so
-- with seq, recorded_at, the digests and the hashes kept, the chain still verifies, and the
-- purge authorization entry (appended first) says which payloads were let go and why.
--
-- The rule is the database's, not the store code's, so it holds for every client of the file
-- (a second program, the sqlite3 shell): an UPDATE of an entry is refused unless it
--   - removes the payload of an event (kind stays 'event') together with every column
--     extracted from it (nothing could check them any more), and changes nothing else;
--   - and a purge authorization entry (action 'retention_purge') follows it in its stream,
--     recorded at least 2190 days (six years of 365 days: ledger::record::MIN_RETENTION_MICROS
--     = 189216000000000 us) after it.
-- Which entries an authorization really covers (its range, holds, longer horizons) is checked
-- by `verify`; the database only guarantees that nothing younger than the floor, and nothing
-- but a payload, can ever go. DELETE stays refused (schema 1). migrations/postgres/V3__purge.sql
-- holds the same rule.

-- The authorization check runs once per purged row: a probe of this small index, not a walk
-- over every later entry of the stream (a purge of a million rows must stay linear).
CREATE INDEX entries_purge_authorizations ON entries (stream, seq)
    WHERE action = 'retention_purge';

DROP TRIGGER entries_no_update;

-- Two triggers so the refusal says which half of the rule failed. SQLite fires the newer of two
-- triggers first, so the shape check, created second, speaks first.

-- INDEXED BY: a plan that cannot use the index is an error here rather than a silent scan.
CREATE TRIGGER entries_purge_authorized BEFORE UPDATE ON entries
WHEN NOT EXISTS (
    SELECT 1 FROM entries AS a INDEXED BY entries_purge_authorizations
    WHERE a.stream = OLD.stream
      AND a.action = 'retention_purge'
      AND a.seq > OLD.seq
      AND a.recorded_at - OLD.recorded_at >= 189216000000000
)
BEGIN
    SELECT RAISE(ABORT, 'auditledger: purge refused: no purge authorization follows the entry, recorded at least 2190 days after it');
END;

CREATE TRIGGER entries_update_only_purges BEFORE UPDATE ON entries
WHEN NOT (
    NEW.rowid IS OLD.rowid
    AND NEW.stream IS OLD.stream
    AND NEW.seq IS OLD.seq
    AND NEW.recorded_at IS OLD.recorded_at
    AND NEW.payload_digest IS OLD.payload_digest
    AND NEW.prev_hash IS OLD.prev_hash
    AND NEW.entry_hash IS OLD.entry_hash
    AND NEW.kind IS OLD.kind
    AND OLD.kind = 'event'
    AND OLD.payload IS NOT NULL
    AND NEW.payload IS NULL
    AND NEW.occurred_at IS NULL
    AND NEW.action IS NULL
    AND NEW.outcome IS NULL
    AND NEW.actor IS NULL
    AND NEW.patient IS NULL
    AND NEW.phi IS 0
    AND NEW.idem IS NULL
)
BEGIN
    SELECT RAISE(ABORT, 'auditledger: purge refused: entries are append-only; an UPDATE may only remove the payload of an event with its extracted columns');
END;
