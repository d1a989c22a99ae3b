-- auditledger PostgreSQL store, schema 4: read-model rows keyed by a small integer.
--
-- Schema 2 keyed every read-model row, and both of its indexes, by three text columns that
-- are the same for every row of one table of one projection (projection, stream, tbl), ahead
-- of the key that tells rows apart. Most of a projection commit's time went into B-tree
-- comparisons of those columns (a profile of `scripts/bench-phi --database-url`: index
-- insertion and the ON CONFLICT probe were three quarters of the server's work, mostly
-- `_bt_compare` walking the text columns). The triple now lives once in `read_models`, and rows
-- carry its integer id. Side by side, the same 1.55 M phi-access rows upserted in one statement
-- took 26.5-29.0 s in the schema-2 layout, 18.1-18.2 s with the id, and 14.1-15.3 s with the
-- id and the index dropped below (0.53x); the table with its indexes is 0.72x the size.
--
-- Ids are never deleted or reused (a reset deletes a model's rows, not its id), so a store
-- may cache them. The rows and positions of schema 2 and 3 are carried over unchanged: no
-- projection has to be rebuilt.

CREATE TABLE read_models (
    id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    projection  text COLLATE "C" NOT NULL,
    stream      text COLLATE "C" NOT NULL,
    tbl         text COLLATE "C" NOT NULL,
    UNIQUE (projection, stream, tbl)
);

INSERT INTO read_models (projection, stream, tbl)
    SELECT DISTINCT projection, stream, tbl FROM read_model_rows ORDER BY 1, 2, 3;

ALTER TABLE read_model_rows RENAME TO read_model_rows_schema_2;
ALTER INDEX read_model_rows_pkey RENAME TO read_model_rows_schema_2_pkey;
ALTER INDEX read_model_rows_key_at RENAME TO read_model_rows_schema_2_key_at;
ALTER INDEX read_model_rows_at RENAME TO read_model_rows_schema_2_at;

-- No foreign key to read_models: it would cost a lookup per inserted row, and the store only
-- writes ids it read from read_models. Text columns compare by byte ("C"), as in schema 2.
CREATE TABLE read_model_rows (
    model  integer          NOT NULL,
    key    text COLLATE "C" NOT NULL,
    ord    bigint           NOT NULL,
    at     bigint           NOT NULL,
    value  jsonb            NOT NULL
);

INSERT INTO read_model_rows (model, key, ord, at, value)
    SELECT m.id, r.key, r.ord, r.at, r.value
    FROM read_model_rows_schema_2 r
    JOIN read_models m ON m.projection = r.projection AND m.stream = r.stream AND m.tbl = r.tbl;

DROP TABLE read_model_rows_schema_2;

-- Two indexes where schema 2 had three. One key's rows over a time range ("one patient's
-- month") are read through the primary key and sorted by time: the keys projections read
-- this way hold a handful of rows each (a patient's accesses in one month, one address's
-- blocks), so the sort is of tens of rows, and the by-key-and-time index of schema 2 cost a
-- third of every projection commit's index work. A projection that reads keys holding many thousands of rows by time should not
-- count on this layout. All rows over time ("security events since Monday") keep their index.
ALTER TABLE read_model_rows ADD PRIMARY KEY (model, key, ord);
CREATE INDEX read_model_rows_at ON read_model_rows (model, at, key, ord);

-- The writer registers a projection's tables as it first writes them, and never changes or
-- removes a registration; the auditor reads.
GRANT SELECT, INSERT ON read_models TO auditledger_writer;
GRANT SELECT, INSERT, UPDATE, DELETE ON read_model_rows TO auditledger_writer;
GRANT SELECT ON read_models, read_model_rows TO auditledger_auditor;
