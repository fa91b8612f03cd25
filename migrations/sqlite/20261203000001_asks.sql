-- What an agent asks of a person and waits for: a permission for a tool call, or a question.
-- Kept for the transcript and the audit trail (who answered what, when); the session counts
-- those still waiting, so that lists show "waiting for you" without a join.
CREATE TABLE asks (
    session_id   TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    id           TEXT NOT NULL,
    kind         TEXT NOT NULL,
    status       TEXT NOT NULL,
    title        TEXT NOT NULL,
    detail       TEXT NOT NULL DEFAULT '{}',
    asked_at     INTEGER NOT NULL,
    answer       TEXT,
    message      TEXT,
    answered_by  TEXT,
    answered_at  INTEGER,
    PRIMARY KEY (session_id, id)
);
CREATE INDEX asks_pending ON asks (session_id) WHERE status = 'pending';

ALTER TABLE sessions ADD COLUMN waiting INTEGER NOT NULL DEFAULT 0;
