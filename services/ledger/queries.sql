-- name: lock_head
SELECT size, root FROM ledger.head FOR UPDATE

-- name: head
SELECT size, root FROM ledger.head

-- name: right_edge_tiles
-- The rightmost stored tile at every level, to rebuild the appender's in-memory right edge.
SELECT DISTINCT ON (level) level, hashes FROM ledger.tiles ORDER BY level, idx DESC

-- name: accounts_by_id
SELECT id, kind, floor, ceiling, balance, closed FROM ledger.accounts WHERE id = ANY($1::text[])

-- name: opens_by_key
SELECT open_key, id, open_fingerprint, opened_idx FROM ledger.accounts WHERE open_key = ANY($1::text[])

-- name: transfers_by_id
SELECT t.id, t.idx, t.fingerprint, t.payer, t.payee, t.minutes, r.id AS reversed_by
FROM ledger.transfers t LEFT JOIN ledger.transfers r ON r.reverses = t.id
WHERE t.id = ANY($1::text[])

-- name: entries_by_index
SELECT idx, data FROM ledger.entries WHERE idx = ANY($1::bigint[])

-- name: write_batch
-- Everything one group-commit batch writes, in one statement (one round trip).
WITH
new_entries AS (
    INSERT INTO ledger.entries (idx, data) SELECT * FROM unnest($1::bigint[], $2::bytea[])
),
new_accounts AS (
    INSERT INTO ledger.accounts
        (id, kind, floor, ceiling, balance, closed, peer, opened_idx, open_key, open_fingerprint)
    SELECT * FROM unnest($3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::bigint[], $8::boolean[],
                         $9::text[], $10::bigint[], $11::text[], $12::bytea[])
),
changed_accounts AS (
    UPDATE ledger.accounts a SET floor = c.floor, ceiling = c.ceiling, balance = c.balance, closed = c.closed
    FROM unnest($13::text[], $14::bigint[], $15::bigint[], $16::bigint[], $17::boolean[])
        AS c (id, floor, ceiling, balance, closed)
    WHERE a.id = c.id
),
new_transfers AS (
    INSERT INTO ledger.transfers (id, idx, fingerprint, payer, payee, minutes, reverses)
    SELECT * FROM unnest($18::text[], $19::bigint[], $20::bytea[], $21::text[], $22::text[], $23::integer[],
                         $24::text[])
),
new_postings AS (
    INSERT INTO ledger.postings (account, idx, delta, balance)
    SELECT * FROM unnest($25::text[], $26::bigint[], $27::integer[], $28::bigint[])
),
tiles AS (
    INSERT INTO ledger.tiles (level, idx, hashes)
    SELECT * FROM unnest($29::smallint[], $30::bigint[], $31::bytea[])
    ON CONFLICT (level, idx) DO UPDATE SET hashes = excluded.hashes
),
checkpoint AS (
    INSERT INTO ledger.checkpoints (size, note) VALUES ($32, $34)
)
UPDATE ledger.head SET size = $32, root = $33

-- name: latest_checkpoint
SELECT size, note FROM ledger.checkpoints ORDER BY size DESC LIMIT 1

-- name: checkpoint_at
SELECT size, note FROM ledger.checkpoints WHERE size = $1

-- name: entries_range
SELECT idx, data FROM ledger.entries WHERE idx >= $1 AND idx < $2 ORDER BY idx

-- name: tiles_by_coord
SELECT level, idx, hashes FROM ledger.tiles
WHERE (level, idx) IN (SELECT * FROM unnest($1::smallint[], $2::bigint[]))

-- name: tile
SELECT hashes FROM ledger.tiles WHERE level = $1 AND idx = $2

-- name: account
SELECT id, kind, floor, ceiling, balance, closed, peer, opened_idx FROM ledger.accounts WHERE id = $1

-- name: balance_at_size
SELECT balance FROM ledger.postings WHERE account = $1 AND idx < $2 ORDER BY idx DESC LIMIT 1

-- name: statement
SELECT p.idx, p.delta, p.balance, t.id, t.payer, t.payee, t.reverses, e.data
FROM ledger.postings p
JOIN ledger.transfers t ON t.idx = p.idx
JOIN ledger.entries e ON e.idx = p.idx
WHERE p.account = $1 AND p.idx < $2
ORDER BY p.idx DESC
LIMIT $3

-- name: all_balances
SELECT id, kind, balance FROM ledger.accounts ORDER BY id
