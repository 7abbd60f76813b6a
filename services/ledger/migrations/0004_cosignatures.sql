-- Witnesses' cosignatures (C2SP tlog-cosignature lines) on our signed checkpoints, as the federation collected and
-- verified them. The checkpoint is served with those for its size appended.
CREATE TABLE ledger.cosignatures (
    size bigint NOT NULL REFERENCES ledger.checkpoints (size),
    witness text NOT NULL,
    key_id bigint NOT NULL,
    line text NOT NULL,
    added_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (size, witness, key_id)
);
