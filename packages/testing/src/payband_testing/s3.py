"""A real S3 HTTP endpoint on 127.0.0.1, served in-process by moto's threaded server.

MinIO is not obtainable on the build machines; moto speaks the S3 REST API over HTTP, and
boto3, the MinIO SDK and MLflow's S3 artifact store all work against it. State lives in this
process's memory and is gone when it exits. moto and boto3 are imported lazily: this module is
loaded by the pytest plugin in every test run, most of which never touch S3.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from moto.server import ThreadedMotoServer

__all__ = ["MotoS3Server", "S3Bucket", "S3Endpoint", "delete_bucket"]


@dataclass(frozen=True)
class S3Endpoint:
    """Where the S3 endpoint is and the (dummy) credentials it accepts."""

    url: str
    region: str = "us-east-1"
    access_key_id: str = "testing"
    secret_access_key: str = "testing"  # noqa: S105 - moto accepts any key; loopback only

    def client(self) -> Any:
        """A boto3 S3 client for this endpoint that ignores ~/.aws and AWS_* variables.

        Typed ``Any``: boto3 builds client classes at run time and there are no stubs here.
        """
        import boto3
        import botocore.session
        from botocore.config import Config

        # botocore reads its settings from AWS_* variables and ~/.aws files: a session whose
        # variables have no environment names and whose files are empty sees none of them.
        variables = botocore.session.Session().session_var_map
        isolated = {name: (spec[0], None, spec[2], spec[3]) for name, spec in variables.items()}
        isolated["config_file"] = (None, None, os.devnull, None)
        isolated["credentials_file"] = (None, None, os.devnull, None)
        core = botocore.session.Session(session_vars=isolated)
        session = boto3.session.Session(
            botocore_session=core,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            region_name=self.region,
        )
        config = Config(
            region_name=self.region,
            s3={"addressing_style": "path"},
            retries={"max_attempts": 2, "mode": "standard"},
            connect_timeout=5,
            read_timeout=30,
            # Loopback: never route through a proxy from HTTP_PROXY & co.
            proxies={},
        )
        return session.client("s3", endpoint_url=self.url, config=config)

    def env(self) -> dict[str, str]:
        """Environment variables that point other tools (AWS SDKs, MLflow) at this endpoint."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ENDPOINT_URL_S3": self.url,
            "MLFLOW_S3_ENDPOINT_URL": self.url,
        }


@dataclass(frozen=True)
class S3Bucket:
    """An existing bucket on an ``S3Endpoint``."""

    name: str
    endpoint: S3Endpoint

    @property
    def uri(self) -> str:
        """``s3://<name>``, e.g. for an MLflow artifact location."""
        return f"s3://{self.name}"


def delete_bucket(client: Any, name: str) -> None:
    """Delete every object version, delete marker and unfinished upload, then the bucket."""
    for page in client.get_paginator("list_object_versions").paginate(Bucket=name):
        doomed = [
            {"Key": item["Key"], "VersionId": item["VersionId"]}
            for item in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
        ]
        if doomed:
            client.delete_objects(Bucket=name, Delete={"Objects": doomed, "Quiet": True})
    for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=name):
        for upload in page.get("Uploads", []):
            client.abort_multipart_upload(
                Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"]
            )
    client.delete_bucket(Bucket=name)


class MotoS3Server:
    """moto's ``ThreadedMotoServer`` on 127.0.0.1 and a free port; a context manager too."""

    def __init__(self, *, region: str = "us-east-1") -> None:
        self.region = region
        self._server: ThreadedMotoServer | None = None
        self._endpoint: S3Endpoint | None = None

    @property
    def endpoint(self) -> S3Endpoint:
        if self._endpoint is None:
            raise RuntimeError("the S3 server has not been started")
        return self._endpoint

    def start(self) -> S3Endpoint:
        if self._server is not None:
            raise RuntimeError("the S3 server is already running")
        from moto.server import ThreadedMotoServer

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        self._server = server
        host, port = server.get_host_and_port()
        self._endpoint = S3Endpoint(url=f"http://{host}:{port}", region=self.region)
        return self._endpoint

    def stop(self) -> None:
        """Stop serving and close the listening socket. Idempotent."""
        server, self._server, self._endpoint = self._server, None, None
        if server is None:
            return
        server.stop()
        # moto only shuts the serve loop down; close the socket so it is not left to the
        # garbage collector (a ResourceWarning, which the test suite turns into an error).
        if server._server is not None:
            server._server.server_close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
