"""A real S3 API on 127.0.0.1 for tests: moto's threaded server (not a mock object).

The ``s3_server`` fixture (session scope) starts the server once and yields an :class:`S3Server`
with the endpoint URL, a ready ``bucket``, and ``env`` (credentials + endpoint) that s3fs/botocore
read; the fixture sets that environment for the session. ``s3_url(path)`` builds ``s3://bucket/path``.
Needs the dev dependency ``moto[server]``; skips when it is missing.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest


@dataclass
class S3Server:
    endpoint_url: str
    bucket: str
    env: dict[str, str] = field(default_factory=dict)

    def s3_url(self, path: str = "") -> str:
        return f"s3://{self.bucket}/{path.lstrip('/')}"

    def storage_options(self) -> dict[str, object]:
        return {"client_kwargs": {"endpoint_url": self.endpoint_url}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """S3-compatible server on 127.0.0.1 with one bucket; sets AWS_* env so s3fs finds it."""
    moto_server = pytest.importorskip("moto.server", reason="moto[server] is not installed")
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ENDPOINT_URL_S3": endpoint,
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    bucket = f"foundry-test-{uuid.uuid4().hex[:8]}"
    try:
        import boto3

        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
        yield S3Server(endpoint_url=endpoint, bucket=bucket, env=env)
    finally:
        server.stop()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
