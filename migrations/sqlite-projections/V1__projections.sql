-- auditledger embedded store, projections file (projections.db), schema 1: what projections
-- keep (crates/ledger/src/readmodel.rs). Until ledger schema 4 these tables lived in ledger.db
-- (migrations/sqlite/V2__projections.sql); they have a file of their own so that a
-- projection's commit never holds the ledger's write lock (see V4__projections_move_out.sql).
--
-- Unlike the ledger's tables, these are NOT append-only, and have no triggers: a read model
-- is derived data, rebuildable at any time from the ledger (`reset_projection` then replay), so
-- a projection updates and deletes its rows and moves its position forward. The evidence is
-- the entries table in ledger.db, which stays append-only; `verify` never reads this file.

-- Each projection's saved position per stream: the last entry it applied (seq and entry hash,
-- so it resumes on a verified link) and its own opaque state at that point. Written in the
-- transaction of the read-model changes it goes with; `seq` is the optimistic-concurrency
-- check that keeps two runners of one projection from both applying the same entries.
CREATE TABLE projection_positions (
    projection  TEXT    NOT NULL,
    stream      TEXT    NOT NULL,
    seq         INTEGER NOT NULL CHECK (seq >= 0),
    entry_hash  BLOB    NOT NULL CHECK (length(entry_hash) = 32),
    state       BLOB    NOT NULL,
    updated_at  INTEGER NOT NULL,   -- microseconds since the Unix epoch
    PRIMARY KEY (projection, stream)
) WITHOUT ROWID;

-- The rows of every read model: generic (table, key, ordinal, time, JSON value), so every
-- projection runs on every store without store code per projection. `at` is microseconds since
-- the Unix epoch; `value` is JSON text (jsonb in PostgreSQL).
CREATE TABLE read_model_rows (
    projection  TEXT    NOT NULL,
    stream      TEXT    NOT NULL,
    tbl         TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    ord         INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    value       TEXT    NOT NULL CHECK (json_valid(value)),
    PRIMARY KEY (projection, stream, tbl, key, ord)
);
-- A rowid table: values are JSON objects of a few hundred bytes, which SQLite stores better in
-- a rowid table than in a WITHOUT ROWID b-tree.

-- Range reads: one key's rows over time ("one patient's six years"), and all rows over time
-- ("security events since Monday"). Each index ends with the rest of the read order
-- (at, key, ord), so a read with a LIMIT, oldest or newest first, is an index range walk
-- without a sort.
CREATE INDEX read_model_rows_key_at ON read_model_rows (projection, stream, tbl, key, at, ord);
CREATE INDEX read_model_rows_at ON read_model_rows (projection, stream, tbl, at, key, ord);
