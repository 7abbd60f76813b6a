-- Each line's memo: in a group exchange with several providers, each provider's line carries their own memo (the
-- one whose salted digest its ledger transfer holds), so a statement shows every member the memo of their own line.
ALTER TABLE exchange.exchange_lines ADD COLUMN memo text;
