-- Migration 1: the shared store. Run by `eventhook::postgres::migrate` with
-- `search_path` set to the configured schema, so names are unqualified.

-- One row per configured bot: its settings (what `WebhookConfig` holds), its
-- health, its schedule and the lease of the call under way.
CREATE TABLE webhooks (
    -- Byte order ("C"): cheap to compare, and the same lock order on any database.
    bot_token          text COLLATE "C" PRIMARY KEY,
    account_name       text NOT NULL,
    url                text NOT NULL,
    -- The bot's API secret, sent as bearer; the platform's database holds it already.
    secret             text NOT NULL,
    signing_secrets    text[] NOT NULL DEFAULT '{}',
    -- `EventFlags` bits: the selected event kinds.
    events             integer NOT NULL CHECK (events >= 0),
    plan               text NOT NULL CHECK (plan IN ('free', 'paid')),
    push_interval_ms   bigint NOT NULL,
    max_batch_events   integer NOT NULL,
    max_batch_bytes    bigint NOT NULL,
    one_event_per_call boolean NOT NULL,
    request_timeout_ms bigint NOT NULL,
    queue_capacity     integer NOT NULL,
    accept_any_2xx     boolean NOT NULL,
    included_variables text[] NOT NULL DEFAULT '{}',
    disabled           boolean NOT NULL DEFAULT false,
    failures_in_row    integer NOT NULL DEFAULT 0 CHECK (failures_in_row >= 0),
    last_failure       text,
    -- Where the webhook's grid of push times starts: when it was configured,
    -- plus its phase (`rules::phase`), so pushes are spread over the interval.
    anchor_at          timestamptz NOT NULL,
    -- When the next push is due; NULL while nothing is scheduled.
    due_at             timestamptz,
    -- When the last call started, for the interval between pushes.
    last_push_at       timestamptz,
    -- The failed call to send again as it was: its events (the oldest ones)
    -- and its `webhook-id`; NULL after a success.
    retry_events       integer CHECK (retry_events > 0),
    retry_call_id      text,
    -- The lease of the call under way: which claim holds it and until when.
    claim_id           bigint,
    lease_until        timestamptz,
    -- Bumped by a trigger whenever the settings or `disabled` change.
    generation         bigint NOT NULL DEFAULT 1,
    CHECK ((claim_id IS NULL) = (lease_until IS NULL)),
    CHECK ((retry_events IS NULL) = (retry_call_id IS NULL))
);

-- The claim's scan: enabled webhooks in due order.
CREATE INDEX webhooks_due ON webhooks (due_at) WHERE NOT disabled AND due_at IS NOT NULL;

-- Claim ids, unique across processes: a lease holds one, its call's ledger row repeats it.
CREATE SEQUENCE claim_ids AS bigint;

-- Accepted events waiting for delivery, in acceptance order per bot: a row
-- holds a run of one bot's events committed together (a row per event would
-- cost the server a row's insert, index entries, read and delete per event).
-- A settlement deletes the rows its call delivered and, when the call ended
-- inside a row, counts that row's delivered head in `delivered`: the
-- undelivered tail stays. The primary key is also the claim's ordered read,
-- so an insert updates one index.
CREATE TABLE events (
    id          bigint GENERATED ALWAYS AS IDENTITY,
    bot_token   text COLLATE "C" NOT NULL REFERENCES webhooks (bot_token) ON DELETE CASCADE,
    -- The events, oldest first, each as the wire encodes it (one JSON object),
    -- joined by commas: a push's body without its brackets. One value, not an
    -- array of one per event, for the server to store, compress and send.
    body        bytea NOT NULL,
    -- Where each event ends in `body` (the next starts after its comma).
    ends        integer[] NOT NULL,
    -- How many of the oldest events a call delivered (they leave with the row).
    delivered   integer NOT NULL DEFAULT 0,
    -- How many events wait, and their bytes: counted without reading them.
    events      integer NOT NULL CHECK (events > 0 AND delivered >= 0 AND delivered + events = cardinality(ends)),
    bytes       bigint NOT NULL CHECK (bytes >= 0),
    accepted_at timestamptz NOT NULL,
    PRIMARY KEY (bot_token, id)
) WITH (toast_tuple_target = 8160);

-- A row's events are stored compressed by lz4 where the server has it
-- (PostgreSQL 14 and later, built with lz4): for the server, several times
-- cheaper than the default (pglz) on runs of JSON. Elsewhere the default stays.
-- A row stays in the table (not in its TOAST table) up to a whole page
-- (`toast_tuple_target` above), compressed once it is larger.
DO $$
BEGIN
    EXECUTE 'ALTER TABLE events ALTER COLUMN body SET COMPRESSION lz4';
EXCEPTION WHEN feature_not_supported OR syntax_error THEN
    NULL;
END
$$;

-- The billing ledger: one row per call made, written with the call's outcome.
-- No foreign key: the ledger outlives a removed webhook.
CREATE TABLE calls (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- At most one row per claim, so a call is billed once.
    claim_id    bigint NOT NULL UNIQUE,
    bot_token   text COLLATE "C" NOT NULL,
    events      integer NOT NULL CHECK (events >= 0),
    bytes       bigint NOT NULL CHECK (bytes >= 0),
    outcome     text NOT NULL CHECK (outcome IN ('delivered', 'failed_status', 'failed_transport')),
    -- The HTTP status; NULL when there was none (`failed_transport`).
    status      smallint CHECK ((status IS NULL) = (outcome = 'failed_transport')),
    failure     text,
    started_at  timestamptz NOT NULL,
    ended_at    timestamptz NOT NULL CHECK (ended_at >= started_at)
);

-- Billing per bot and period.
CREATE INDEX calls_bot_token_started_at ON calls (bot_token, started_at);
-- Pruning rows older than the retention.
CREATE INDEX calls_ended_at ON calls (ended_at);

-- Alerts to deliver to the `AlertSink`, written in the transaction that disabled the
-- webhook; any process delivers them (under a lease) and marks them delivered.
-- The id is stable, so a sink can ignore a repeat. No foreign key: an alert outlives its webhook.
CREATE TABLE alerts (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    bot_token    text COLLATE "C" NOT NULL,
    -- The `WebhookDisabledAlert`'s fields.
    payload      jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    lease_until  timestamptz,
    delivered_at timestamptz
);

CREATE INDEX alerts_undelivered ON alerts (id) WHERE delivered_at IS NULL;

-- The returning-user gate (type 9 at most once per 24 h per user of a bot),
-- shared by all processes: when each user last fired it.
CREATE TABLE returning_users (
    bot_token     text COLLATE "C" NOT NULL,
    -- SHA-256 of the user id: the gate needs no user ids, so it keeps none.
    user_key      bytea NOT NULL,
    last_fired_at timestamptz NOT NULL,
    PRIMARY KEY (bot_token, user_key)
);

-- Forgetting users whose window has passed.
CREATE INDEX returning_users_last_fired_at ON returning_users (last_fired_at);

-- A change of the settings or of `disabled` bumps `generation`; leases, due
-- times and health counts do not, so a process can tell a reconfiguration
-- from its own bookkeeping. A writer cannot set `generation` by hand.
CREATE FUNCTION webhooks_bump_generation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF to_jsonb(NEW) - ARRAY['failures_in_row', 'last_failure', 'anchor_at', 'due_at', 'last_push_at', 'retry_events', 'retry_call_id', 'claim_id', 'lease_until', 'generation']
       IS DISTINCT FROM
       to_jsonb(OLD) - ARRAY['failures_in_row', 'last_failure', 'anchor_at', 'due_at', 'last_push_at', 'retry_events', 'retry_call_id', 'claim_id', 'lease_until', 'generation']
    THEN
        NEW.generation := OLD.generation + 1;
    ELSE
        NEW.generation := OLD.generation;
    END IF;
    RETURN NEW;
END
$$;

-- Fired only by updates that set a setting, `disabled` or `generation`:
-- claims, leases, due times and health counts are most of the updates, and
-- skip the function call.
CREATE TRIGGER webhooks_bump_generation
    BEFORE UPDATE OF bot_token, account_name, url, secret, signing_secrets, events, plan, push_interval_ms, max_batch_events,
        max_batch_bytes, one_event_per_call, request_timeout_ms, queue_capacity, accept_any_2xx, included_variables,
        disabled, generation
    ON webhooks
    FOR EACH ROW EXECUTE FUNCTION webhooks_bump_generation();

-- Tells listening processes that a webhook was configured, changed, disabled
-- or removed: on channel `<schema>.webhooks`, a JSON payload with `op`,
-- `bot_token` and `generation`. Delivered at commit; polling covers a missed one.
CREATE FUNCTION webhooks_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    -- Plain types: a row type would be looked up on the caller's search_path.
    token text;
    generation bigint;
BEGIN
    IF TG_OP = 'DELETE' THEN
        token := OLD.bot_token;
        generation := OLD.generation;
    ELSE
        token := NEW.bot_token;
        generation := NEW.generation;
    END IF;
    PERFORM pg_notify(
        TG_TABLE_SCHEMA || '.webhooks',
        json_build_object('op', lower(TG_OP), 'bot_token', token, 'generation', generation)::text
    );
    RETURN NULL;
END
$$;

CREATE TRIGGER webhooks_notify AFTER INSERT OR DELETE ON webhooks
    FOR EACH ROW EXECUTE FUNCTION webhooks_notify();

-- An update is announced when it bumped the generation: the bump's rule
-- decides, and the condition is checked without calling the function.
CREATE TRIGGER webhooks_notify_update AFTER UPDATE ON webhooks
    FOR EACH ROW WHEN (OLD.generation IS DISTINCT FROM NEW.generation) EXECUTE FUNCTION webhooks_notify();
