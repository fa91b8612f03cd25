-- Tokens and cost: each assistant message's usage as the harness reported it (cost null when
-- nobody knows the model's price), and its session's sums, kept by the store as usage is
-- written. A session may have a budget of its own (an operator's raise).
ALTER TABLE messages ADD COLUMN usage TEXT;
ALTER TABLE sessions ADD COLUMN tokens_input INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN tokens_output INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN tokens_reasoning INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN tokens_cache_read INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN tokens_cache_write INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN cost_usd REAL NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN unpriced INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN budget_usd REAL;

CREATE TRIGGER messages_usage AFTER UPDATE OF usage ON messages
    WHEN NEW.usage IS NOT OLD.usage
BEGIN
    UPDATE sessions SET
        tokens_input = tokens_input + coalesce(json_extract(NEW.usage, '$.input'), 0)
            - coalesce(json_extract(OLD.usage, '$.input'), 0),
        tokens_output = tokens_output + coalesce(json_extract(NEW.usage, '$.output'), 0)
            - coalesce(json_extract(OLD.usage, '$.output'), 0),
        tokens_reasoning = tokens_reasoning + coalesce(json_extract(NEW.usage, '$.reasoning'), 0)
            - coalesce(json_extract(OLD.usage, '$.reasoning'), 0),
        tokens_cache_read = tokens_cache_read + coalesce(json_extract(NEW.usage, '$.cache_read'), 0)
            - coalesce(json_extract(OLD.usage, '$.cache_read'), 0),
        tokens_cache_write = tokens_cache_write + coalesce(json_extract(NEW.usage, '$.cache_write'), 0)
            - coalesce(json_extract(OLD.usage, '$.cache_write'), 0),
        cost_usd = cost_usd + coalesce(json_extract(NEW.usage, '$.cost'), 0)
            - coalesce(json_extract(OLD.usage, '$.cost'), 0),
        unpriced = unpriced
            + (CASE WHEN NEW.usage IS NOT NULL AND json_extract(NEW.usage, '$.cost') IS NULL THEN 1 ELSE 0 END)
            - (CASE WHEN OLD.usage IS NOT NULL AND json_extract(OLD.usage, '$.cost') IS NULL THEN 1 ELSE 0 END)
    WHERE id = NEW.session_id;
END;
