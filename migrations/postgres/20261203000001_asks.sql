-- What an agent asks of a person and waits for: a permission for a tool call, or a question.
-- Kept for the transcript and the audit trail (who answered what, when); the session counts
-- those still waiting, so that lists show "waiting for you" without a join.
CREATE TABLE asks (
    session_id   uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    id           text NOT NULL,
    kind         text NOT NULL,
    status       text NOT NULL,
    title        text NOT NULL,
    detail       jsonb NOT NULL DEFAULT '{}'::jsonb,
    asked_at     timestamptz NOT NULL DEFAULT now(),
    answer       jsonb,
    message      text,
    answered_by  text,
    answered_at  timestamptz,
    PRIMARY KEY (session_id, id)
);
CREATE INDEX asks_pending ON asks (session_id) WHERE status = 'pending';

ALTER TABLE sessions ADD COLUMN waiting integer NOT NULL DEFAULT 0;
