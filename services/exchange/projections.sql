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
-- The exchange, its parties and its lines in one statement: one round trip for every command on an exchange.
WITH exchange AS (
    INSERT INTO exchange.exchanges (id, proposer, listing, category, status, note, memo, created_at, updated_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
    ON CONFLICT (id) DO UPDATE SET
        status = EXCLUDED.status, note = EXCLUDED.note, memo = EXCLUDED.memo, updated_at = EXCLUDED.updated_at
), parties AS (
    INSERT INTO exchange.exchange_parties (exchange, member, side, answer)
    SELECT $1, m, s, a FROM unnest($10::text[], $11::text[], $12::text[]) AS t(m, s, a)
    ON CONFLICT (exchange, member) DO UPDATE SET answer = EXCLUDED.answer
)
INSERT INTO exchange.exchange_lines
    (exchange, n, provider, receiver, state, minutes, transfer, ledger_index, settled_at, memo)
SELECT $1, n, p, r, s, m, t, i, a, o
FROM unnest($13::int[], $14::text[], $15::text[], $16::text[], $17::int[], $18::text[], $19::bigint[],
            $20::timestamptz[], $21::text[]) AS u(n, p, r, s, m, t, i, a, o)
ON CONFLICT (exchange, n) DO UPDATE SET
    state = EXCLUDED.state, minutes = EXCLUDED.minutes, transfer = EXCLUDED.transfer,
    ledger_index = EXCLUDED.ledger_index, settled_at = EXCLUDED.settled_at, memo = EXCLUDED.memo

-- name: upsert_payment
INSERT INTO exchange.payments
    (id, kind, payer, payee, minutes, made_by, status, memo, transfer, ledger_index, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
ON CONFLICT (id) DO UPDATE SET
    status = EXCLUDED.status, memo = EXCLUDED.memo, transfer = EXCLUDED.transfer,
    ledger_index = EXCLUDED.ledger_index

-- name: upsert_pot
INSERT INTO exchange.pot (account) VALUES ($1) ON CONFLICT (one) DO UPDATE SET account = EXCLUDED.account
