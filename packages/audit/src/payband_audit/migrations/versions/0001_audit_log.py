"""The audit log: record tables, append-only triggers, the hash chain head, purge, roles.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

import os

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

RECORD_TABLES = (
    "prediction_requests",
    "prediction_responses",
    "prediction_errors",
    "outcomes",
    "reviews",
)
DESTROY_VARIABLE = "PAYBAND_AUDIT_DOWNGRADE_DROPS_RECORDS"

TABLES = """
CREATE SCHEMA audit;

-- The end of the hash chain: the writer locks this row, so records are chained one at a time
-- in commit order, also across processes.
CREATE TABLE audit.chain_head (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    seq bigint NOT NULL,
    record_hash char(64) NOT NULL
);
INSERT INTO audit.chain_head VALUES (true, 0, repeat('0', 64));

CREATE TABLE audit.prediction_requests (
    seq bigint NOT NULL UNIQUE,
    prediction_id uuid PRIMARY KEY,
    received_at timestamptz NOT NULL,
    caller text NOT NULL,
    request_id text,
    model_name text,
    model_version text,
    candidate json,
    raw_request text,
    prev_hash char(64) NOT NULL,
    record_hash char(64) NOT NULL
);
CREATE INDEX prediction_requests_received_at ON audit.prediction_requests (received_at);
CREATE INDEX prediction_requests_model
    ON audit.prediction_requests (model_name, model_version, received_at);

CREATE TABLE audit.prediction_responses (
    seq bigint NOT NULL UNIQUE,
    prediction_id uuid PRIMARY KEY
        REFERENCES audit.prediction_requests DEFERRABLE INITIALLY DEFERRED,
    recorded_at timestamptz NOT NULL,
    band_index integer NOT NULL,
    band json NOT NULL,
    probabilities json NOT NULL,
    explanation json NOT NULL,
    prev_hash char(64) NOT NULL,
    record_hash char(64) NOT NULL
);

CREATE TABLE audit.prediction_errors (
    seq bigint NOT NULL UNIQUE,
    prediction_id uuid PRIMARY KEY
        REFERENCES audit.prediction_requests DEFERRABLE INITIALLY DEFERRED,
    recorded_at timestamptz NOT NULL,
    status_code integer NOT NULL CHECK (status_code BETWEEN 400 AND 599),
    error json NOT NULL,
    upstream_body text,
    prev_hash char(64) NOT NULL,
    record_hash char(64) NOT NULL
);

CREATE TABLE audit.outcomes (
    seq bigint NOT NULL UNIQUE,
    prediction_id uuid PRIMARY KEY
        REFERENCES audit.prediction_requests DEFERRABLE INITIALLY DEFERRED,
    recorded_at timestamptz NOT NULL,
    recorded_by text NOT NULL,
    band_index integer NOT NULL CHECK (band_index >= 0),
    observed_at timestamptz,
    source text,
    prev_hash char(64) NOT NULL,
    record_hash char(64) NOT NULL
);

CREATE TABLE audit.reviews (
    seq bigint NOT NULL UNIQUE,
    review_id uuid PRIMARY KEY,
    prediction_id uuid NOT NULL
        REFERENCES audit.prediction_requests DEFERRABLE INITIALLY DEFERRED,
    recorded_at timestamptz NOT NULL,
    reviewer text NOT NULL,
    decision text NOT NULL CHECK (decision IN ('confirm', 'override')),
    band_index integer CHECK (band_index >= 0),
    reason text,
    prev_hash char(64) NOT NULL,
    record_hash char(64) NOT NULL
);
CREATE INDEX reviews_prediction_id ON audit.reviews (prediction_id);

-- Payloads are `json`, not `jsonb`: the stored text is exactly the text that was hashed.

-- Purges are chained among themselves. Each lists the runs of seqs it deleted and the hash
-- that ended each run, so the verifier can step over exactly those gaps and no others.
CREATE TABLE audit.purges (
    purge_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    purged_at timestamptz NOT NULL,
    details jsonb NOT NULL,
    prev_hash char(64) NOT NULL,
    record_hash char(64) NOT NULL
);
CREATE TABLE audit.purged_ranges (
    first_seq bigint PRIMARY KEY,
    last_seq bigint NOT NULL CHECK (last_seq >= first_seq),
    last_hash char(64) NOT NULL,
    purge_id bigint NOT NULL REFERENCES audit.purges
);

"""

APPEND_ONLY = """
CREATE FUNCTION audit.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- The one exception: audit.purge_expired() deleting expired records.
    IF TG_OP = 'DELETE' AND TG_TABLE_NAME IN ('prediction_requests', 'prediction_responses',
            'prediction_errors', 'outcomes', 'reviews')
       AND current_setting('payband_audit.purging', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit records are append-only: % on %.% is refused',
        TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

-- The head may only move forward, onto a record that exists: a writer cannot rewind it.
CREATE FUNCTION audit.head_moves_forward() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NEW.seq <= OLD.seq OR NOT EXISTS (
        SELECT FROM audit.prediction_requests WHERE seq = NEW.seq AND record_hash = NEW.record_hash
        UNION ALL
        SELECT FROM audit.prediction_responses WHERE seq = NEW.seq AND record_hash = NEW.record_hash
        UNION ALL
        SELECT FROM audit.prediction_errors WHERE seq = NEW.seq AND record_hash = NEW.record_hash
        UNION ALL
        SELECT FROM audit.outcomes WHERE seq = NEW.seq AND record_hash = NEW.record_hash
        UNION ALL
        SELECT FROM audit.reviews WHERE seq = NEW.seq AND record_hash = NEW.record_hash
    ) THEN
        RAISE EXCEPTION 'the chain head only moves forward, onto a record that exists'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER head_moves_forward BEFORE UPDATE ON audit.chain_head
    FOR EACH ROW EXECUTE FUNCTION audit.head_moves_forward();
CREATE TRIGGER append_only BEFORE DELETE ON audit.chain_head
    FOR EACH ROW EXECUTE FUNCTION audit.refuse_change();
CREATE TRIGGER append_only_truncate BEFORE TRUNCATE ON audit.chain_head
    FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change();
"""

APPENDS_AT_THE_HEAD = """
-- Records are appended only after the head, and only by a transaction that moves the head
-- over them: nobody can write into the past or park a record where the next one must go.
CREATE FUNCTION audit.inserted_after_head() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT FROM inserted WHERE seq <= (SELECT h.seq FROM audit.chain_head AS h)) THEN
        RAISE EXCEPTION 'audit records are appended after the chain head only'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NULL;
END;
$$;
CREATE FUNCTION audit.head_covers_record() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NEW.seq > (SELECT h.seq FROM audit.chain_head AS h) THEN
        RAISE EXCEPTION 'record seq % was written without moving the chain head over it',
            NEW.seq USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NULL;
END;
$$;
"""

PURGE = """
CREATE FUNCTION audit.purge_expired(retention_days integer)
RETURNS TABLE (purge_id bigint, cutoff timestamptz, deleted jsonb, ranges bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now timestamptz := clock_timestamp();
    v_cutoff timestamptz;
    v_prev text;
    v_details jsonb;
    v_deleted jsonb := '{}'::jsonb;
    v_count bigint;
    v_ranges bigint;
    v_digest text;
    v_purge_id bigint;
    v_table text;
BEGIN
    IF retention_days IS NULL OR retention_days < 180 THEN
        RAISE EXCEPTION 'retention of % days is shorter than the minimum of 180 days',
            retention_days USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_cutoff := v_now - make_interval(days => retention_days);
    DROP TABLE IF EXISTS payband_candidates, payband_expired, payband_ranges;
    -- Candidates come from the time index before the lock, so writers wait only while the
    -- candidates are checked and deleted, not while the whole log is read.
    CREATE TEMP TABLE payband_candidates ON COMMIT DROP AS
        SELECT r.prediction_id FROM audit.prediction_requests AS r
        WHERE r.received_at < v_cutoff;
    PERFORM FROM audit.chain_head FOR UPDATE;
    -- A prediction goes as a whole, once all its records (request, answer, outcome,
    -- reviews) are older than the cutoff.
    CREATE TEMP TABLE payband_expired ON COMMIT DROP AS
        SELECT c.prediction_id FROM payband_candidates AS c
        WHERE NOT EXISTS (SELECT FROM audit.prediction_responses AS x
                          WHERE x.prediction_id = c.prediction_id AND x.recorded_at >= v_cutoff)
          AND NOT EXISTS (SELECT FROM audit.prediction_errors AS x
                          WHERE x.prediction_id = c.prediction_id AND x.recorded_at >= v_cutoff)
          AND NOT EXISTS (SELECT FROM audit.outcomes AS x
                          WHERE x.prediction_id = c.prediction_id AND x.recorded_at >= v_cutoff)
          AND NOT EXISTS (SELECT FROM audit.reviews AS x
                          WHERE x.prediction_id = c.prediction_id AND x.recorded_at >= v_cutoff);
    -- The runs of consecutive seqs that leave the chain, and the hash that ends each run.
    CREATE TEMP TABLE payband_ranges ON COMMIT DROP AS
        SELECT min(d.seq) AS first_seq, max(d.seq) AS last_seq,
               (array_agg(d.record_hash ORDER BY d.seq DESC))[1] AS last_hash
        FROM (
            SELECT e.seq, e.record_hash, e.seq - row_number() OVER (ORDER BY e.seq) AS run
            FROM (
                SELECT t.seq, t.record_hash FROM audit.prediction_requests AS t
                    JOIN payband_expired USING (prediction_id)
                UNION ALL SELECT t.seq, t.record_hash FROM audit.prediction_responses AS t
                    JOIN payband_expired USING (prediction_id)
                UNION ALL SELECT t.seq, t.record_hash FROM audit.prediction_errors AS t
                    JOIN payband_expired USING (prediction_id)
                UNION ALL SELECT t.seq, t.record_hash FROM audit.outcomes AS t
                    JOIN payband_expired USING (prediction_id)
                UNION ALL SELECT t.seq, t.record_hash FROM audit.reviews AS t
                    JOIN payband_expired USING (prediction_id)
            ) AS e
        ) AS d
        GROUP BY d.run;
    SELECT count(*), encode(sha256(convert_to(coalesce(string_agg(
               r.first_seq || ':' || r.last_seq || ':' || r.last_hash, ',' ORDER BY r.first_seq
           ), ''), 'UTF8')), 'hex')
    INTO v_ranges, v_digest FROM payband_ranges AS r;

    PERFORM set_config('payband_audit.purging', 'on', true);
    FOREACH v_table IN ARRAY ARRAY['reviews', 'outcomes', 'prediction_errors',
                                   'prediction_responses', 'prediction_requests'] LOOP
        EXECUTE format(
            'DELETE FROM audit.%I WHERE prediction_id IN '
            '(SELECT x.prediction_id FROM payband_expired AS x)', v_table);
        GET DIAGNOSTICS v_count = ROW_COUNT;
        v_deleted := v_deleted || jsonb_build_object(v_table, v_count);
    END LOOP;
    PERFORM set_config('payband_audit.purging', 'off', true);

    SELECT p.record_hash INTO v_prev FROM audit.purges AS p ORDER BY p.purge_id DESC LIMIT 1;
    IF NOT FOUND THEN
        v_prev := repeat('0', 64);
    END IF;
    v_details := jsonb_build_object(
        'purged_at', v_now, 'purged_by', session_user, 'retention_days', retention_days,
        'cutoff', v_cutoff, 'deleted', v_deleted, 'ranges', v_ranges,
        'ranges_sha256', v_digest);
    INSERT INTO audit.purges AS p (purged_at, details, prev_hash, record_hash)
    VALUES (v_now, v_details, v_prev,
            encode(sha256(convert_to(v_prev || v_details::text, 'UTF8')), 'hex'))
    RETURNING p.purge_id INTO v_purge_id;
    INSERT INTO audit.purged_ranges (first_seq, last_seq, last_hash, purge_id)
    SELECT r.first_seq, r.last_seq, r.last_hash, v_purge_id FROM payband_ranges AS r;
    RETURN QUERY SELECT v_purge_id, v_cutoff, v_deleted, v_ranges;
END;
$$;
"""

CREATE_ROLES = """
DO $$
DECLARE
    name text;
BEGIN
    FOREACH name IN ARRAY ARRAY['payband_audit_writer', 'payband_audit_reader',
                                'payband_audit_purger'] LOOP
        -- Roles belong to the whole cluster: another payband database may have made them.
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = name) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', name);
        END IF;
    END LOOP;
END;
$$;
"""

GRANTS = """
GRANT USAGE ON SCHEMA audit TO payband_audit_writer, payband_audit_reader, payband_audit_purger;
GRANT INSERT ON audit.prediction_requests, audit.prediction_responses, audit.prediction_errors,
    audit.outcomes, audit.reviews TO payband_audit_writer;
GRANT SELECT (prediction_id) ON audit.prediction_requests, audit.outcomes TO payband_audit_writer;
GRANT SELECT, UPDATE ON audit.chain_head TO payband_audit_writer;
GRANT SELECT ON ALL TABLES IN SCHEMA audit TO payband_audit_reader;
REVOKE ALL ON FUNCTION audit.purge_expired(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit.purge_expired(integer) TO payband_audit_purger;
"""


def upgrade() -> None:
    op.execute(TABLES)
    op.execute(APPEND_ONLY)
    for table in (*RECORD_TABLES, "purges", "purged_ranges"):
        op.execute(
            f"CREATE TRIGGER append_only BEFORE UPDATE OR DELETE ON audit.{table} "
            "FOR EACH ROW EXECUTE FUNCTION audit.refuse_change()"
        )
        op.execute(
            f"CREATE TRIGGER append_only_truncate BEFORE TRUNCATE ON audit.{table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change()"
        )
    op.execute(APPENDS_AT_THE_HEAD)
    for table in RECORD_TABLES:
        op.execute(
            f"CREATE TRIGGER appended_after_head AFTER INSERT ON audit.{table} "
            "REFERENCING NEW TABLE AS inserted "
            "FOR EACH STATEMENT EXECUTE FUNCTION audit.inserted_after_head()"
        )
        op.execute(
            f"CREATE CONSTRAINT TRIGGER head_covers_record AFTER INSERT ON audit.{table} "
            "DEFERRABLE INITIALLY DEFERRED "
            "FOR EACH ROW EXECUTE FUNCTION audit.head_covers_record()"
        )
    op.execute(PURGE)
    op.execute(CREATE_ROLES)
    op.execute(GRANTS)


def downgrade() -> None:
    # Dropping the schema destroys the log: refuse while it holds records, unless told to.
    records = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT (SELECT count(*) FROM audit.prediction_requests) + "
                "(SELECT count(*) FROM audit.purges)"
            )
        )
        .scalar_one()
    )
    if records and os.environ.get(DESTROY_VARIABLE) != "yes":
        raise RuntimeError(
            f"refusing to drop an audit log that holds records ({records}); export it first, "
            f"then set {DESTROY_VARIABLE}=yes"
        )
    # Privileges go with the objects; the roles stay, as other databases may use them.
    op.execute("DROP SCHEMA audit CASCADE")
