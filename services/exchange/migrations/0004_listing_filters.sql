-- Browsing by category or by area, newest first: without these, a filtered page walks the newest-first index and
-- throws away every listing of another category or area until it has found a page (thousands of rows at 100,000
-- listings, all of them when nothing matches).
CREATE INDEX listings_category_newest ON exchange.listings (category, created_at DESC, id DESC) WHERE status = 'active';
CREATE INDEX listings_area_newest ON exchange.listings (lower(area), created_at DESC, id DESC) WHERE status = 'active';
