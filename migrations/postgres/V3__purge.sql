-- auditledger PostgreSQL store, schema 3: purging payloads, the one sanctioned change to an
-- entry (retention, issue 9; `Store::purge_payloads` in crates/ledger/src/store.rs).
--
-- HIPAA asks for six years of audit records, and a policy may let a payload go after that.
-- The chain does not need it: entry_hash covers the payload only through payload_digest, so
-- with seq, recorded_at, the digests and the hashes kept, the chain still verifies, and the
-- purge authorization entry (appended first) says which payloads were let go and why.
--
-- The rule is the database's, not the store code's, so it holds for every role, the owner
-- included (the same rule as migrations/sqlite/V3__purge.sql): an UPDATE of an entry is
-- refused unless it
--   - removes the payload of an event (kind stays 'event') together with every column
--     extracted from it (nothing could check them any more), and changes nothing else;
--   - and a purge authorization entry (action 'retention_purge') follows it in its stream,
--     recorded at least 2190 days (six years of 365 days: ledger::record::MIN_RETENTION_MICROS
--     = 189216000000000 us) after it.
-- Which entries an authorization really covers (its range, holds, longer horizons) is checked
-- by `verify`; the database only guarantees that nothing younger than the floor, and nothing
-- but a payload, can ever go. DELETE and TRUNCATE stay refused.
--
-- The writer role still cannot UPDATE entries: it purges only through purge_payloads() below,
-- which runs as the owner and does nothing the trigger would not allow anyway.

-- A SECURITY DEFINER function must not resolve a name to a table the caller created: without
-- this, pg_temp is searched first, and a caller's temporary "entries" would stand in for the
-- ledger's in the checks. The functions below pin this path (SET search_path FROM CURRENT).
SELECT set_config('search_path', format('%I, pg_temp', current_schema()), false);

-- The chain trigger of schema 1 pinned the schema alone, so pg_temp came first there too: a
-- writer's temporary "entries" could answer its continuity check. Pinned the same way now.
ALTER FUNCTION entries_continue_chain() SET search_path FROM CURRENT;

-- The authorization check runs once per purged row: a probe of this small index, not a walk
-- over every later entry of the stream (a purge of a million rows must stay linear).
CREATE INDEX entries_purge_authorizations ON entries (stream, seq)
    WHERE action = 'retention_purge';

-- UPDATE leaves the statement-level refusal of schema 1 for the row-level rule below; DELETE
-- and TRUNCATE keep it (still statement-level, so even a DELETE matching nothing is refused).
DROP TRIGGER entries_append_only ON entries;
CREATE TRIGGER entries_append_only BEFORE DELETE OR TRUNCATE ON entries
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();

-- Row-level, since the rule is about each row's old and new values. It costs nothing on
-- appends (INSERT does not fire it). IS NOT DISTINCT FROM, not =: a comparison with a NULL
-- would be NULL, and IF NOT NULL lets the row through.
CREATE FUNCTION entries_purge_only() RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    IF NOT (NEW.stream IS NOT DISTINCT FROM OLD.stream
            AND NEW.seq IS NOT DISTINCT FROM OLD.seq
            AND NEW.recorded_at IS NOT DISTINCT FROM OLD.recorded_at
            AND NEW.payload_digest IS NOT DISTINCT FROM OLD.payload_digest
            AND NEW.prev_hash IS NOT DISTINCT FROM OLD.prev_hash
            AND NEW.entry_hash IS NOT DISTINCT FROM OLD.entry_hash
            AND NEW.kind IS NOT DISTINCT FROM OLD.kind
            AND OLD.kind = 'event'
            AND OLD.payload IS NOT NULL
            AND NEW.payload IS NULL
            AND NEW.occurred_at IS NULL
            AND NEW.action IS NULL
            AND NEW.outcome IS NULL
            AND NEW.actor IS NULL
            AND NEW.patient IS NULL
            AND NEW.phi IS FALSE
            AND NEW.idem IS NULL) THEN
        RAISE EXCEPTION 'auditledger: purge refused: entries are append-only; an UPDATE may only remove the payload of an event with its extracted columns (entry % of stream %)', OLD.seq, OLD.stream
            USING ERRCODE = 'ALP01';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM entries a
                   WHERE a.stream = OLD.stream
                     AND a.action = 'retention_purge'
                     AND a.seq > OLD.seq
                     AND a.recorded_at - OLD.recorded_at >= 189216000000000) THEN
        RAISE EXCEPTION 'auditledger: purge refused: no purge authorization follows entry % of stream %, recorded at least 2190 days after it', OLD.seq, OLD.stream
            USING ERRCODE = 'ALP01';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER entries_purge_only BEFORE UPDATE ON entries
    FOR EACH ROW EXECUTE FUNCTION entries_purge_only();

-- The one way a role without UPDATE on entries (the writer) purges: checks that the
-- authorization is one and comes after the range, then removes the payloads still there in
-- the range (the trigger checks every row again, as the owner's). Returns how many it removed.
CREATE FUNCTION purge_payloads(p_stream text, p_authorization bigint, p_from bigint, p_to bigint)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
DECLARE
    auth_action text;
    removed bigint;
BEGIN
    SELECT action INTO auth_action FROM entries WHERE stream = p_stream AND seq = p_authorization;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'auditledger: purge refused: stream % has no entry %', p_stream, p_authorization
            USING ERRCODE = 'ALP01';
    END IF;
    IF auth_action IS DISTINCT FROM 'retention_purge' THEN
        RAISE EXCEPTION 'auditledger: purge refused: entry % of stream % is not a purge authorization', p_authorization, p_stream
            USING ERRCODE = 'ALP01';
    END IF;
    IF p_authorization <= p_to THEN
        RAISE EXCEPTION 'auditledger: purge refused: the authorization (entry %) must come after the purged range (up to %)', p_authorization, p_to
            USING ERRCODE = 'ALP01';
    END IF;
    UPDATE entries
       SET payload = NULL, occurred_at = NULL, action = NULL, outcome = NULL, actor = NULL,
           patient = NULL, phi = false, idem = NULL
     WHERE stream = p_stream AND seq BETWEEN p_from AND p_to AND payload IS NOT NULL;
    GET DIAGNOSTICS removed = ROW_COUNT;
    RETURN removed;
END
$$;

-- Functions are executable by PUBLIC by default; this one only by the writer.
REVOKE ALL ON FUNCTION purge_payloads(text, bigint, bigint, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION purge_payloads(text, bigint, bigint, bigint) TO auditledger_writer;
