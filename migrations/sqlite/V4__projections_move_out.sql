-- auditledger embedded store, schema 4: projections move out of the ledger file.
--
-- From this version, projections keep their positions and read-model rows in a database file
-- of their own beside this one (`projections.db`, schema in migrations/sqlite-projections/).
-- SQLite lets one connection write a file at a time: while the read-model tables lived here, a
-- projection's commit (thousands of row changes, up to a second) held the ledger's write lock,
-- and every append waited behind it. Measured in session 7 (docs/PERFORMANCE.md): 64
-- appenders at 74-83k/s alone fell to 4-6k/s while phi-access followed the head.
--
-- Read models are derived data, rebuilt from the ledger by their runners, so the old tables are
-- dropped, not copied: after the upgrade every projection catches up from the first entry
-- (`auditledger project <name>`, or `serve`, which does it on start). The evidence (entries,
-- merkle_nodes, checkpoints) is untouched.
DROP TABLE read_model_rows;
DROP TABLE projection_positions;
