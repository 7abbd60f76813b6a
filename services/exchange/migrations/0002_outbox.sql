-- The durable outbox: commands the exchange decided to send to the ledger, written in the same transaction as the
-- event that decided them, and sent (and re-sent) until the ledger gave an answer that was recorded. The key is the
-- idempotency key the ledger sees, so a command sent twice is still done once.
CREATE TABLE exchange.outbox (
    key             text PRIMARY KEY,
    kind            text NOT NULL,                      -- the command's tag, e.g. 'exchange.outbox.transfer.v1'
    payload         bytea NOT NULL,                     -- the command as msgspec JSON
    created_at      timestamptz NOT NULL DEFAULT now(),
    attempts        integer NOT NULL DEFAULT 0,         -- times the command was sent (or tried to be)
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    done_at         timestamptz,                        -- set with the outcome, in the transaction that recorded it
    outcome         bytea,                              -- the ledger's answer as msgspec JSON (delivered or refused)
    last_error      text,
    CHECK ((done_at IS NULL) = (outcome IS NULL))
);

-- What a worker's round claims: due rows not yet done, oldest due first.
CREATE INDEX outbox_pending ON exchange.outbox (next_attempt_at) WHERE done_at IS NULL;
