-- Shared offers: what the federation publishes of our listings, and what it stores of our neighbours'.

-- name: schema_ready
SELECT to_regclass('exchange.listings') IS NOT NULL
       AND EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_schema = 'exchange' AND table_name = 'listings' AND column_name = 'remote_seq')

-- name: head
-- The position of the newest event (of any kind): how far a round of changes has looked.
SELECT coalesce(max(seq), 0) FROM exchange.events

-- name: changes
-- Our listings touched by events after $1 (their own, or their member's: a new name, an erasure), each with the
-- last such event's position, oldest first; whether each is to be shown now, and what is shown of it.
WITH touched AS (
    SELECT id, max(seq) AS seq FROM (
        SELECT e.stream AS id, e.seq FROM exchange.events e WHERE e.seq > $1 AND e.stream LIKE 'lst\_%'
        UNION ALL
        SELECT l.id, e.seq FROM exchange.events e JOIN exchange.listings l ON l.member = e.stream
        WHERE e.seq > $1 AND e.stream LIKE 'mem\_%'
    ) t
    GROUP BY id
    ORDER BY seq
    LIMIT $2
)
SELECT t.seq, l.id AS listing,
       (l.shared AND l.status = 'active' AND l.expires > now() AND m.status = 'approved') AS shown,
       l.kind, l.category, l.title, l.description, l.area, coalesce(m.name, '') AS member_name, l.expires
FROM touched t
JOIN exchange.listings l ON l.id = t.id AND l.network IS NULL
LEFT JOIN exchange.members m ON m.id = l.member
ORDER BY t.seq

-- name: store_offer
-- A neighbour's offer: made, or replaced by a later value of the same listing (never by an earlier one).
INSERT INTO exchange.listings AS l
    (id, member, network, kind, category, title, description, area, availability, shared, status, expires,
     created_at, updated_at, remote_name, remote_seq)
VALUES ($1, NULL, $2, $3, $4, $5, $6, $7, '', true, 'active', $8, now(), now(), $9, $10)
ON CONFLICT (id) DO UPDATE SET
    kind = EXCLUDED.kind, category = EXCLUDED.category, title = EXCLUDED.title,
    description = EXCLUDED.description, area = EXCLUDED.area, expires = EXCLUDED.expires,
    remote_name = EXCLUDED.remote_name, remote_seq = EXCLUDED.remote_seq, updated_at = now(),
    -- A neighbour hidden for its fork evidence stays hidden while it sends.
    status = CASE WHEN l.status = 'hidden' THEN 'hidden' ELSE 'active' END
WHERE l.network = EXCLUDED.network AND l.remote_seq < EXCLUDED.remote_seq

-- name: remove_offer
DELETE FROM exchange.listings WHERE id = $1 AND network = $2

-- name: hide_network
UPDATE exchange.listings SET status = 'hidden' WHERE network = $1 AND status = 'active'

-- name: show_network
UPDATE exchange.listings SET status = 'active' WHERE network = $1 AND status = 'hidden'

-- name: forget_network
DELETE FROM exchange.listings WHERE network = $1
