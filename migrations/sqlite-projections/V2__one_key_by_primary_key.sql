-- auditledger embedded store, projections file, schema 2: one index fewer on read-model rows.
--
-- One key's rows over a time range ("one patient's month") are read through the primary key
-- (projection, stream, tbl, key, ord) and sorted by time: the keys projections read that way
-- hold tens of rows (a patient's accesses in one month, one address's blocks), so the sort is
-- of tens of rows. The by-key-and-time index cost a third of the index work of every row a
-- projection writes. The PostgreSQL store dropped it in its schema 4 for the same reason
-- (migrations/postgres/V4__read_model_ids.sql). All rows over time keep their index.
DROP INDEX read_model_rows_key_at;
