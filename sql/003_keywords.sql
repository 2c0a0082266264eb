-- Keyword versions (docs/funnel.md, Keywords). A version is the first 16 hex digits of SHA-256 over
-- the canonical content, so the same list always gets the same version; entries of a version are
-- never changed. Exactly one version is current (the partial unique index allows at most one);
-- switching is one transaction in funnel_ingest/store/keywords.py.
CREATE TABLE IF NOT EXISTS keyword_versions (
    version      text        PRIMARY KEY CHECK (version ~ '^[0-9a-f]{16}$'),
    source       text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    activated_at timestamptz NOT NULL DEFAULT now(),
    row_count    integer     NOT NULL CHECK (row_count > 0),
    current      boolean     NOT NULL DEFAULT false,
    warnings     jsonb       NOT NULL DEFAULT '[]'::jsonb
);

CREATE UNIQUE INDEX IF NOT EXISTS keyword_versions_one_current
    ON keyword_versions ((true)) WHERE current;

CREATE TABLE IF NOT EXISTS keyword_entries (
    version  text    NOT NULL REFERENCES keyword_versions (version) ON DELETE CASCADE,
    stage    text    NOT NULL CHECK (stage IN ('opening', 'booking', 'transaction')),
    keyword  text    NOT NULL CHECK (keyword <> ''),
    channel  text,
    active   boolean NOT NULL DEFAULT true,
    PRIMARY KEY (version, stage, keyword)
);
