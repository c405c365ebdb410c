"""The S3 test servers started by `scripts/storage-servers.sh` (see `scripts/test.sh`):
s3s-fs checks SigV4 signatures; moto does not, but covers broader S3 semantics.

Objects are written with boto3 (moto's dependency, so it is in the venv) against the real
servers; nothing here talks to anything but loopback.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class S3Server:
    name: str
    endpoint: str
    access_key: str
    secret_key: str

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )

    def make_bucket(self, prefix: str = "spool-test") -> str:
        bucket = f"{prefix}-{uuid.uuid4().hex[:12]}"
        if self.name == "s3s-fs":
            # An s3s-fs bucket is a folder of its root.
            os.makedirs(os.path.join(os.environ["SPOOL_TEST_S3S_ROOT"], bucket), exist_ok=True)
        else:
            self.client().create_bucket(Bucket=bucket)
        return bucket

    def put(self, bucket: str, key: str, body: bytes) -> None:
        self.client().put_object(Bucket=bucket, Key=key, Body=body)

    def keys(self, bucket: str) -> list:
        out = []
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket):
            out.extend(o["Key"] for o in page.get("Contents", []))
        return out


def _need(var: str) -> str:
    value = os.environ.get(var)
    if not value:
        pytest.fail(
            f"{var} is not set: start the storage servers with scripts/storage-servers.sh "
            "(scripts/test.sh does it) and source their env file",
            pytrace=False,
        )
    return value


def s3s() -> S3Server:
    return S3Server(
        "s3s-fs",
        _need("SPOOL_TEST_S3S_ENDPOINT"),
        _need("SPOOL_TEST_S3S_ACCESS_KEY"),
        _need("SPOOL_TEST_S3S_SECRET_KEY"),
    )


def moto() -> S3Server:
    return S3Server("moto", _need("SPOOL_TEST_MOTO_ENDPOINT"), "test", "test")
