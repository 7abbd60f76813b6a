-- Our neighbours, as the settings file and coordinators (API, `timebank peer`) configured them. A removed peer keeps
-- its row (removed_at) so its history stays explained; adding it again brings it back. The NATS passwords are
-- secrets: this schema is the federation's own, like the ledger's keys are the ledger's.
CREATE TABLE federation.peers (
    origin text PRIMARY KEY,
    name text NOT NULL,
    log_key text NOT NULL,
    witness_key text,
    nats_url text NOT NULL,
    nats_user text,
    nats_password text,
    issued_password text,
    trust_limit bigint NOT NULL CHECK (trust_limit >= 0),
    added_at timestamptz NOT NULL DEFAULT now(),
    removed_at timestamptz
);
CREATE UNIQUE INDEX peers_name ON federation.peers (name) WHERE removed_at IS NULL;
