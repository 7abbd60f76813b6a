-- The hash tiles of each verified copy (C2SP tlog-tiles, as ledger.tiles holds our own log's), written in the
-- transaction that stores the entries, so that the copy serves tiles and proofs like our own log.
CREATE TABLE federation.tiles (
    origin text NOT NULL REFERENCES federation.replicas (origin),
    level smallint NOT NULL CHECK (level >= 0),
    idx bigint NOT NULL CHECK (idx >= 0),
    hashes bytea NOT NULL CHECK (length(hashes) BETWEEN 32 AND 8192 AND length(hashes) % 32 = 0),
    PRIMARY KEY (origin, level, idx)
);
ALTER TABLE federation.tiles ALTER COLUMN hashes SET STORAGE EXTERNAL;

-- How a coordinator resolved fork evidence: 'dismiss' (our copy stands, replication and cosigning resume) or
-- 'reset' (our copy and our witness's record of that log are dropped, and the log is replicated again from its
-- start), and why.
ALTER TABLE federation.evidence
    ADD COLUMN resolution text CHECK (resolution IN ('dismiss', 'reset')),
    ADD COLUMN reason text,
    ADD CONSTRAINT evidence_resolved CHECK ((resolved_at IS NULL) = (resolution IS NULL AND reason IS NULL));
