-- Each transfer row now carries both accounts' balances after it, and the two posting rows per transfer go:
-- a transfer writes one row (plus its entry) instead of three. An account's statement and its balance at any
-- log index are read from the transfers it paid or was paid by (the two indexes below).
CREATE TABLE ledger.transfers_new (
    id text NOT NULL,
    idx bigint NOT NULL,
    fingerprint bytea NOT NULL,
    payer text NOT NULL,
    payee text NOT NULL,
    minutes integer NOT NULL CHECK (minutes > 0),
    reverses text,
    payer_balance bigint NOT NULL,
    payee_balance bigint NOT NULL,
    CHECK (payer <> payee)
);

INSERT INTO ledger.transfers_new (id, idx, fingerprint, payer, payee, minutes, reverses, payer_balance, payee_balance)
SELECT t.id, t.idx, t.fingerprint, t.payer, t.payee, t.minutes, t.reverses, pr.balance, pe.balance
FROM ledger.transfers t
JOIN ledger.postings pr ON pr.account = t.payer AND pr.idx = t.idx
JOIN ledger.postings pe ON pe.account = t.payee AND pe.idx = t.idx;

DROP TABLE ledger.transfers, ledger.postings;
ALTER TABLE ledger.transfers_new RENAME TO transfers;
ALTER TABLE ledger.transfers ADD PRIMARY KEY (id);
-- A transfer can be reversed once: this unique index makes a second reversal impossible.
CREATE UNIQUE INDEX transfers_reversed_once ON ledger.transfers (reverses) WHERE reverses IS NOT NULL;
CREATE INDEX transfers_by_payer ON ledger.transfers (payer, idx);
CREATE INDEX transfers_by_payee ON ledger.transfers (payee, idx);
CREATE TRIGGER transfers_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger.transfers
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_change();

-- The account's balance after the entries below log index ``before``: the balance its latest transfer left.
CREATE FUNCTION ledger.balance_before(account text, before bigint) RETURNS bigint
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT coalesce((
        SELECT b.balance FROM (
            (SELECT idx, payer_balance AS balance FROM ledger.transfers
             WHERE payer = account AND idx < before ORDER BY idx DESC LIMIT 1)
            UNION ALL
            (SELECT idx, payee_balance FROM ledger.transfers
             WHERE payee = account AND idx < before ORDER BY idx DESC LIMIT 1)
        ) b
        ORDER BY b.idx DESC LIMIT 1
    ), 0)
$$;

-- The head moves on only from the size a batch was decided at, so a batch that would leave a gap in the log (or
-- land on top of another) fails whole, whatever else went wrong.
CREATE FUNCTION ledger.next_size(current_size bigint, decided_at bigint, new_size bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
    IF current_size <> decided_at THEN
        RAISE EXCEPTION 'the ledger head is at %, but this batch was decided at %', current_size, decided_at
            USING ERRCODE = 'serialization_failure';
    END IF;
    RETURN new_size;
END $$;

-- Tiles are hashes: compressing them never pays, so store them out of line uncompressed.
ALTER TABLE ledger.tiles ALTER COLUMN hashes SET STORAGE EXTERNAL;
