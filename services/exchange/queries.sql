-- The exchange's read side: named queries over its read models.

-- name: member_by_email
SELECT id, status, role, password_hash FROM exchange.members WHERE lower(email) = lower($1)

-- name: member
SELECT id, status, role, account, name, email, skills, area, bio, joined_at, approved_at
FROM exchange.members WHERE id = $1

-- name: member_states
-- Members as commands check them: status, role and ledger account.
SELECT id, status, role, account FROM exchange.members WHERE id = ANY($1::text[])

-- name: exchange_for_command
-- What a command on an exchange reads, in one round trip: its stream as eventstore.load_with_keys reads it (events,
-- and the data key of the subject named like it), and the caller's session when the caller came with a token $2
-- (see auth.Credentials). No parameter changes the plan's shape, so PostgreSQL plans it once (a generic plan).
SELECT e.version, e.data, k.key,
       se.member AS session_member, se.kind AS session_kind, se.csrf AS session_csrf, se.role AS session_role,
       se.status AS session_status
FROM (SELECT $1::text AS stream) s
LEFT JOIN exchange.events e ON e.stream = s.stream
LEFT JOIN exchange.subject_keys k ON k.subject = s.stream
LEFT JOIN exchange.session($2::text) se ON true
ORDER BY e.version

-- name: exchange_for_settling
-- exchange_for_command, and the exchange's parties as commands check members (status, role, ledger account) on
-- the first row: what confirming (and resolving) needs to settle lines.
SELECT e.version, e.data, k.key,
       se.member AS session_member, se.kind AS session_kind, se.csrf AS session_csrf, se.role AS session_role,
       se.status AS session_status,
       CASE WHEN e.version = 1 THEN p.ids END AS ids, CASE WHEN e.version = 1 THEN p.statuses END AS statuses,
       CASE WHEN e.version = 1 THEN p.roles END AS roles, CASE WHEN e.version = 1 THEN p.accounts END AS accounts
FROM (
    SELECT array_agg(m.id) AS ids, array_agg(m.status) AS statuses, array_agg(m.role) AS roles,
           array_agg(m.account) AS accounts
    FROM exchange.exchange_parties x JOIN exchange.members m ON m.id = x.member
    WHERE x.exchange = $1::text
) p
LEFT JOIN exchange.events e ON e.stream = $1::text
LEFT JOIN exchange.subject_keys k ON k.subject = $1::text
LEFT JOIN exchange.session($2::text) se ON true
ORDER BY e.version

-- name: proposal
-- What a proposal needs, in one round trip: the listing (one of this network's own; none for a direct exchange),
-- every member who would take part (its member among them), and the caller's session when the caller came with a
-- token $3 (see auth.Credentials). One row per member found, or one without.
SELECT l.member AS owner, l.kind, l.category, l.status AS listing_status, l.expires,
       m.id, m.status, m.role, m.account,
       se.member AS session_member, se.kind AS session_kind, se.csrf AS session_csrf, se.role AS session_role,
       se.status AS session_status
FROM (SELECT $1::text AS id) wanted
LEFT JOIN exchange.listings l ON l.id = wanted.id AND l.network IS NULL
LEFT JOIN exchange.session($3::text) se ON true
LEFT JOIN exchange.members m ON m.id = ANY(array_append(array_append($2::text[], l.member), se.member))

-- name: member_names
SELECT id, name, account FROM exchange.members WHERE id = ANY($1::text[]) OR account = ANY($2::text[])

-- name: listing_titles
SELECT id, title FROM exchange.listings WHERE id = ANY($1::text[])

-- name: invitation_by_token
SELECT id, role, expires, used_by FROM exchange.invitations WHERE token_sha256 = $1

-- name: members_by_status
SELECT id, status, role, account, name, email, skills, area, bio, joined_at, approved_at
FROM exchange.members WHERE status = $1 ORDER BY joined_at, id LIMIT $2

-- name: listing
SELECT l.id, l.member, l.network, l.kind, l.category, l.title, l.description, l.area, l.availability,
       l.shared, l.status, l.expires, l.created_at, l.updated_at, coalesce(m.name, l.remote_name) AS member_name
FROM exchange.listings l LEFT JOIN exchange.members m ON m.id = l.member
WHERE l.id = $1

-- name: member_listings
SELECT l.id, l.member, l.network, l.kind, l.category, l.title, l.description, l.area, l.availability,
       l.shared, l.status, l.expires, l.created_at, l.updated_at, coalesce(m.name, l.remote_name) AS member_name
FROM exchange.listings l LEFT JOIN exchange.members m ON m.id = l.member
WHERE l.member = $1 ORDER BY l.created_at DESC, l.id DESC

-- name: search_newest
SELECT l.id, l.member, l.network, l.kind, l.category, l.title, l.description, l.area, l.availability,
       l.shared, l.status, l.expires, l.created_at, l.updated_at, coalesce(m.name, l.remote_name) AS member_name,
       0::real AS rank
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
-- Ranked among the newest 1,000 matches: ranking reads every listing it ranks, so a common word (found in a third of
-- 100,000 listings) would otherwise cost a scan of them all for every page. Newest order reaches every match.
-- Members' names are joined to the page only, not to every listing ranked.
SELECT l.id, l.member, l.network, l.kind, l.category, l.title, l.description, l.area, l.availability,
       l.shared, l.status, l.expires, l.created_at, l.updated_at, coalesce(m.name, l.remote_name) AS member_name,
       l.rank
FROM (
    SELECT * FROM (
        SELECT w.*, ts_rank(w.search, websearch_to_tsquery('english', $1)) AS rank
        FROM (
            SELECT * FROM exchange.listings
            WHERE status = 'active' AND expires > now()
              AND search @@ websearch_to_tsquery('english', $1)
              AND ($2::text IS NULL OR category = $2)
              AND ($3::text IS NULL OR kind = $3)
              AND ($4::text IS NULL OR lower(area) = lower($4))
            ORDER BY created_at DESC, id DESC
            LIMIT 1000
        ) w
    ) ranked
    WHERE $5::real IS NULL OR (rank, id) < ($5, $6)
    ORDER BY rank DESC, id DESC
    LIMIT $7
) l
LEFT JOIN exchange.members m ON m.id = l.member
ORDER BY l.rank DESC, l.id DESC

-- name: exchanges
-- Exchanges with their parties and lines (as parallel arrays, lines in order), in one round trip.
SELECT e.id, e.proposer, e.listing, e.category, e.status, e.note, e.memo, e.created_at, e.updated_at,
       p.members, p.sides, p.answers,
       l.ns, l.providers, l.receivers, l.states, l.minutes, l.transfers, l.ledger_indexes, l.settled_ats
FROM exchange.exchanges e
CROSS JOIN LATERAL (
    SELECT array_agg(member ORDER BY side, member COLLATE "C") AS members,
           array_agg(side ORDER BY side, member COLLATE "C") AS sides,
           array_agg(answer ORDER BY side, member COLLATE "C") AS answers
    FROM exchange.exchange_parties WHERE exchange = e.id
) p
CROSS JOIN LATERAL (
    SELECT array_agg(n ORDER BY n) AS ns, array_agg(provider ORDER BY n) AS providers,
           array_agg(receiver ORDER BY n) AS receivers, array_agg(state ORDER BY n) AS states,
           array_agg(minutes ORDER BY n) AS minutes, array_agg(transfer ORDER BY n) AS transfers,
           array_agg(ledger_index ORDER BY n) AS ledger_indexes, array_agg(settled_at ORDER BY n) AS settled_ats
    FROM exchange.exchange_lines WHERE exchange = e.id
) l
WHERE e.id = ANY($1::text[])

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
-- A statement's memos: a payment's by its id ($1), an exchange line's by its ledger transfer ($2), since the lines
-- of one exchange may carry different memos (several providers, each with their own).
SELECT id AS ref, memo FROM exchange.payments WHERE id = ANY($1::text[]) AND memo IS NOT NULL
UNION ALL
SELECT transfer, memo FROM exchange.exchange_lines WHERE transfer = ANY($2::text[]) AND memo IS NOT NULL

-- name: pot_account
SELECT account FROM exchange.pot

-- name: impact
-- Per ISO week and category, from the lines the ledger settled. An exchange counts as completed once all its lines
-- are settled (or ruled at zero), in the week its last line settled.
SELECT date_trunc('week', l.settled_at) AS week, e.category,
       sum(l.minutes)::bigint AS minutes,
       count(DISTINCT e.id) FILTER (WHERE e.status = 'completed' AND l.settled_at = last.settled_at) AS exchanges,
       (SELECT count(DISTINCT m) FROM unnest(array_agg(l.provider) || array_agg(l.receiver)) AS m) AS active_members,
       count(DISTINCT l.receiver) AS members_helped
FROM exchange.exchange_lines l
JOIN exchange.exchanges e ON e.id = l.exchange
CROSS JOIN LATERAL (
    SELECT max(x.settled_at) AS settled_at FROM exchange.exchange_lines x WHERE x.exchange = l.exchange
) last
WHERE l.state = 'settled' AND l.settled_at >= $1 AND l.settled_at < $2
GROUP BY 1, 2
ORDER BY 1 DESC, 2

-- name: session
SELECT member, kind, csrf, expires_at, role, status FROM exchange.session($1)

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

-- name: live_listings_of
-- A member's listings not withdrawn yet (erasure withdraws them).
SELECT id FROM exchange.listings WHERE member = $1 AND status <> 'withdrawn'

-- name: listings_of
SELECT id FROM exchange.listings WHERE member = $1

-- name: memo_subjects_of
-- The exchanges and payments a member took part in: the subjects whose data keys hold their memos.
SELECT exchange AS id FROM exchange.exchange_parties WHERE member = $1
UNION SELECT id FROM exchange.payments WHERE payer = $1 OR payee = $1

-- name: delete_sessions_of
DELETE FROM exchange.sessions WHERE member = $1

-- name: delete_failures
DELETE FROM exchange.login_failures WHERE key = $1

-- name: outbox_pending
SELECT count(*) FROM exchange.outbox WHERE done_at IS NULL

-- name: db_now
SELECT now()

-- name: plan_every_search
SET LOCAL plan_cache_mode = force_custom_plan

-- name: rewrite_after_erasure
-- After an erasure: what it overwrote and the keys it shredded stay in dead row versions and index entries until
-- the tables are rewritten (a plain VACUUM marks the space free but leaves the bytes). Events need no rewrite:
-- their personal fields are sealed under the shredded keys.
VACUUM (FULL) exchange.subject_keys, exchange.members, exchange.listings, exchange.exchanges,
    exchange.exchange_lines, exchange.payments, exchange.invitations, exchange.login_failures
