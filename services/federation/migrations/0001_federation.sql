-- The federation's own schema: verified copies of neighbours' logs, and what was refused on the way.
CREATE SCHEMA IF NOT EXISTS federation;

-- One row per replicated neighbour: the verified tree so far. It moves only forward, by compare-and-swap on size.
CREATE TABLE federation.replicas (
    origin text PRIMARY KEY,
    size bigint NOT NULL DEFAULT 0 CHECK (size >= 0),
    -- The right edge of the verified tree: the perfect subtrees' hashes, 32 bytes each, left to right.
    edge bytea NOT NULL DEFAULT ''::bytea CHECK (length(edge) % 32 = 0),
    -- The neighbour's signed checkpoint note for exactly ``size`` entries (NULL while size is 0).
    checkpoint bytea,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The neighbour's entries, as it stored and hashed them.
CREATE TABLE federation.entries (
    origin text NOT NULL REFERENCES federation.replicas (origin),
    idx bigint NOT NULL CHECK (idx >= 0),
    data bytea NOT NULL,
    PRIMARY KEY (origin, idx)
);

-- Every checkpoint of the neighbour's that a verified batch ended at.
CREATE TABLE federation.checkpoints (
    origin text NOT NULL REFERENCES federation.replicas (origin),
    size bigint NOT NULL,
    note bytea NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (origin, size)
);

-- Messages refused, counted per origin (as claimed by the message, or the peer it came through) and reason.
CREATE TABLE federation.rejections (
    origin text NOT NULL,
    reason text NOT NULL,
    count bigint NOT NULL DEFAULT 0,
    last_detail text NOT NULL,
    last_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (origin, reason)
);
