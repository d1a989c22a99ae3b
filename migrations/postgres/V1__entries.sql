-- auditledger PostgreSQL store, schema 1.
--
-- Runs with search_path set to the ledger's schema (default `auditledger`), so every name
-- below lands there and one database can hold several ledgers (one per schema). The columns
-- mirror the embedded store (migrations/sqlite/V1__entries.sql): times are integer
-- microseconds since the Unix epoch, digests 32-byte bytea.

-- One row per entry. Every column is covered by a hash: seq, recorded_at, prev_hash and
-- payload_digest by entry_hash; payload by payload_digest; the extracted columns (kind ..
-- idem) are recomputed from the payload by `verify`.
CREATE TABLE entries (
    stream          text    NOT NULL,
    seq             bigint  NOT NULL CHECK (seq >= 0),
    recorded_at     bigint  NOT NULL,
    payload         bytea,
    payload_digest  bytea   NOT NULL CHECK (octet_length(payload_digest) = 32),
    prev_hash       bytea   NOT NULL CHECK (octet_length(prev_hash) = 32),
    entry_hash      bytea   NOT NULL CHECK (octet_length(entry_hash) = 32),
    kind            text    NOT NULL,
    occurred_at     bigint,
    action          text,
    outcome         text,
    actor           text,
    patient         text,
    phi             boolean NOT NULL DEFAULT false,
    idem            bytea,
    -- No two entries at one position, hence no two entries with one predecessor.
    PRIMARY KEY (stream, seq)
);

-- A retried append finds its first receipt; two writers cannot both store one key.
CREATE UNIQUE INDEX entries_idem ON entries (stream, idem) WHERE idem IS NOT NULL;

-- The database refuses a fork by itself: every inserted entry is either a genesis (seq 0,
-- zero prev_hash) or continues the entry before it (which may be earlier in the same
-- statement). Checked once per INSERT/COPY statement over its transition table rather than
-- per row: a BEFORE ROW trigger makes COPY fall back to row-at-a-time inserts, and a
-- self-referencing foreign key needs a second unique index. Measured with 200,000 rows in one
-- binary COPY on this machine: no check 1.04-1.57 s, this statement trigger 1.65-2.25 s, a
-- BEFORE ROW trigger 1.71-2.71 s, a foreign key (stream, seq-1, prev_hash) ->
-- (stream, seq, entry_hash) 3.0-4.5 s.
CREATE FUNCTION entries_continue_chain() RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    bad record;
BEGIN
    SELECT n.stream, n.seq INTO bad
    FROM new_entries n
    LEFT JOIN entries p ON p.stream = n.stream AND p.seq = n.seq - 1
    WHERE CASE WHEN n.seq = 0
               THEN n.prev_hash <> '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea
               ELSE p.entry_hash IS DISTINCT FROM n.prev_hash
          END
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'auditledger: entry % of stream % does not continue the chain', bad.seq, bad.stream
            USING ERRCODE = 'ALC01',
                  HINT = 'another writer appended first: re-read the head and chain again';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER entries_continue_chain AFTER INSERT ON entries
    REFERENCING NEW TABLE AS new_entries
    FOR EACH STATEMENT EXECUTE FUNCTION entries_continue_chain();

-- Append-only: one function refuses UPDATE, DELETE and TRUNCATE on every ledger table.
-- Statement-level, so it fires even when no row matches (a refused `DELETE ... WHERE false`
-- is still refused, and nothing is scanned first).
CREATE FUNCTION refuse_change() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    RAISE EXCEPTION 'auditledger: % is append-only (% refused)', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'ALA01';
END
$$;

CREATE TRIGGER entries_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON entries
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();

-- Hashes of perfect Merkle subtrees of level >= 5 (see crates/ledger/src/merkle.rs), written in
-- the transaction of the entries that complete them. Derivable from the entries, so verify
-- recomputes and compares them.
CREATE TABLE merkle_nodes (
    stream  text     NOT NULL,
    level   smallint NOT NULL CHECK (level BETWEEN 5 AND 63),
    idx     bigint   NOT NULL CHECK (idx >= 0),
    hash    bytea    NOT NULL CHECK (octet_length(hash) = 32),
    PRIMARY KEY (stream, level, idx)
);

CREATE TRIGGER merkle_nodes_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON merkle_nodes
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();

-- Signed checkpoints (C2SP signed-note text), one per stream and tree size.
CREATE TABLE checkpoints (
    stream  text   NOT NULL,
    size    bigint NOT NULL CHECK (size >= 0),
    note    text   NOT NULL,
    PRIMARY KEY (stream, size)
);

CREATE TRIGGER checkpoints_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();

-- Group roles (NOLOGIN): an operator creates LOGIN roles and grants these (docs/POSTGRES.md).
-- Roles belong to the whole cluster, so they are created only when absent; a concurrent
-- migration of another database may create one first, which is fine.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'auditledger_writer') THEN
        BEGIN
            CREATE ROLE auditledger_writer NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
        END;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'auditledger_auditor') THEN
        BEGIN
            CREATE ROLE auditledger_auditor NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
        END;
    END IF;
    -- The writer appends and reads; the auditor only reads. Neither may change a row (the
    -- triggers above refuse that even to the owner).
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO auditledger_writer, auditledger_auditor', current_schema());
    GRANT SELECT, INSERT ON entries, merkle_nodes, checkpoints TO auditledger_writer;
    GRANT SELECT ON entries, merkle_nodes, checkpoints TO auditledger_auditor;
    -- Both check the schema version when they connect.
    GRANT SELECT ON refinery_schema_history TO auditledger_writer, auditledger_auditor;
END
$$;
