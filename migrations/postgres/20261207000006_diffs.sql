-- What an agent changed in files answering a person's message (opencode's per-turn diffs,
-- [{file, patch, additions, deletions, status}]), kept with that message so that a session's
-- changes can be read after its sandbox is gone.
ALTER TABLE messages ADD COLUMN diffs jsonb;
