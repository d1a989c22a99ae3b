-- auditledger embedded store, projections file, schema 3: read-model rows keyed by a small
-- integer, in one B-tree with their primary key.
--
-- Schema 2 repeated three text columns that are the same for every row of one table of one
-- projection (projection, stream, tbl) in every row and in both of its indexes, and kept the
-- rows in a rowid table, so each row written was three B-tree inserts: the table, the primary
-- key and the by-time index. A profile of the phi-access projection put most of its time in
-- those inserts (docs/PERFORMANCE.md, session 12). As in the PostgreSQL store's schema 4
-- (migrations/postgres/V4__read_model_ids.sql), the triple now lives once in `read_models`
-- and rows carry its integer id; and the rows live in the primary key's B-tree (WITHOUT
-- ROWID): most are a few dozen bytes since phi-access state 4, far below the size at which
-- SQLite advises a rowid table. Two B-tree inserts per row, each of a shorter entry.
--
-- Ids are never deleted or reused (a reset deletes a model's rows, not its id). The rows and
-- positions of schema 2 are carried over unchanged: no projection has to be rebuilt.

CREATE TABLE read_models (
    id          INTEGER PRIMARY KEY,
    projection  TEXT NOT NULL,
    stream      TEXT NOT NULL,
    tbl         TEXT NOT NULL,
    UNIQUE (projection, stream, tbl)
);

INSERT INTO read_models (projection, stream, tbl)
    SELECT DISTINCT projection, stream, tbl FROM read_model_rows ORDER BY 1, 2, 3;

CREATE TABLE read_model_rows_by_id (
    model  INTEGER NOT NULL,
    key    TEXT    NOT NULL,
    ord    INTEGER NOT NULL,
    at     INTEGER NOT NULL,
    value  TEXT    NOT NULL CHECK (json_valid(value)),
    PRIMARY KEY (model, key, ord)
) WITHOUT ROWID;

INSERT INTO read_model_rows_by_id (model, key, ord, at, value)
    SELECT m.id, r.key, r.ord, r.at, r.value
    FROM read_model_rows r
    JOIN read_models m ON m.projection = r.projection AND m.stream = r.stream AND m.tbl = r.tbl
    ORDER BY 1, 2, 3;

DROP TABLE read_model_rows;
ALTER TABLE read_model_rows_by_id RENAME TO read_model_rows;

-- All rows over time ("security events since Monday"), as in schema 2; one key's rows come
-- from the primary key, sorted by time (schema 2's note).
CREATE INDEX read_model_rows_at ON read_model_rows (model, at, key, ord);
