-- What a person should hear of: an agent that starts waiting for them, fails, or finishes a
-- turn. Written by the very statement that changes the session, whoever runs it, so nothing is
-- missed or said twice; the fleet's notifier (one process at a time) hands each notice to the
-- webhooks that want it, as tasks with retries, then deletes it.
CREATE TABLE notices (
    id          bigserial PRIMARY KEY,
    session_id  uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    event       text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION agentdeck_session_notice() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.waiting > OLD.waiting THEN
        INSERT INTO notices (session_id, event) VALUES (NEW.id, 'waiting');
    ELSIF NEW.status = 'failed' AND OLD.status <> 'failed' THEN
        INSERT INTO notices (session_id, event) VALUES (NEW.id, 'failed');
    ELSIF OLD.status = 'busy' AND NEW.status IN ('idle', 'ready') AND NEW.waiting = 0 THEN
        INSERT INTO notices (session_id, event) VALUES (NEW.id, 'done');
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER sessions_notice AFTER UPDATE ON sessions
    FOR EACH ROW WHEN (NEW.waiting > OLD.waiting OR NEW.status IS DISTINCT FROM OLD.status)
    EXECUTE FUNCTION agentdeck_session_notice();
