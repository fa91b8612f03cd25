-- agentdeck's schema on Postgres.

CREATE TABLE agents (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    harness     text NOT NULL,
    model       text NOT NULL,
    spec        jsonb NOT NULL,
    present     boolean NOT NULL DEFAULT true,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sessions (
    id                  uuid PRIMARY KEY,
    agent_id            text NOT NULL,
    team                text NOT NULL,
    title               text NOT NULL,
    status              text NOT NULL,
    phase               text NOT NULL,
    phase_detail        text,
    runtime             text,
    sandbox_ref         text,
    harness_session_id  text,
    failure_reason      text,
    env                 jsonb NOT NULL DEFAULT '{}'::jsonb,
    last_message_seq    bigint NOT NULL DEFAULT 0,
    last_event_seq      bigint NOT NULL DEFAULT 0,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    last_activity_at    timestamptz NOT NULL DEFAULT now(),
    idle_deadline       timestamptz,
    stopped_at          timestamptz
);
CREATE INDEX sessions_team_id ON sessions (team, id DESC);
CREATE INDEX sessions_status ON sessions (status);
CREATE INDEX sessions_agent ON sessions (agent_id);
CREATE INDEX sessions_idle_deadline ON sessions (idle_deadline) WHERE idle_deadline IS NOT NULL;

CREATE TABLE messages (
    session_id          uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    seq                 bigint NOT NULL,
    id                  uuid NOT NULL UNIQUE,
    role                text NOT NULL,
    status              text NOT NULL,
    parts               jsonb NOT NULL DEFAULT '[]'::jsonb,
    error               text,
    harness_message_id  text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session_id, seq)
);

CREATE TABLE events (
    session_id  uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    seq         bigint NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    kind        text NOT NULL,
    payload     jsonb NOT NULL,
    PRIMARY KEY (session_id, seq)
);

CREATE TABLE tasks (
    id            uuid PRIMARY KEY,
    kind          text NOT NULL,
    session_id    uuid REFERENCES sessions (id) ON DELETE CASCADE,
    payload       jsonb NOT NULL,
    status        text NOT NULL,
    attempts      integer NOT NULL DEFAULT 0,
    max_attempts  integer NOT NULL,
    run_at        timestamptz NOT NULL DEFAULT now(),
    lease_until   timestamptz,
    locked_by     text,
    completed_by  text,
    last_error    text,
    dedupe_key    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tasks_due ON tasks (run_at) WHERE status = 'queued';
CREATE INDEX tasks_leased ON tasks (lease_until) WHERE status = 'running';
CREATE INDEX tasks_session ON tasks (session_id);
CREATE UNIQUE INDEX tasks_dedupe ON tasks (dedupe_key) WHERE status = 'queued';

-- The change feed: one channel, small payloads, sent when the writing transaction commits.
CREATE FUNCTION agentdeck_notify_session() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('agentdeck_changes', json_build_object('k', 'session', 's', NEW.id)::text);
    RETURN NULL;
END $$;
CREATE TRIGGER sessions_changed AFTER INSERT OR UPDATE ON sessions
    FOR EACH ROW EXECUTE FUNCTION agentdeck_notify_session();

CREATE FUNCTION agentdeck_notify_message() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('agentdeck_changes',
        json_build_object('k', 'message', 's', NEW.session_id, 'q', NEW.seq)::text);
    RETURN NULL;
END $$;
CREATE TRIGGER messages_changed AFTER INSERT OR UPDATE ON messages
    FOR EACH ROW EXECUTE FUNCTION agentdeck_notify_message();

-- Events arrive in batches: one notice per session and statement, with the highest seq.
CREATE FUNCTION agentdeck_notify_events() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE r record;
BEGIN
    FOR r IN SELECT session_id, max(seq) AS seq FROM new_rows GROUP BY session_id LOOP
        PERFORM pg_notify('agentdeck_changes',
            json_build_object('k', 'event', 's', r.session_id, 'q', r.seq)::text);
    END LOOP;
    RETURN NULL;
END $$;
CREATE TRIGGER events_changed AFTER INSERT ON events
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION agentdeck_notify_events();

CREATE FUNCTION agentdeck_notify_task() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('agentdeck_changes', '{"k":"task"}');
    RETURN NULL;
END $$;
CREATE TRIGGER tasks_changed AFTER INSERT OR UPDATE OF status ON tasks
    FOR EACH STATEMENT EXECUTE FUNCTION agentdeck_notify_task();

CREATE FUNCTION agentdeck_notify_agents() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('agentdeck_changes', '{"k":"agents"}');
    RETURN NULL;
END $$;
CREATE TRIGGER agents_changed AFTER INSERT OR UPDATE OR DELETE ON agents
    FOR EACH STATEMENT EXECUTE FUNCTION agentdeck_notify_agents();
