"""The S3 endpoint: real HTTP on 127.0.0.1, explicit client configuration, env for other tools."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import boto3
import pytest

from payband_testing.checks import port_is_closed
from payband_testing.s3 import MotoS3Server, S3Bucket, S3Endpoint, delete_bucket

# Loopback ports nothing listens on: where a leaked setting would send the client.
_DEAD_END = "http://127.0.0.1:9"


def test_object_written_and_read_back(s3_bucket: S3Bucket) -> None:
    client = s3_bucket.endpoint.client()
    client.put_object(Bucket=s3_bucket.name, Key="models/m.json", Body=b'{"band": 3}')
    body = client.get_object(Bucket=s3_bucket.name, Key="models/m.json")["Body"].read()
    assert body == b'{"band": 3}'
    assert client.head_object(Bucket=s3_bucket.name, Key="models/m.json")["ContentLength"] == 11
    assert s3_bucket.uri == f"s3://{s3_bucket.name}"


def test_bucket_and_object_listing(s3_endpoint: S3Endpoint) -> None:
    client = s3_endpoint.client()
    names = sorted(f"listing-{tag}-{uuid.uuid4().hex[:8]}" for tag in ("a", "b"))
    for name in names:
        client.create_bucket(Bucket=name)
    try:
        client.put_object(Bucket=names[0], Key="x/1", Body=b"1")
        client.put_object(Bucket=names[0], Key="x/2", Body=b"2")
        client.put_object(Bucket=names[0], Key="y/3", Body=b"3")
        listed = {bucket["Name"] for bucket in client.list_buckets()["Buckets"]}
        assert set(names) <= listed
        objects = client.list_objects_v2(Bucket=names[0], Prefix="x/")["Contents"]
        assert [item["Key"] for item in objects] == ["x/1", "x/2"]
    finally:
        for name in names:
            delete_bucket(client, name)
    listed = {bucket["Name"] for bucket in client.list_buckets()["Buckets"]}
    assert not set(names) & listed


def test_bucket_names_are_valid_and_unique(s3_bucket: S3Bucket, s3_endpoint: S3Endpoint) -> None:
    assert 3 <= len(s3_bucket.name) <= 63
    assert s3_bucket.name == s3_bucket.name.lower()
    assert s3_bucket.endpoint == s3_endpoint


def test_client_ignores_the_users_aws_configuration(
    s3_endpoint: S3Endpoint, monkeypatch: pytest.MonkeyPatch, scratch_dir: Path
) -> None:
    config = scratch_dir / "config"
    config.write_text(
        f"[default]\nregion = eu-nowhere-1\nendpoint_url = {_DEAD_END}\n"
        "s3 =\n    addressing_style = virtual\n"
    )
    for variable in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.setenv(variable, str(config))
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "leaked")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-nowhere-1")
    for variable in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.setenv(variable, _DEAD_END)
    for variable in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.setenv(variable, _DEAD_END)

    client = s3_endpoint.client()
    assert client.meta.endpoint_url == s3_endpoint.url
    assert client.meta.region_name == s3_endpoint.region
    name = f"isolated-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=name)
    try:
        assert name in {bucket["Name"] for bucket in client.list_buckets()["Buckets"]}
    finally:
        delete_bucket(client, name)


def test_env_is_enough_for_a_plain_boto3_client(
    s3_endpoint: S3Endpoint, s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = s3_endpoint.env()
    assert env == {
        "AWS_ACCESS_KEY_ID": s3_endpoint.access_key_id,
        "AWS_SECRET_ACCESS_KEY": s3_endpoint.secret_access_key,
        "AWS_DEFAULT_REGION": s3_endpoint.region,
        "AWS_ENDPOINT_URL_S3": s3_endpoint.url,
        "MLFLOW_S3_ENDPOINT_URL": s3_endpoint.url,
    }
    for variable in [name for name in os.environ if name.startswith("AWS_")]:
        monkeypatch.delenv(variable)
    for variable in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.setenv(variable, os.devnull)
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)

    client = boto3.session.Session().client("s3")
    client.put_object(Bucket=s3_bucket.name, Key="k", Body=b"via env")
    assert client.get_object(Bucket=s3_bucket.name, Key="k")["Body"].read() == b"via env"


def test_server_stop_closes_the_port() -> None:
    server = MotoS3Server()
    with server:
        endpoint = server.endpoint
        assert endpoint.url.startswith("http://127.0.0.1:")
        port = int(endpoint.url.rsplit(":", 1)[1])
        assert endpoint.client().list_buckets()["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert port_is_closed(port)
    server.stop()  # idempotent
