-- auditledger PostgreSQL store, schema 2: what projections keep (crates/ledger/src/readmodel.rs).
--
-- Unlike the tables of schema 1, these are NOT append-only (no refuse_change trigger): a read
-- model is derived data, rebuildable at any time from the ledger (`reset_projection` then
-- replay), so a projection updates and deletes its rows and moves its position forward. The
-- evidence is the entries table (with merkle_nodes and checkpoints), which stays append-only
-- for every role; `verify` never reads these tables. Columns mirror the embedded store
-- (migrations/sqlite/V2__projections.sql).

-- Each projection's saved position per stream: the last entry it applied (seq and entry hash,
-- so it resumes on a verified link) and its own opaque state at that point. Written in the
-- transaction of the read-model changes it goes with; `seq` is the optimistic-concurrency
-- check that keeps two runners of one projection from both applying the same entries.
CREATE TABLE projection_positions (
    projection  text   NOT NULL,
    stream      text   NOT NULL,
    seq         bigint NOT NULL CHECK (seq >= 0),
    entry_hash  bytea  NOT NULL CHECK (octet_length(entry_hash) = 32),
    state       bytea  NOT NULL,
    updated_at  bigint NOT NULL,   -- microseconds since the Unix epoch
    PRIMARY KEY (projection, stream)
);

-- The rows of every read model: generic (table, key, ordinal, time, JSON value), so every
-- projection runs on every store without store code per projection. `at` is microseconds since
-- the Unix epoch. The text columns compare by byte ("C"), as SQLite does, whatever the
-- database's collation: reads order by key, and both stores must give the same order (and
-- byte comparison is the cheaper).
CREATE TABLE read_model_rows (
    projection  text COLLATE "C" NOT NULL,
    stream      text COLLATE "C" NOT NULL,
    tbl         text COLLATE "C" NOT NULL,
    key         text COLLATE "C" NOT NULL,
    ord         bigint           NOT NULL,
    at          bigint           NOT NULL,
    value       jsonb            NOT NULL,
    PRIMARY KEY (projection, stream, tbl, key, ord)
);

-- Range reads: one key's rows over time ("one patient's six years"), and all rows over time
-- ("security events since Monday"). Each index ends with the rest of the read order
-- (at, key, ord), so a read with a LIMIT, oldest or newest first, is an index range scan
-- without a sort.
CREATE INDEX read_model_rows_key_at ON read_model_rows (projection, stream, tbl, key, at, ord);
CREATE INDEX read_model_rows_at ON read_model_rows (projection, stream, tbl, at, key, ord);

-- The writer runs the projections, so it may change these two tables, and only these: its
-- rights on entries, merkle_nodes and checkpoints stay SELECT and INSERT (schema 1). A writer
-- that damaged a read model damages nothing but derived data, which a rebuild restores. The
-- auditor reads. (The roles were created by schema 1.)
GRANT SELECT, INSERT, UPDATE, DELETE ON projection_positions, read_model_rows TO auditledger_writer;
GRANT SELECT ON projection_positions, read_model_rows TO auditledger_auditor;
