-- The federation's durable outbox (shared/outbox.py): what verified neighbours' entries ask of our ledger, written
-- in the transaction that stores those entries, and sent until the ledger's answer is recorded. The key is the
-- one the ledger deduplicates by, so a command sent twice is still done once.
CREATE TABLE federation.outbox (
    key             text PRIMARY KEY,
    kind            text NOT NULL,
    payload         bytea NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    done_at         timestamptz,
    outcome         bytea,
    last_error      text,
    CHECK ((done_at IS NULL) = (outcome IS NULL))
);

CREATE INDEX outbox_pending ON federation.outbox (next_attempt_at) WHERE done_at IS NULL;
