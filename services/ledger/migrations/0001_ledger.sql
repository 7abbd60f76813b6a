-- The ledger's schema. The log (entries) is append-only: nothing here is ever updated or deleted;
-- accounts, tiles and head are derived state maintained in the same transaction as the entries.
CREATE SCHEMA IF NOT EXISTS ledger;

-- One row: the tree head. Locking it is the single-writer lock shared by every ledger process.
CREATE TABLE ledger.head (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    size bigint NOT NULL DEFAULT 0,
    root bytea NOT NULL
);
INSERT INTO ledger.head (root) VALUES (sha256(''::bytea));

-- The exact bytes of every entry; the Merkle leaf is SHA-256(0x00 || data).
CREATE TABLE ledger.entries (
    idx bigint PRIMARY KEY CHECK (idx >= 0),
    data bytea NOT NULL
);

-- Limits and status of each account. Its balance is the balance of its latest posting, so a transfer writes
-- no account rows at all.
CREATE TABLE ledger.accounts (
    id text PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('member', 'community', 'peer')),
    floor bigint NOT NULL CHECK (floor <= 0),
    ceiling bigint CHECK (ceiling >= 0),
    closed boolean NOT NULL DEFAULT false,
    peer text,
    opened_idx bigint NOT NULL,
    open_key text NOT NULL UNIQUE,
    open_fingerprint bytea NOT NULL
);
CREATE UNIQUE INDEX accounts_one_per_peer ON ledger.accounts (peer) WHERE peer IS NOT NULL AND NOT closed;

-- The appender is the only writer and checks every reference before it writes, so there are no foreign
-- keys here: each would cost a lookup per row on the hot path and guard against nothing.
CREATE TABLE ledger.transfers (
    id text PRIMARY KEY,
    idx bigint NOT NULL,
    fingerprint bytea NOT NULL,
    payer text NOT NULL,
    payee text NOT NULL,
    minutes integer NOT NULL CHECK (minutes > 0),
    reverses text,
    CHECK (payer <> payee)
);
-- A transfer can be reversed once: this unique index makes a second reversal impossible.
CREATE UNIQUE INDEX transfers_reversed_once ON ledger.transfers (reverses) WHERE reverses IS NOT NULL;

-- One row per account per transfer: the account's side of the double entry and its balance after it.
CREATE TABLE ledger.postings (
    account text NOT NULL,
    idx bigint NOT NULL,
    delta integer NOT NULL,
    balance bigint NOT NULL,
    transfer text NOT NULL,
    counterparty text NOT NULL,
    PRIMARY KEY (account, idx)
);

-- C2SP tlog-tiles hash tiles: up to 256 32-byte hashes of tree level 8*level; the rightmost may be partial.
CREATE TABLE ledger.tiles (
    level smallint NOT NULL,
    idx bigint NOT NULL,
    hashes bytea NOT NULL CHECK (length(hashes) % 32 = 0 AND length(hashes) BETWEEN 32 AND 8192),
    PRIMARY KEY (level, idx)
);

-- Signed checkpoints (C2SP tlog-checkpoint notes), one per committed batch.
CREATE TABLE ledger.checkpoints (
    size bigint PRIMARY KEY,
    note bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Invariant 3: what is recorded stays recorded. Any UPDATE or DELETE on the record tables is an error.
CREATE FUNCTION ledger.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger.% is append-only', TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER entries_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger.entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_change();
CREATE TRIGGER transfers_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger.transfers
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_change();
CREATE TRIGGER postings_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger.postings
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_change();
CREATE TRIGGER checkpoints_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger.checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_change();
