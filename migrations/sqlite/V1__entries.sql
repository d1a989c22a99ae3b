-- auditledger embedded store, schema 1.
-- One row per entry. Every column is covered by a hash: seq, recorded_at, prev_hash and
-- payload_digest by entry_hash; payload by payload_digest; the extracted columns (kind ..
-- idem) are recomputed from the payload by `verify`.
CREATE TABLE entries (
    stream          TEXT    NOT NULL,
    seq             INTEGER NOT NULL CHECK (seq >= 0),
    recorded_at     INTEGER NOT NULL,
    payload         BLOB,
    payload_digest  BLOB    NOT NULL CHECK (length(payload_digest) = 32),
    prev_hash       BLOB    NOT NULL CHECK (length(prev_hash) = 32),
    entry_hash      BLOB    NOT NULL CHECK (length(entry_hash) = 32),
    kind            TEXT    NOT NULL,
    occurred_at     INTEGER,
    action          TEXT,
    outcome         TEXT,
    actor           TEXT,
    patient         TEXT,
    phi             INTEGER NOT NULL DEFAULT 0 CHECK (phi IN (0, 1)),
    idem            BLOB,
    PRIMARY KEY (stream, seq)
);
-- A rowid table, not WITHOUT ROWID: entries are ~1 KB, and SQLite stores large rows far better
-- in a rowid table (measured: 3.2x the insert rate and a quarter of the file size). Entries
-- are inserted in seq order, so rowid order is seq order and scans stay sequential.

-- A retried append finds its first receipt; two writers cannot both store one key.
CREATE UNIQUE INDEX entries_idem ON entries (stream, idem) WHERE idem IS NOT NULL;

-- The database refuses a fork by itself: an entry is either a genesis (seq 0, zero prev_hash)
-- or continues the entry before it. With the primary key, no two entries share a predecessor.
CREATE TRIGGER entries_continue_chain BEFORE INSERT ON entries
WHEN NOT (
    (NEW.seq = 0 AND NEW.prev_hash = zeroblob(32))
    OR EXISTS (SELECT 1 FROM entries
               WHERE stream = NEW.stream AND seq = NEW.seq - 1 AND entry_hash = NEW.prev_hash)
)
BEGIN
    SELECT RAISE(ABORT, 'auditledger: entry does not continue the chain');
END;

-- Append-only.
CREATE TRIGGER entries_no_update BEFORE UPDATE ON entries
BEGIN
    SELECT RAISE(ABORT, 'auditledger: entries are append-only (UPDATE refused)');
END;

CREATE TRIGGER entries_no_delete BEFORE DELETE ON entries
BEGIN
    SELECT RAISE(ABORT, 'auditledger: entries are append-only (DELETE refused)');
END;

-- Hashes of perfect Merkle subtrees of level >= 5 (see crates/ledger/src/merkle.rs), written in
-- the transaction of the entries that complete them. Derivable from the entries, so verify
-- recomputes and compares them.
CREATE TABLE merkle_nodes (
    stream  TEXT    NOT NULL,
    level   INTEGER NOT NULL CHECK (level BETWEEN 5 AND 63),
    idx     INTEGER NOT NULL CHECK (idx >= 0),
    hash    BLOB    NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (stream, level, idx)
) WITHOUT ROWID;

CREATE TRIGGER merkle_nodes_no_update BEFORE UPDATE ON merkle_nodes
BEGIN
    SELECT RAISE(ABORT, 'auditledger: merkle_nodes are append-only (UPDATE refused)');
END;

CREATE TRIGGER merkle_nodes_no_delete BEFORE DELETE ON merkle_nodes
BEGIN
    SELECT RAISE(ABORT, 'auditledger: merkle_nodes are append-only (DELETE refused)');
END;

-- Signed checkpoints (C2SP signed-note text), one per stream and tree size.
CREATE TABLE checkpoints (
    stream      TEXT    NOT NULL,
    size        INTEGER NOT NULL CHECK (size >= 0),
    note        TEXT    NOT NULL,
    PRIMARY KEY (stream, size)
) WITHOUT ROWID;

CREATE TRIGGER checkpoints_no_update BEFORE UPDATE ON checkpoints
BEGIN
    SELECT RAISE(ABORT, 'auditledger: checkpoints are append-only (UPDATE refused)');
END;

CREATE TRIGGER checkpoints_no_delete BEFORE DELETE ON checkpoints
BEGIN
    SELECT RAISE(ABORT, 'auditledger: checkpoints are append-only (DELETE refused)');
END;
