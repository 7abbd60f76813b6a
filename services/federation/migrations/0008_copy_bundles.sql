-- Our copies of neighbours' logs keep their entries as C2SP entry bundles, one row per 256 entries (the last,
-- partial bundle's row grows as entries come): storing a verified batch writes a row per bundle rather than per
-- entry, which is most of what replicating a backlog costs the database.
CREATE TABLE federation.bundles (
    origin text NOT NULL,
    -- The bundle's index: it holds entries 256 * idx onwards.
    idx bigint NOT NULL CHECK (idx >= 0),
    width smallint NOT NULL CHECK (width BETWEEN 1 AND 256),
    -- Each entry as a big-endian 16-bit length and its bytes, in order.
    data bytea NOT NULL,
    PRIMARY KEY (origin, idx)
);

INSERT INTO federation.bundles (origin, idx, width, data)
SELECT origin, idx / 256, count(*), string_agg(substring(int4send(length(data)) FROM 3 FOR 2) || data, ''::bytea ORDER BY idx)
FROM federation.entries
GROUP BY origin, idx / 256;

DROP TABLE federation.entries;
