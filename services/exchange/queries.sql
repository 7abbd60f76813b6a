-- The exchange's read side: named queries over its read models.

-- name: member_by_email
SELECT id, status, role, password_hash FROM exchange.members WHERE lower(email) = lower($1)

-- name: member
SELECT id, status, role, account, name, email, skills, area, bio, joined_at, approved_at
FROM exchange.members WHERE id = $1

-- name: members_by_status
SELECT id, status, role, account, name, email, skills, area, bio, joined_at, approved_at
FROM exchange.members WHERE status = $1 ORDER BY joined_at, id LIMIT $2

-- name: listing
SELECT l.id, l.member, l.network, l.kind, l.category, l.title, l.description, l.area, l.availability,
       l.shared, l.status, l.expires, l.created_at, l.updated_at, m.name AS member_name
FROM exchange.listings l LEFT JOIN exchange.members m ON m.id = l.member
WHERE l.id = $1

-- name: member_listings
SELECT l.id, l.member, l.network, l.kind, l.category, l.title, l.description, l.area, l.availability,
       l.shared, l.status, l.expires, l.created_at, l.updated_at, m.name AS member_name
FROM exchange.listings l LEFT JOIN exchange.members m ON m.id = l.member
WHERE l.member = $1 ORDER BY l.created_at DESC, l.id DESC

-- name: search_newest
SELECT l.id, l.member, l.network, l.kind, l.category, l.title, l.description, l.area, l.availability,
       l.shared, l.status, l.expires, l.created_at, l.updated_at, m.name AS member_name, 0::real AS rank
FROM exchange.listings l LEFT JOIN exchange.members m ON m.id = l.member
WHERE l.status = 'active' AND l.expires > now()
  AND ($1 = '' OR l.search @@ websearch_to_tsquery('english', $1))
  AND ($2::text IS NULL OR l.category = $2)
  AND ($3::text IS NULL OR l.kind = $3)
  AND ($4::text IS NULL OR lower(l.area) = lower($4))
  AND ($5::timestamptz IS NULL OR (l.created_at, l.id) < ($5, $6))
ORDER BY l.created_at DESC, l.id DESC
LIMIT $7

-- name: search_ranked
SELECT * FROM (
    SELECT l.id, l.member, l.network, l.kind, l.category, l.title, l.description, l.area, l.availability,
           l.shared, l.status, l.expires, l.created_at, l.updated_at, m.name AS member_name,
           ts_rank(l.search, websearch_to_tsquery('english', $1)) AS rank
    FROM exchange.listings l LEFT JOIN exchange.members m ON m.id = l.member
    WHERE l.status = 'active' AND l.expires > now()
      AND l.search @@ websearch_to_tsquery('english', $1)
      AND ($2::text IS NULL OR l.category = $2)
      AND ($3::text IS NULL OR l.kind = $3)
      AND ($4::text IS NULL OR lower(l.area) = lower($4))
) ranked
WHERE $5::real IS NULL OR (rank, id) < ($5, $6)
ORDER BY rank DESC, id DESC
LIMIT $7

-- name: exchange
SELECT id, proposer, listing, category, status, note, memo, created_at, updated_at
FROM exchange.exchanges WHERE id = $1

-- name: exchange_parties
SELECT exchange, member, side, answer FROM exchange.exchange_parties WHERE exchange = ANY($1::text[])

-- name: exchange_lines
SELECT exchange, n, provider, receiver, state, minutes, transfer, ledger_index, settled_at
FROM exchange.exchange_lines WHERE exchange = ANY($1::text[]) ORDER BY exchange, n

-- name: member_exchanges
SELECT e.id, e.proposer, e.listing, e.category, e.status, e.note, e.memo, e.created_at, e.updated_at
FROM exchange.exchanges e JOIN exchange.exchange_parties p ON p.exchange = e.id
WHERE p.member = $1 AND ($2::boolean IS FALSE OR e.status NOT IN ('completed', 'cancelled', 'declined'))
ORDER BY e.updated_at DESC, e.id DESC
LIMIT $3

-- name: disputed_exchanges
SELECT id, proposer, listing, category, status, note, memo, created_at, updated_at
FROM exchange.exchanges WHERE status IN ('disputed', 'refused') ORDER BY updated_at, id LIMIT $1

-- name: payment
SELECT id, kind, payer, payee, minutes, made_by, status, memo, transfer, ledger_index, created_at
FROM exchange.payments WHERE id = $1

-- name: member_payments
SELECT id, kind, payer, payee, minutes, made_by, status, memo, transfer, ledger_index, created_at
FROM exchange.payments WHERE payer = $1 OR payee = $1 ORDER BY created_at DESC, id DESC LIMIT $2

-- name: memos_for_refs
SELECT id AS ref, memo FROM exchange.exchanges WHERE id = ANY($1::text[]) AND memo IS NOT NULL
UNION ALL
SELECT id, memo FROM exchange.payments WHERE id = ANY($1::text[]) AND memo IS NOT NULL

-- name: pot_account
SELECT account FROM exchange.pot

-- name: impact
-- Per ISO week and category, from the lines the ledger settled.
SELECT date_trunc('week', l.settled_at) AS week, e.category,
       sum(l.minutes)::bigint AS minutes,
       count(DISTINCT e.id) AS exchanges,
       (SELECT count(DISTINCT m) FROM unnest(array_agg(l.provider) || array_agg(l.receiver)) AS m) AS active_members,
       count(DISTINCT l.receiver) AS members_helped
FROM exchange.exchange_lines l
JOIN exchange.exchanges e ON e.id = l.exchange
WHERE l.state = 'settled' AND l.settled_at >= $1 AND l.settled_at < $2
GROUP BY 1, 2
ORDER BY 1 DESC, 2

-- name: session
SELECT s.member, s.kind, s.csrf, s.expires_at, m.role, m.status
FROM exchange.sessions s JOIN exchange.members m ON m.id = s.member
WHERE s.token_sha256 = $1 AND s.expires_at > now()

-- name: insert_session
INSERT INTO exchange.sessions (token_sha256, member, kind, csrf, label, expires_at) VALUES ($1, $2, $3, $4, $5, $6)

-- name: delete_session
DELETE FROM exchange.sessions WHERE token_sha256 = $1

-- name: recent_failures
SELECT count(*) FILTER (WHERE key = $1) AS by_email, count(*) FILTER (WHERE key = $2) AS by_address,
       min(at) AS oldest
FROM exchange.login_failures WHERE key IN ($1, $2) AND at > now() - make_interval(secs => $3)

-- name: record_failure
INSERT INTO exchange.login_failures (key) VALUES ($1), ($2)

-- name: clear_failures
DELETE FROM exchange.login_failures WHERE key = $1 OR at < now() - interval '1 day'
