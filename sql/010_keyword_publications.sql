-- Keyword publications (docs/funnel.md, Keywords): one row each time a version became the
-- current one, and how: `seed` (the configured source, published because nothing was yet),
-- `sync` (read from the sheet or a CSV file), `put` (PUT /keywords), `rollback` (an older
-- version made current again). `source` is where the content came from that time (a sync's
-- `sheet:<key>[/<worksheet>]`, `csv:<path>` or `default:keywords.csv`; `api` for a PUT; `api` or
-- `cli` for a rollback). The scheduled sync reads the last row to tell whether a file is still
-- in charge of the list (store/keywords.py, `sync`). Rows are only ever added; versions are
-- never deleted, so every version stays listed and can be made current again.
CREATE TABLE IF NOT EXISTS keyword_publications (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    version      text        NOT NULL REFERENCES keyword_versions (version) ON DELETE CASCADE,
    previous     text,
    action       text        NOT NULL CHECK (action IN ('seed', 'sync', 'put', 'rollback')),
    source       text        NOT NULL,
    forced       boolean     NOT NULL DEFAULT false,
    published_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS keyword_publications_version ON keyword_publications (version, id);

-- The versions published before this table existed, once each, in the order they were last
-- made current (what keyword_versions still tells: its source and activated_at).
INSERT INTO keyword_publications (version, action, source, published_at)
SELECT version, CASE WHEN source = 'api' THEN 'put' ELSE 'sync' END, source, activated_at
  FROM keyword_versions
 WHERE NOT EXISTS (SELECT 1 FROM keyword_publications)
 ORDER BY activated_at, version;
