-- Our witness's record per log it witnesses: the latest checkpoint it cosigned. It moves only forward, by a
-- compare-and-swap on size, so two requests can never roll it back (C2SP tlog-witness).
CREATE TABLE federation.witnessed (
    origin text PRIMARY KEY,
    size bigint NOT NULL CHECK (size >= 0),
    root bytea NOT NULL,
    note bytea NOT NULL,
    cosigned_at timestamptz NOT NULL DEFAULT now()
);

-- Two signed checkpoints of one log that cannot both be true, kept as evidence. While one is open (not resolved by
-- a coordinator), we neither cosign for that log nor settle with it.
CREATE TABLE federation.evidence (
    id bigserial PRIMARY KEY,
    origin text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('fork', 'inconsistent')),
    first_note bytea NOT NULL,
    second_note bytea NOT NULL,
    detail text NOT NULL,
    detected_at timestamptz NOT NULL DEFAULT now(),
    resolved_at timestamptz
);
CREATE INDEX evidence_open ON federation.evidence (origin) WHERE resolved_at IS NULL;

-- The witnesses that cosign our log: the size each last cosigned, where our next request to it starts.
CREATE TABLE federation.cosigners (
    witness text PRIMARY KEY,
    size bigint NOT NULL CHECK (size >= 0),
    cosigned_at timestamptz NOT NULL DEFAULT now()
);
