-- Upserts that keep the exchange's read models equal to a fold of each stream (see projections.py).

-- name: upsert_member
INSERT INTO exchange.members
    (id, status, role, account, name, email, skills, area, bio, password_hash, joined_at, approved_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (id) DO UPDATE SET
    status = EXCLUDED.status, role = EXCLUDED.role, account = EXCLUDED.account, name = EXCLUDED.name,
    email = EXCLUDED.email, skills = EXCLUDED.skills, area = EXCLUDED.area, bio = EXCLUDED.bio,
    password_hash = EXCLUDED.password_hash, joined_at = EXCLUDED.joined_at, approved_at = EXCLUDED.approved_at

-- name: upsert_invitation
INSERT INTO exchange.invitations (id, token_sha256, role, expires, created_by, created_at, used_by)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (id) DO UPDATE SET used_by = EXCLUDED.used_by

-- name: upsert_listing
INSERT INTO exchange.listings
    (id, member, kind, category, title, description, area, availability, shared, status, expires,
     created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
ON CONFLICT (id) DO UPDATE SET
    category = EXCLUDED.category, title = EXCLUDED.title, description = EXCLUDED.description,
    area = EXCLUDED.area, availability = EXCLUDED.availability, shared = EXCLUDED.shared,
    status = EXCLUDED.status, expires = EXCLUDED.expires, updated_at = EXCLUDED.updated_at

-- name: upsert_exchange
-- Exchanges' rows, parties and lines: row-wise (a JSON array of rows each), so that a command sends its exchange's
-- three upserts with its events in one statement, and recording the ledger's answers sends many exchanges' at once.
-- Rows that would not change are left alone.
INSERT INTO exchange.exchanges AS x (id, proposer, listing, category, status, note, memo, created_at, updated_at)
SELECT id, proposer, listing, category, status, note, memo, created_at, updated_at
FROM json_populate_recordset(NULL::exchange.exchanges, $1::json)
ON CONFLICT (id) DO UPDATE SET
    status = EXCLUDED.status, note = EXCLUDED.note, memo = EXCLUDED.memo, updated_at = EXCLUDED.updated_at
WHERE (x.status, x.note, x.memo, x.updated_at) IS DISTINCT FROM
      (EXCLUDED.status, EXCLUDED.note, EXCLUDED.memo, EXCLUDED.updated_at)

-- name: upsert_exchange_parties
INSERT INTO exchange.exchange_parties AS p (exchange, member, side, answer)
SELECT exchange, member, side, answer FROM json_populate_recordset(NULL::exchange.exchange_parties, $1::json)
ON CONFLICT (exchange, member) DO UPDATE SET answer = EXCLUDED.answer
WHERE p.answer IS DISTINCT FROM EXCLUDED.answer

-- name: upsert_exchange_lines
INSERT INTO exchange.exchange_lines AS l
    (exchange, n, provider, receiver, state, minutes, transfer, ledger_index, settled_at, memo)
SELECT exchange, n, provider, receiver, state, minutes, transfer, ledger_index, settled_at, memo
FROM json_populate_recordset(NULL::exchange.exchange_lines, $1::json)
ON CONFLICT (exchange, n) DO UPDATE SET
    state = EXCLUDED.state, minutes = EXCLUDED.minutes, transfer = EXCLUDED.transfer,
    ledger_index = EXCLUDED.ledger_index, settled_at = EXCLUDED.settled_at, memo = EXCLUDED.memo
WHERE (l.state, l.minutes, l.transfer, l.ledger_index, l.settled_at, l.memo) IS DISTINCT FROM
      (EXCLUDED.state, EXCLUDED.minutes, EXCLUDED.transfer, EXCLUDED.ledger_index, EXCLUDED.settled_at, EXCLUDED.memo)

-- name: upsert_payment
-- Row-wise, like exchanges: recording the ledger's answers sends many payments' rows at once.
INSERT INTO exchange.payments
    (id, kind, payer, payee, minutes, made_by, status, memo, transfer, ledger_index, created_at)
SELECT id, kind, payer, payee, minutes, made_by, status, memo, transfer, ledger_index, created_at
FROM json_populate_recordset(NULL::exchange.payments, $1::json)
ON CONFLICT (id) DO UPDATE SET
    status = EXCLUDED.status, memo = EXCLUDED.memo, transfer = EXCLUDED.transfer,
    ledger_index = EXCLUDED.ledger_index

-- name: upsert_pot
INSERT INTO exchange.pot (account) VALUES ($1) ON CONFLICT (one) DO UPDATE SET account = EXCLUDED.account

-- name: truncate_read_models
-- Every read model (projections.READ_MODELS) but listings, emptied for a rebuild; then clear_own_listings.
TRUNCATE exchange.members, exchange.invitations, exchange.exchanges, exchange.exchange_parties,
    exchange.exchange_lines, exchange.payments, exchange.pot

-- name: clear_own_listings
-- Our own listings, emptied for a rebuild: neighbours' offers among them are not projected from our events, so
-- they stay (neighbour_offers.py).
DELETE FROM exchange.listings WHERE network IS NULL
