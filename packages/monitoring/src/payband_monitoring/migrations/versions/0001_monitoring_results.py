"""Monitoring results: one row per run, one per number per chunk and model version.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

UPGRADE = """
CREATE SCHEMA monitoring;

CREATE TABLE monitoring.runs (
    run_id uuid PRIMARY KEY,
    started_at timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    model_name text NOT NULL,
    model_version text NOT NULL,
    reference_run_id text NOT NULL,
    chunking text NOT NULL,
    rows_analysed integer NOT NULL CHECK (rows_analysed >= 0),
    rows_pending integer NOT NULL CHECK (rows_pending >= 0),
    rows_with_outcome integer NOT NULL CHECK (rows_with_outcome >= 0),
    chunks integer NOT NULL CHECK (chunks >= 0),
    alerts integer NOT NULL CHECK (alerts >= 0)
);
CREATE INDEX runs_by_model ON monitoring.runs (model_name, model_version, finished_at);

-- A chunk's result is replaced when a later run analyses the same chunk again (a period that
-- has grown): so a run is idempotent per chunk, and history is one row per chunk.
CREATE TABLE monitoring.results (
    model_name text NOT NULL,
    model_version text NOT NULL,
    chunking text NOT NULL,
    chunk_key text NOT NULL,
    calculator text NOT NULL CHECK (calculator IN (
        'univariate_drift', 'multivariate_drift', 'estimated_performance',
        'realized_performance', 'fairness')),
    subject text NOT NULL,
    method text NOT NULL,
    chunk_index integer NOT NULL,
    chunk_start timestamptz,
    chunk_end timestamptz,
    rows integer NOT NULL CHECK (rows > 0),
    value double precision NOT NULL,
    lower_threshold double precision,
    upper_threshold double precision,
    alert boolean NOT NULL,
    run_id uuid NOT NULL REFERENCES monitoring.runs,
    PRIMARY KEY (model_name, model_version, chunking, chunk_key, calculator, subject, method)
);
CREATE INDEX results_by_time ON monitoring.results
    (model_name, model_version, calculator, subject, chunk_start);
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute("DROP SCHEMA monitoring CASCADE")
