-- The exchange's private event store: one ordered stream per aggregate, optimistic concurrency per stream.
CREATE SCHEMA IF NOT EXISTS exchange;

CREATE TABLE exchange.events (
    seq      bigserial PRIMARY KEY,          -- global order, for rebuilds
    stream   text NOT NULL,                  -- e.g. 'member-mem_…', 'listing-lst_…', 'exchange-ex_…'
    version  integer NOT NULL CHECK (version >= 1),
    type     text NOT NULL,                  -- the msgspec tag, e.g. 'exchange.member.applied.v1'
    data     bytea NOT NULL,                 -- the event as stored (msgspec JSON); personal fields sealed
    at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (stream, version)
);

CREATE FUNCTION exchange.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'exchange.% is append-only', TG_TABLE_NAME;
END $$;

CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON exchange.events
    FOR EACH ROW EXECUTE FUNCTION exchange.refuse_change();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON exchange.events
    FOR EACH STATEMENT EXECUTE FUNCTION exchange.refuse_change();

-- Per-subject data keys for personal fields in events ("crypto-shredding"): erasing a member deletes the key,
-- and every sealed field of theirs becomes unreadable for good while the events themselves stay.
CREATE TABLE exchange.subject_keys (
    subject  text PRIMARY KEY,
    key      bytea NOT NULL
);

-- ---- Read models: derived from the events in the same transaction; `timebank rebuild exchange` remakes them ----

CREATE TABLE exchange.members (
    id           text PRIMARY KEY,
    status       text NOT NULL,              -- pending, approved, rejected, erased
    role         text NOT NULL,              -- member, coordinator, auditor
    account      text,                       -- the ledger account, once opened
    name         text NOT NULL DEFAULT '',
    email        text,
    skills       text[] NOT NULL DEFAULT '{}',
    area         text NOT NULL DEFAULT '',
    bio          text NOT NULL DEFAULT '',
    password_hash text,
    joined_at    timestamptz NOT NULL,
    approved_at  timestamptz
);
CREATE UNIQUE INDEX members_email ON exchange.members (lower(email)) WHERE email IS NOT NULL;
CREATE INDEX members_pending ON exchange.members (joined_at) WHERE status = 'pending';

CREATE TABLE exchange.invitations (
    id           text PRIMARY KEY,
    token_sha256 text NOT NULL UNIQUE,
    role         text NOT NULL,
    expires      timestamptz NOT NULL,
    created_by   text,
    created_at   timestamptz NOT NULL,
    used_by      text
);

CREATE TABLE exchange.listings (
    id           text PRIMARY KEY,
    member       text,                       -- NULL for a listing received from a neighbouring network
    network      text,                       -- NULL for our own listings; the neighbour's origin otherwise
    kind         text NOT NULL,
    category     text NOT NULL,
    title        text NOT NULL DEFAULT '',
    description  text NOT NULL DEFAULT '',
    area         text NOT NULL DEFAULT '',
    availability text NOT NULL DEFAULT '',
    shared       boolean NOT NULL DEFAULT false,
    status       text NOT NULL,              -- active, paused, withdrawn
    expires      timestamptz NOT NULL,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    search       tsvector GENERATED ALWAYS AS (
                     setweight(to_tsvector('english', title), 'A') ||
                     setweight(to_tsvector('english', description), 'B') ||
                     setweight(to_tsvector('english', area), 'C')) STORED
);
CREATE INDEX listings_search ON exchange.listings USING gin (search) WHERE status = 'active';
CREATE INDEX listings_newest ON exchange.listings (created_at DESC, id DESC) WHERE status = 'active';
CREATE INDEX listings_member ON exchange.listings (member);

CREATE TABLE exchange.exchanges (
    id           text PRIMARY KEY,
    proposer     text NOT NULL,
    listing      text,
    category     text NOT NULL,
    status       text NOT NULL,
    note         text,
    memo         text,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
);

CREATE TABLE exchange.exchange_parties (
    exchange     text NOT NULL,
    member       text NOT NULL,
    side         text NOT NULL,              -- provider, receiver
    answer       text,                       -- proposer, accepted, declined; NULL while awaited
    PRIMARY KEY (exchange, member)
);
CREATE INDEX exchange_parties_member ON exchange.exchange_parties (member);

CREATE TABLE exchange.exchange_lines (
    exchange     text NOT NULL,
    n            integer NOT NULL,
    provider     text NOT NULL,
    receiver     text NOT NULL,
    state        text NOT NULL,
    minutes      integer NOT NULL DEFAULT 0,
    transfer     text,
    ledger_index bigint,
    settled_at   timestamptz,
    PRIMARY KEY (exchange, n)
);
CREATE INDEX exchange_lines_settled ON exchange.exchange_lines (settled_at) WHERE state = 'settled';

CREATE TABLE exchange.payments (
    id           text PRIMARY KEY,
    kind         text NOT NULL,
    payer        text NOT NULL,              -- a member id or 'pot'
    payee        text NOT NULL,
    minutes      integer NOT NULL,
    made_by      text NOT NULL,
    status       text NOT NULL,
    memo         text,
    transfer     text,
    ledger_index bigint,
    created_at   timestamptz NOT NULL
);
CREATE INDEX payments_payer ON exchange.payments (payer);
CREATE INDEX payments_payee ON exchange.payments (payee);

CREATE TABLE exchange.pot (
    one          boolean PRIMARY KEY DEFAULT true CHECK (one),
    account      text NOT NULL
);

-- ---- Operational state (not event-sourced, not rebuilt): sign-ins and their rate limit ----

CREATE TABLE exchange.sessions (
    token_sha256 text PRIMARY KEY,
    member       text NOT NULL,
    kind         text NOT NULL,              -- cookie, bearer
    csrf         text NOT NULL,
    label        text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
CREATE INDEX sessions_member ON exchange.sessions (member);

CREATE TABLE exchange.login_failures (
    key          text NOT NULL,              -- 'email:<lower email>' or 'ip:<address>'
    at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_failures_key ON exchange.login_failures (key, at);
