-- Read by `timebank up` once the node serves, to decide whether to print a sign-in link for the first coordinator.

-- name: coordinators
SELECT count(*) FROM exchange.members WHERE role = 'coordinator' AND status = 'approved'
