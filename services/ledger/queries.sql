-- name: begin_locked
-- One round trip: open the batch transaction and take the ledger's single-writer lock (the head row).
BEGIN; SELECT 1 FROM ledger.head FOR UPDATE

-- name: commit
COMMIT

-- name: rollback
ROLLBACK

-- name: head_and_transfers
-- The tree head with the transfers a batch names (one row with NULL transfer columns if none exist).
SELECT h.size, h.root, t.id, t.idx, t.fingerprint, t.payer, t.payee, t.minutes, t.reversed_by, t.accepted_idx,
       t.accepted_fingerprint
FROM ledger.head h
LEFT JOIN (
    SELECT t.id, t.idx, t.fingerprint, t.payer, t.payee, t.minutes, r.id AS reversed_by, a.idx AS accepted_idx,
           a.fingerprint AS accepted_fingerprint
    FROM unnest($1::text[]) AS k (id)
    JOIN ledger.transfers t ON t.id = k.id
    LEFT JOIN ledger.transfers r ON r.reverses = t.id AND r.reverses IS NOT NULL
    LEFT JOIN ledger.crossnet_accepted a ON a.transfer = t.id
) t ON true

-- name: head
SELECT size, root FROM ledger.head

-- name: right_edge_tiles
-- The rightmost stored tile at every level, to rebuild the appender's in-memory right edge.
SELECT DISTINCT ON (level) level, hashes FROM ledger.tiles ORDER BY level, idx DESC

-- name: accounts_by_id
-- With a clearing account's minutes in flight: the value its latest in-flight row left.
SELECT a.id, a.kind, a.floor, a.ceiling, ledger.balance_before(a.id, 9223372036854775807) AS balance, a.closed, a.peer,
       CASE WHEN a.kind = 'peer' THEN coalesce(
           (SELECT f.minutes FROM ledger.in_flight f WHERE f.account = a.id ORDER BY f.idx DESC LIMIT 1), 0
       ) ELSE 0 END AS in_flight
FROM unnest($1::text[]) AS k (id)
JOIN ledger.accounts a ON a.id = k.id

-- name: peers_by_origin
SELECT peer, id FROM ledger.accounts WHERE peer = ANY($1::text[]) AND NOT closed

-- name: decisions_by_key
-- The cross-network decisions already made on these (origin, neighbour transfer id) pairs.
SELECT c.origin, c.transfer, c.idx, c.fingerprint
FROM unnest($1::text[], $2::text[]) AS k (origin, transfer)
JOIN ledger.crossnet c ON c.origin = k.origin AND c.transfer = k.transfer

-- name: decision
SELECT c.idx, e.data FROM ledger.crossnet c JOIN ledger.entries e ON e.idx = c.idx
WHERE c.origin = $1 AND c.transfer = $2

-- name: opens_by_key
SELECT a.open_key, a.id, a.open_fingerprint, a.opened_idx
FROM unnest($1::text[]) AS k (open_key) JOIN ledger.accounts a ON a.open_key = k.open_key

-- name: transfers_by_id
SELECT t.id, t.idx, t.fingerprint, t.payer, t.payee, t.minutes, r.id AS reversed_by, a.idx AS accepted_idx,
       a.fingerprint AS accepted_fingerprint
FROM unnest($1::text[]) AS k (id)
JOIN ledger.transfers t ON t.id = k.id
LEFT JOIN ledger.transfers r ON r.reverses = t.id AND r.reverses IS NOT NULL
LEFT JOIN ledger.crossnet_accepted a ON a.transfer = t.id

-- name: entries_by_index
SELECT e.idx, e.data FROM unnest($1::bigint[]) AS k (idx) JOIN ledger.entries e ON e.idx = k.idx

-- name: write_batch
-- Everything one group-commit batch writes, in one statement (one round trip). Entries take the indexes from $1 on.
WITH
new_entries AS (
    INSERT INTO ledger.entries (idx, data)
    SELECT $1 + ordinality - 1, data FROM unnest($2::bytea[]) WITH ORDINALITY AS e (data, ordinality)
),
new_accounts AS (
    INSERT INTO ledger.accounts (id, kind, floor, ceiling, closed, peer, opened_idx, open_key, open_fingerprint)
    SELECT * FROM unnest($3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::boolean[], $8::text[],
                         $9::bigint[], $10::text[], $11::bytea[])
),
changed_accounts AS (
    UPDATE ledger.accounts a SET floor = c.floor, ceiling = c.ceiling, closed = c.closed
    FROM unnest($12::text[], $13::bigint[], $14::bigint[], $15::boolean[]) AS c (id, floor, ceiling, closed)
    WHERE a.id = c.id
),
new_transfers AS (
    INSERT INTO ledger.transfers (id, idx, fingerprint, payer, payee, minutes, reverses, payer_balance, payee_balance)
    SELECT * FROM unnest($16::text[], $17::bigint[], $18::bytea[], $19::text[], $20::text[], $21::integer[],
                         $22::text[], $23::bigint[], $24::bigint[])
),
tiles AS (
    INSERT INTO ledger.tiles (level, idx, hashes)
    SELECT * FROM unnest($25::smallint[], $26::bigint[], $27::bytea[])
    ON CONFLICT (level, idx) DO UPDATE SET hashes = excluded.hashes
),
checkpoint AS (
    INSERT INTO ledger.checkpoints (size, note) VALUES ($28, $30)
),
new_decisions AS (
    INSERT INTO ledger.crossnet (origin, transfer, idx, fingerprint, reason)
    SELECT * FROM unnest($31::text[], $32::text[], $33::bigint[], $34::bytea[], $35::text[])
),
new_acceptances AS (
    INSERT INTO ledger.crossnet_accepted (transfer, origin, idx, remote_idx, fingerprint)
    SELECT * FROM unnest($36::text[], $37::text[], $38::bigint[], $39::bigint[], $40::bytea[])
),
new_in_flight AS (
    INSERT INTO ledger.in_flight (account, idx, minutes)
    SELECT * FROM unnest($41::text[], $42::bigint[], $43::bigint[])
)
UPDATE ledger.head SET size = ledger.next_size(size, $1, $28), root = $29

-- name: write_transfers
-- write_batch for the common batch that only adds entries and transfers: a statement that does not name the
-- accounts and cross-network tables does not have to open and lock them (and their indexes) either.
WITH
new_entries AS (
    INSERT INTO ledger.entries (idx, data)
    SELECT $1 + ordinality - 1, data FROM unnest($2::bytea[]) WITH ORDINALITY AS e (data, ordinality)
),
new_transfers AS (
    INSERT INTO ledger.transfers (id, idx, fingerprint, payer, payee, minutes, reverses, payer_balance, payee_balance)
    SELECT * FROM unnest($3::text[], $4::bigint[], $5::bytea[], $6::text[], $7::text[], $8::integer[],
                         $9::text[], $10::bigint[], $11::bigint[])
),
tiles AS (
    INSERT INTO ledger.tiles (level, idx, hashes)
    SELECT * FROM unnest($12::smallint[], $13::bigint[], $14::bytea[])
    ON CONFLICT (level, idx) DO UPDATE SET hashes = excluded.hashes
),
checkpoint AS (
    INSERT INTO ledger.checkpoints (size, note) VALUES ($15, $17)
)
UPDATE ledger.head SET size = ledger.next_size(size, $1, $15), root = $16

-- name: latest_checkpoint
SELECT size, note FROM ledger.checkpoints ORDER BY size DESC LIMIT 1

-- name: checkpoints_after
SELECT size, note FROM ledger.checkpoints WHERE size > $1 ORDER BY size LIMIT $2

-- name: add_cosignatures
INSERT INTO ledger.cosignatures (size, witness, key_id, line)
SELECT $1, c.witness, c.key_id, c.line FROM unnest($2::text[], $3::bigint[], $4::text[]) AS c (witness, key_id, line)
ON CONFLICT (size, witness, key_id) DO UPDATE SET line = excluded.line, added_at = now()

-- name: cosignatures_at
SELECT line FROM ledger.cosignatures WHERE size = $1 ORDER BY witness, key_id

-- name: checkpoint_at
SELECT size, note FROM ledger.checkpoints WHERE size = $1

-- name: entries_range
SELECT idx, data FROM ledger.entries WHERE idx >= $1 AND idx < $2 ORDER BY idx

-- name: entry_bundle
-- Entries [$1, $2) framed as one C2SP entry bundle (each after its big-endian uint16 length), with their count and
-- the longest one's length: one value to send, where entries_range sends a row per entry.
SELECT count(*) AS count, coalesce(max(octet_length(data)), 0) AS longest,
    coalesce(string_agg(substring(int4send(octet_length(data)) FROM 3 FOR 2) || data, ''::bytea ORDER BY idx), '')
        AS bundle
FROM ledger.entries WHERE idx >= $1 AND idx < $2

-- name: tiles_by_coord
SELECT level, idx, hashes FROM ledger.tiles
WHERE (level, idx) IN (SELECT * FROM unnest($1::smallint[], $2::bigint[]))

-- name: tile
SELECT hashes FROM ledger.tiles WHERE level = $1 AND idx = $2

-- name: account
SELECT a.id, a.kind, a.floor, a.ceiling, ledger.balance_before(a.id, 9223372036854775807) AS balance, a.closed, a.peer, a.opened_idx
FROM ledger.accounts a
WHERE a.id = $1

-- name: balance_at_size
SELECT ledger.balance_before($1, $2)

-- name: statement
-- The account's side of its transfers below log index $2, newest first: the ones it paid and the ones it was paid.
SELECT s.idx, s.delta, s.balance, s.transfer, s.counterparty, e.data
FROM (
    (SELECT idx, -minutes AS delta, payer_balance AS balance, id AS transfer, payee AS counterparty
     FROM ledger.transfers WHERE payer = $1 AND idx < $2 ORDER BY idx DESC LIMIT $3)
    UNION ALL
    (SELECT idx, minutes, payee_balance, id, payer
     FROM ledger.transfers WHERE payee = $1 AND idx < $2 ORDER BY idx DESC LIMIT $3)
) s
JOIN ledger.entries e ON e.idx = s.idx
ORDER BY s.idx DESC
LIMIT $3

-- name: all_balances
SELECT a.id, a.kind, ledger.balance_before(a.id, 9223372036854775807) AS balance
FROM ledger.accounts a
ORDER BY a.id
