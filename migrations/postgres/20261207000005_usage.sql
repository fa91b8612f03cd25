-- Tokens and cost: each assistant message's usage as the harness reported it (cost null when
-- nobody knows the model's price), and its session's sums, kept by the store as usage is
-- written, so that lists show cost without adding up transcripts. A session may have a budget
-- of its own (an operator's raise); otherwise its agent's applies.
ALTER TABLE messages ADD COLUMN usage jsonb;
ALTER TABLE sessions
    ADD COLUMN tokens_input       bigint NOT NULL DEFAULT 0,
    ADD COLUMN tokens_output      bigint NOT NULL DEFAULT 0,
    ADD COLUMN tokens_reasoning   bigint NOT NULL DEFAULT 0,
    ADD COLUMN tokens_cache_read  bigint NOT NULL DEFAULT 0,
    ADD COLUMN tokens_cache_write bigint NOT NULL DEFAULT 0,
    ADD COLUMN cost_usd           double precision NOT NULL DEFAULT 0,
    ADD COLUMN unpriced           integer NOT NULL DEFAULT 0,
    ADD COLUMN budget_usd         double precision;

CREATE FUNCTION agentdeck_usage_part(u jsonb, k text) RETURNS bigint LANGUAGE sql IMMUTABLE AS
    $$ SELECT coalesce((u ->> k)::bigint, 0) $$;
CREATE FUNCTION agentdeck_usage_unpriced(u jsonb) RETURNS integer LANGUAGE sql IMMUTABLE AS
    $$ SELECT CASE WHEN u IS NOT NULL AND (u -> 'cost' IS NULL OR u -> 'cost' = 'null'::jsonb)
                   THEN 1 ELSE 0 END $$;

CREATE FUNCTION agentdeck_message_usage() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE sessions SET
        tokens_input = tokens_input
            + agentdeck_usage_part(NEW.usage, 'input') - agentdeck_usage_part(OLD.usage, 'input'),
        tokens_output = tokens_output
            + agentdeck_usage_part(NEW.usage, 'output') - agentdeck_usage_part(OLD.usage, 'output'),
        tokens_reasoning = tokens_reasoning
            + agentdeck_usage_part(NEW.usage, 'reasoning') - agentdeck_usage_part(OLD.usage, 'reasoning'),
        tokens_cache_read = tokens_cache_read
            + agentdeck_usage_part(NEW.usage, 'cache_read') - agentdeck_usage_part(OLD.usage, 'cache_read'),
        tokens_cache_write = tokens_cache_write
            + agentdeck_usage_part(NEW.usage, 'cache_write') - agentdeck_usage_part(OLD.usage, 'cache_write'),
        cost_usd = cost_usd + coalesce((NEW.usage ->> 'cost')::float8, 0)
            - coalesce((OLD.usage ->> 'cost')::float8, 0),
        unpriced = unpriced + agentdeck_usage_unpriced(NEW.usage) - agentdeck_usage_unpriced(OLD.usage)
    WHERE id = NEW.session_id;
    RETURN NULL;
END $$;
CREATE TRIGGER messages_usage AFTER UPDATE OF usage ON messages
    FOR EACH ROW WHEN (NEW.usage IS DISTINCT FROM OLD.usage)
    EXECUTE FUNCTION agentdeck_message_usage();
