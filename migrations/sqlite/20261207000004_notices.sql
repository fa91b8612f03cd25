-- What a person should hear of: an agent that starts waiting for them, fails, or finishes a
-- turn. Written by the very statement that changes the session, so nothing is missed or said
-- twice; the notifier hands each notice to the webhooks that want it, as tasks with retries,
-- then deletes it.
CREATE TABLE notices (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id  TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    event       TEXT NOT NULL,
    at          INTEGER NOT NULL
);

CREATE TRIGGER sessions_notice_waiting AFTER UPDATE OF waiting ON sessions
    WHEN NEW.waiting > OLD.waiting
BEGIN
    INSERT INTO notices (session_id, event, at)
        VALUES (NEW.id, 'waiting', CAST(unixepoch('subsec') * 1000 AS INTEGER));
END;
CREATE TRIGGER sessions_notice_status AFTER UPDATE OF status ON sessions
    WHEN NEW.waiting <= OLD.waiting AND NEW.status IS NOT OLD.status
        AND (NEW.status = 'failed'
             OR (OLD.status = 'busy' AND NEW.status IN ('idle', 'ready') AND NEW.waiting = 0))
BEGIN
    INSERT INTO notices (session_id, event, at)
        VALUES (NEW.id, CASE WHEN NEW.status = 'failed' THEN 'failed' ELSE 'done' END,
                CAST(unixepoch('subsec') * 1000 AS INTEGER));
END;
