-- Minutes in flight: our payments to a neighbour's members that it has neither accepted nor had reversed. They are
-- in the clearing account's balance, but a decision on the neighbour's payments counts only settled minutes.

-- The neighbour's acceptances of our payments, as recorded in our log (ledger.crossnet.accepted.v1): one per
-- transfer of ours, even across processes (the primary key).
CREATE TABLE ledger.crossnet_accepted (
    transfer text PRIMARY KEY,
    origin text NOT NULL,
    -- The record's index in our log, and the neighbour's decision's index in its log.
    idx bigint NOT NULL,
    remote_idx bigint NOT NULL,
    fingerprint bytea NOT NULL
);
CREATE TRIGGER crossnet_accepted_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger.crossnet_accepted
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_change();

-- A clearing account's minutes in flight after each entry that changed them (a payment out, its acceptance, its
-- reversal): the latest row holds the current value, as the latest transfer row holds a balance.
CREATE TABLE ledger.in_flight (
    account text NOT NULL,
    idx bigint NOT NULL,
    minutes bigint NOT NULL CHECK (minutes >= 0),
    PRIMARY KEY (account, idx)
);
CREATE TRIGGER in_flight_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger.in_flight
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_change();

-- Until now no acceptance was recorded: every payment out not reversed starts in flight. The federation sends the
-- acceptances it has already seen again (its migration 0006), which settles them.
INSERT INTO ledger.in_flight (account, idx, minutes)
SELECT t.payee, (SELECT size - 1 FROM ledger.head), sum(t.minutes)
FROM ledger.transfers t
JOIN ledger.accounts a ON a.id = t.payee AND a.kind = 'peer'
WHERE NOT EXISTS (SELECT 1 FROM ledger.transfers r WHERE r.reverses = t.id)
GROUP BY t.payee;
