-- Cross-network decisions: this network's answer to each neighbour transfer paid to one of its accounts.
-- The primary key makes a second decision on the same neighbour transfer impossible, even across processes;
-- an accepted one is also a transfer (ledger.transfers), a rejected one only an entry.
CREATE TABLE ledger.crossnet (
    origin text NOT NULL,
    transfer text NOT NULL,
    idx bigint NOT NULL,
    fingerprint bytea NOT NULL,
    -- NULL when accepted; otherwise why it was rejected.
    reason text CHECK (reason IN ('unknown_payee', 'not_a_member', 'account_closed', 'trust_limit', 'ceiling')),
    PRIMARY KEY (origin, transfer)
);

CREATE TRIGGER crossnet_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger.crossnet
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_change();
