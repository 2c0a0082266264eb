"""The campaign registry in Postgres (`campaigns`, `campaign_refs`; docs/funnel.md, Campaigns):
learned from each drained batch, named and regrouped by imports.

Keys. A campaign's key is what `funnel.campaign` holds and what reports group by:

    template:<name>    a WhatsApp template, learned from a template message (an echo, a
                       Qontak broadcast naming its template)
    broadcast:<id>     a CRM broadcast (Qontak), by its id, else by its name
    ad:<source id>     a Click-to-WhatsApp ad, named by its referral's headline
    <label>            a campaign label of the generic format (its campaign_id), as sent
    <name>             a campaign an import named: the name is the key

Refs are the ids that lead to a campaign. An identity (a template, a broadcast, an ad, a
generic label) is registered with the campaign it creates; the outbound messages sent as a
template or a broadcast are registered as `message` refs pointing to the identity's campaign
(remembering the identity in `via_*`), since a lead's campaign_id is the id of the message it
answered.

`learn` runs in the drain's batch transaction: new campaigns and refs are inserted (never
replacing a ref, never a name an import gave), first/last seen kept (the latest to the hour, so
busy campaigns are not locked by every batch), in key order so that concurrent drains lock
rows in one order. `apply_entries` is an import's registry part: it sets the entries' refs,
moves the messages learned through an imported template or broadcast with them, recomputes
the sent counts and forgets campaigns no ref leads to any more; `store.funnel.import_campaigns`
runs it under the funnel writers' lock and re-resolves the funnel rows whose campaign changed.
The funnel's own writes stay in `store.funnel`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg

from funnel_ingest.engine.campaigns import CampaignEntry


def resolved(alias: str) -> str:
    """SQL: the resolved campaign key of the funnel row (or staged row) `alias`: the campaign
    of its campaign_id's ref, else of its ad's ref, else the raw campaign_id (an unknown id
    stays visible), else `ad:<ad_id>`."""
    return (f"coalesce((SELECT r.campaign FROM campaign_refs r WHERE r.kind = 'message' "
            f"AND r.ref = {alias}.campaign_id), (SELECT r.campaign FROM campaign_refs r "
            f"WHERE r.kind = 'ad' AND r.ref = {alias}.ad_id), nullif({alias}.campaign_id, ''), "
            f"'ad:' || nullif({alias}.ad_id, ''))")


# ---------------------------------------------------------------------------------------------
# Learning from a batch (the drain)

_BATCH = """
    SELECT m.*, CASE WHEN m.source <> 'generic' AND m.campaign_id IS NOT NULL
                     THEN coalesce(m.broadcast_id, m.campaign_name) END AS broadcast
      FROM stage_messages m
     WHERE m.ad_id IS NOT NULL OR m.template_name IS NOT NULL OR m.broadcast_id IS NOT NULL
        OR m.campaign_name IS NOT NULL OR (m.source = 'generic' AND m.campaign_id IS NOT NULL)
"""
"""The batch's messages that say something about a campaign, with the broadcast a CRM's
campaign message belongs to (Qontak: by its id, else its name; the generic format's campaign
is its label)."""

_IDENTITIES = f"""
    INSERT INTO batch_campaigns (kind, ref, campaign, name, ckind, source, first_at, last_at)
    SELECT x.kind, x.ref, min(x.campaign),
           (array_agg(x.name ORDER BY m.sent_at DESC, m.message_id)
                FILTER (WHERE x.name <> ''))[1],
           min(x.ckind), min(m.source), min(m.sent_at), max(m.sent_at)
      FROM ({_BATCH}) m, LATERAL (VALUES
           -- an ad, named by its headline unless the message names a campaign of its own
           ('ad', m.ad_id, 'ad:' || m.ad_id,
            CASE WHEN m.campaign_id IS NULL AND m.broadcast_id IS NULL THEN m.campaign_name END,
            'ad'),
           ('broadcast', m.broadcast, 'broadcast:' || m.broadcast, m.campaign_name, 'broadcast'),
           -- a template, unless the message belongs to a broadcast
           ('template', CASE WHEN m.broadcast IS NULL THEN m.template_name END,
            'template:' || m.template_name, m.template_name, 'template'),
           -- the generic format's campaign label: a campaign id that is its own campaign
           ('message', CASE WHEN m.source = 'generic' THEN m.campaign_id END, m.campaign_id,
            m.campaign_name, 'broadcast')
           ) AS x (kind, ref, campaign, name, ckind)
     WHERE x.ref <> ''
     GROUP BY x.kind, x.ref"""
"""The identities (campaign-defining refs) the batch's messages carry, one row each."""

_MESSAGES = f"""
    INSERT INTO batch_campaign_messages (ref, via_kind, via_ref, source)
    SELECT DISTINCT ON (m.message_id) m.message_id,
           CASE WHEN m.broadcast IS NOT NULL THEN 'broadcast' ELSE 'template' END,
           coalesce(m.broadcast, m.template_name), m.source
      FROM ({_BATCH}) m
     WHERE m.direction = 'outbound' AND coalesce(m.broadcast, m.template_name) <> ''
     ORDER BY m.message_id"""
"""The outbound messages sent as a template or as a broadcast (a broadcast naming its template
is the messages' campaign), each with that identity."""


def _temp(conn: psycopg.Connection, name: str, columns: str) -> None:
    conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {name} ({columns})")
    conn.execute(f"TRUNCATE {name}")


def learn(conn: psycopg.Connection) -> int:
    """Register what the batch in `stage_messages` says about campaigns (in the caller's
    transaction). The refs it adds are left in the temp table `new_campaign_refs` (kind, ref)
    for the funnel's re-resolution; returns how many."""
    _temp(conn, "batch_campaigns", "kind text, ref text, campaign text, name text, ckind text, "
                                   "source text, first_at timestamptz, last_at timestamptz")
    _temp(conn, "batch_campaign_messages", "ref text, via_kind text, via_ref text, source text")
    _temp(conn, "new_campaign_refs", "kind text, ref text")
    if not conn.execute(_IDENTITIES).rowcount:
        return 0
    conn.execute(_MESSAGES)
    # campaigns of identities seen for the first time (an identity already registered keeps
    # the campaign it leads to, which an import may have chosen)
    conn.execute(
        """INSERT INTO campaigns (campaign, name, name_source, kind, source, first_seen_at,
                                  last_seen_at)
           SELECT DISTINCT ON (b.campaign) b.campaign, b.name,
                  CASE WHEN b.name IS NOT NULL THEN b.source END, b.ckind, b.source,
                  b.first_at, b.last_at
             FROM batch_campaigns b
            WHERE NOT EXISTS (SELECT 1 FROM campaign_refs r
                               WHERE r.kind = b.kind AND r.ref = b.ref)
            ORDER BY b.campaign, b.kind
           ON CONFLICT (campaign) DO NOTHING""")
    conn.execute(
        """WITH added AS (
               INSERT INTO campaign_refs (kind, ref, campaign, origin, source)
               SELECT kind, ref, campaign, 'payload', source FROM batch_campaigns
                ORDER BY kind, ref
               ON CONFLICT (kind, ref) DO NOTHING
               RETURNING kind, ref)
           INSERT INTO new_campaign_refs SELECT kind, ref FROM added""")
    conn.execute(
        """WITH added AS (
               INSERT INTO campaign_refs (kind, ref, campaign, origin, via_kind, via_ref, source)
               SELECT 'message', b.ref, i.campaign, 'payload', b.via_kind, b.via_ref, b.source
                 FROM batch_campaign_messages b
                 JOIN campaign_refs i ON i.kind = b.via_kind AND i.ref = b.via_ref
                ORDER BY b.ref
               ON CONFLICT (kind, ref) DO NOTHING
               RETURNING kind, ref)
           INSERT INTO new_campaign_refs SELECT kind, ref FROM added""")
    _seen(conn)
    return conn.execute("SELECT count(*) FROM new_campaign_refs").fetchone()[0]


def _seen(conn: psycopg.Connection) -> None:
    """First/last seen and payload names of the batch's campaigns, written only when they move
    (the last seen by an hour or more) and never over an imported name; rows locked in key
    order."""
    conn.execute(
        """WITH seen AS (
               SELECT r.campaign, min(b.first_at) AS first_at, max(b.last_at) AS last_at,
                      (array_agg(b.name ORDER BY b.last_at DESC, b.kind, b.ref)
                           FILTER (WHERE b.name IS NOT NULL))[1] AS name,
                      (array_agg(b.source ORDER BY b.last_at DESC, b.kind, b.ref)
                           FILTER (WHERE b.name IS NOT NULL))[1] AS name_source
                 FROM batch_campaigns b
                 JOIN campaign_refs r ON r.kind = b.kind AND r.ref = b.ref
                GROUP BY r.campaign),
           due AS (
               SELECT c.campaign FROM campaigns c JOIN seen s USING (campaign)
                WHERE c.first_seen_at IS NULL OR s.first_at < c.first_seen_at
                   OR c.last_seen_at IS NULL OR s.last_at >= c.last_seen_at + interval '1 hour'
                   OR (s.name IS NOT NULL AND c.name IS DISTINCT FROM s.name
                       AND c.name_source IS DISTINCT FROM 'import')
                ORDER BY c.campaign FOR UPDATE OF c)
           UPDATE campaigns c
              SET first_seen_at = least(c.first_seen_at, s.first_at),
                  last_seen_at = greatest(c.last_seen_at, s.last_at),
                  name = CASE WHEN c.name_source = 'import' THEN c.name
                              ELSE coalesce(s.name, c.name) END,
                  name_source = CASE WHEN c.name_source = 'import' OR s.name IS NULL
                                     THEN c.name_source ELSE s.name_source END,
                  updated_at = now()
             FROM seen s
            WHERE c.campaign = s.campaign AND c.campaign IN (SELECT campaign FROM due)""")


# ---------------------------------------------------------------------------------------------
# Imports


@dataclass(frozen=True)
class ImportResult:
    """What an import changed: `entries` given, distinct `campaigns` named, refs `added` (new
    to the registry), `moved` (to another campaign: the entries' own and the messages that
    came through an imported template or broadcast), campaigns `removed` (no ref left), and
    funnel rows whose campaign changed (`leads_updated`)."""

    entries: int
    campaigns: int
    added: int
    moved: int
    removed: int
    leads_updated: int

    def as_dict(self) -> dict[str, int]:
        return {"entries": self.entries, "campaigns": self.campaigns, "refs_added": self.added,
                "refs_moved": self.moved, "campaigns_removed": self.removed,
                "leads_updated": self.leads_updated}


def apply_entries(conn: psycopg.Connection, entries: Sequence[CampaignEntry]
                  ) -> tuple[int, int, int, int]:
    """Apply `entries` (engine.campaigns) to the registry in the caller's transaction; the refs
    that changed are left in the temp table `changed_campaign_refs` (kind, ref, old, new).
    Returns (campaigns named, refs added, refs moved, campaigns removed). Idempotent: the same
    entries again add, move and remove nothing."""
    _temp(conn, "import_entries", "kind text, ref text, campaign text, sent bigint, "
                                  "PRIMARY KEY (kind, ref)")
    _temp(conn, "changed_campaign_refs", "kind text, ref text, old text, new text")
    with conn.cursor() as cur, cur.copy(
            "COPY import_entries (kind, ref, campaign, sent) FROM STDIN") as copy:
        for e in entries:
            copy.write_row((e.kind, e.ref, e.campaign, e.sent))
    conn.execute(
        """INSERT INTO campaigns (campaign, name, name_source, kind, source)
           SELECT DISTINCT ON (campaign) campaign, campaign, 'import',
                  CASE WHEN kind = 'ad' THEN 'ad' ELSE 'broadcast' END, 'import'
             FROM import_entries ORDER BY campaign, kind DESC
           ON CONFLICT (campaign) DO UPDATE
              SET name = EXCLUDED.name, name_source = 'import', updated_at = now()
            WHERE campaigns.name IS DISTINCT FROM EXCLUDED.name
               OR campaigns.name_source IS DISTINCT FROM 'import'""")
    campaigns = conn.execute("SELECT count(DISTINCT campaign) FROM import_entries"
                             ).fetchone()[0]
    # the entries' own refs (set whatever set them before), with what they pointed to
    conn.execute(
        """INSERT INTO changed_campaign_refs (kind, ref, old, new)
           SELECT e.kind, e.ref, r.campaign, e.campaign
             FROM import_entries e
             LEFT JOIN campaign_refs r ON r.kind = e.kind AND r.ref = e.ref
            WHERE r.ref IS NULL OR r.campaign <> e.campaign""")
    conn.execute(
        """INSERT INTO campaign_refs (kind, ref, campaign, origin, sent, source)
           SELECT kind, ref, campaign, 'import', sent, 'import' FROM import_entries
            ORDER BY kind, ref
           ON CONFLICT (kind, ref) DO UPDATE
              SET campaign = EXCLUDED.campaign, origin = 'import', sent = EXCLUDED.sent,
                  via_kind = NULL, via_ref = NULL, updated_at = now()
            WHERE (campaign_refs.campaign, campaign_refs.origin, campaign_refs.sent,
                   campaign_refs.via_ref)
                  IS DISTINCT FROM (EXCLUDED.campaign, 'import', EXCLUDED.sent, NULL)""")
    # the messages learned through an imported template or broadcast follow it (a message
    # an import named itself keeps its own campaign)
    conn.execute(
        """WITH moved AS (
               UPDATE campaign_refs r SET campaign = e.campaign, updated_at = now()
                 FROM import_entries e, campaign_refs old
                WHERE r.origin = 'payload' AND r.via_kind = e.kind AND r.via_ref = e.ref
                  AND r.campaign <> e.campaign
                  AND old.kind = r.kind AND old.ref = r.ref
            RETURNING r.kind, r.ref, old.campaign AS old, r.campaign AS new)
           INSERT INTO changed_campaign_refs SELECT * FROM moved""")
    added, moved = conn.execute(
        "SELECT count(*) FILTER (WHERE old IS NULL), count(*) FILTER (WHERE old IS NOT NULL)"
        " FROM changed_campaign_refs").fetchone()
    _recount_sent(conn)
    removed = conn.execute(
        """DELETE FROM campaigns c
            WHERE c.campaign IN (SELECT old FROM changed_campaign_refs)
              AND NOT EXISTS (SELECT 1 FROM campaign_refs r WHERE r.campaign = c.campaign)
              AND NOT EXISTS (SELECT 1 FROM import_entries e
                               WHERE e.campaign = c.campaign)""").rowcount
    return campaigns, added, moved, removed


def _recount_sent(conn: psycopg.Connection) -> None:
    """The sent count of every campaign an import touched: the sum of its imported refs' sent
    counts (NULL when none of them gives one)."""
    conn.execute(
        """UPDATE campaigns c
              SET sent = s.sent, updated_at = now()
             FROM (SELECT t.campaign, (SELECT sum(r.sent) FROM campaign_refs r
                                        WHERE r.campaign = t.campaign AND r.origin = 'import'
                                      )::bigint AS sent
                     FROM (SELECT campaign FROM import_entries
                           UNION SELECT new FROM changed_campaign_refs
                           UNION SELECT old FROM changed_campaign_refs WHERE old IS NOT NULL)
                          AS t (campaign)) s
            WHERE c.campaign = s.campaign AND c.sent IS DISTINCT FROM s.sent""")
