-- Neighbours' shared offers live among our listings (network = the neighbour's origin, member NULL), so that
-- search finds them with the same full text and filters. What a neighbour sends beyond a listing's text:
-- its member's display name, and the neighbour's position when it wrote the value (a later value replaces an
-- earlier one, never the other way round).
ALTER TABLE exchange.listings ADD COLUMN remote_name text;
ALTER TABLE exchange.listings ADD COLUMN remote_seq bigint;
CREATE INDEX listings_network ON exchange.listings (network) WHERE network IS NOT NULL;
