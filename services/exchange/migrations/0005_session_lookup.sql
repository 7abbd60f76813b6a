-- A live session as a request presents it: whose it is, with their role and status. One definition for looking a
-- session up on its own (auth.Gate.resolve) and for commands that look it up in the same round trip as their first
-- read; a plain SQL function, which the planner inlines into the query that calls it.
CREATE FUNCTION exchange.session(digest text)
RETURNS TABLE (member text, kind text, csrf text, expires_at timestamptz, role text, status text)
LANGUAGE sql STABLE AS $$
    SELECT s.member, s.kind, s.csrf, s.expires_at, m.role, m.status
    FROM exchange.sessions s JOIN exchange.members m ON m.id = s.member
    WHERE s.token_sha256 = digest AND s.expires_at > now()
$$;
