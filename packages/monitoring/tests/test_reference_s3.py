"""The champion's artifacts on S3 (MinIO in production; here moto's S3 endpoint), read through
MLflow's S3 artifact store: with boto3 the reference data loads, without it the error is one
line that says what is missing."""

from __future__ import annotations

import os
import sys

import pytest

from payband_monitoring import reference
from payband_monitoring.errors import MonitoringConfigError
from payband_monitoring.reference import load_reference, resolve_model
from payband_monitoring.settings import MonitoringSettings
from payband_testing.registry import register_tiny_model, restored_mlflow_globals

MODEL_NAME = "salary-band"


@pytest.fixture
def s3_settings(postgres_database, s3_bucket, tiny_model, tmp_path, monkeypatch):
    """Settings whose champion, version 1, keeps its model and reference data in ``s3_bucket``."""
    from mlflow.tracking import MlflowClient

    for name, value in s3_bucket.endpoint.env().items():
        monkeypatch.setenv(name, value)
    # botocore reads no file of this machine's: the credentials are the endpoint's.
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    with restored_mlflow_globals():
        uri = postgres_database.url
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        experiment = client.create_experiment("s3", artifact_location=f"{s3_bucket.uri}/mlflow")
        client.create_registered_model(MODEL_NAME)
        version = register_tiny_model(
            client, experiment, tiny_model, MODEL_NAME, reference=tiny_model.reference()
        )
        client.set_registered_model_alias(MODEL_NAME, "champion", version)
        yield MonitoringSettings(
            database_url=uri, mlflow_tracking_uri=uri, state_dir=tmp_path / "state"
        )


def test_reference_data_on_s3_is_read_with_boto3(s3_settings, tiny_model):
    name, version, run_id = resolve_model(s3_settings)

    watched = load_reference(s3_settings, name, version, run_id)

    assert (watched.name, watched.version) == (MODEL_NAME, "1")
    assert watched.schema.band_labels == tiny_model.schema.band_labels
    assert len(watched.reference) == 3_000


def test_artifacts_on_s3_without_boto3_are_one_line(s3_settings, monkeypatch):
    from mlflow.store.artifact import s3_artifact_repo

    # As if boto3 were not installed: its import fails and no cached client is left.
    monkeypatch.setitem(sys.modules, "boto3", None)
    monkeypatch.setattr(reference, "_S3_SUPPORT", False)
    s3_artifact_repo._cached_get_s3_client.cache_clear()
    name, version, run_id = resolve_model(s3_settings)

    with pytest.raises(MonitoringConfigError) as raised:
        load_reference(s3_settings, name, version, run_id)

    assert str(raised.value) == (
        "cannot download models:/salary-band/1: "
        "the artifacts are on S3, which needs boto3 installed"
    )
