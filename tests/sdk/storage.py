"""The test storage servers started by `scripts/storage-servers.sh` (see `scripts/test.sh`):
s3s-fs checks SigV4 signatures; moto does not, but covers broader S3 semantics; azurite checks
Azure SharedKey signatures; fake-gcs-server sits behind tests/storage/gcs_xml_adapter.py (the
XML API object_store speaks is partly the adapter's, see its docstring).

S3 objects are written with boto3 (moto's dependency, so it is in the venv); Azure and GCS ones
with the standard library straight to azurite and fake-gcs-server. Nothing here talks to
anything but loopback.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import urllib.error
import urllib.parse
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from email.utils import formatdate
from typing import Dict, List, Optional, Tuple

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


def _http(method: str, url: str, body: Optional[bytes] = None, headers: Optional[Dict[str, str]] = None) -> Tuple[int, bytes]:
    # data=None with an explicit Content-Length: urllib adds a Content-Type to data=b"".
    req = urllib.request.Request(url, data=body or None, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


AZURE_API_VERSION = "2021-08-06"


@dataclass(frozen=True)
class AzuriteServer:
    """azurite's blob service, reached with SharedKey-signed REST calls (path style)."""

    url: str  # http://127.0.0.1:10000
    account: str
    key: str

    @property
    def endpoint(self) -> str:
        """What a shared-key connector's `endpoint` is: the account's blob URL."""
        return f"{self.url}/{self.account}"

    def _request(self, method: str, path: str, query: Dict[str, str], body: bytes = b"", headers=None) -> Tuple[int, bytes]:
        headers = {"x-ms-date": formatdate(usegmt=True), "x-ms-version": AZURE_API_VERSION, **(headers or {})}
        content_type = headers.get("Content-Type", "")
        length = str(len(body)) if body else ""
        ms = "".join(f"{k.lower()}:{v}\n" for k, v in sorted(headers.items(), key=lambda kv: kv[0].lower()) if k.lower().startswith("x-ms-"))
        resource = f"/{self.account}/{self.account}/{path}" + "".join(f"\n{k}:{v}" for k, v in sorted(query.items()))
        # VERB, Content-Encoding, -Language, -Length, -MD5, -Type, Date, If-*(4), Range.
        sts = "\n".join([method, "", "", length, "", content_type, "", "", "", "", "", ""]) + "\n" + ms + resource
        sig = base64.b64encode(hmac.new(base64.b64decode(self.key), sts.encode(), hashlib.sha256).digest()).decode()
        headers["Authorization"] = f"SharedKey {self.account}:{sig}"
        headers["Content-Length"] = str(len(body))
        qs = ("?" + urllib.parse.urlencode(query)) if query else ""
        return _http(method, f"{self.url}/{self.account}/{path}{qs}", body, headers)

    def make_bucket(self, prefix: str = "spool-test") -> str:
        """A new container (3-63 chars: lowercase letters, digits, single hyphens)."""
        container = f"{prefix}-{uuid.uuid4().hex[:12]}"
        status, body = self._request("PUT", container, {"restype": "container"})
        assert status == 201, f"azurite create container {container}: {status} {body[:300]!r}"
        return container

    def put(self, bucket: str, key: str, body: bytes) -> None:
        path = f"{bucket}/{urllib.parse.quote(key, safe='/')}"
        headers = {"x-ms-blob-type": "BlockBlob", "Content-Type": "application/octet-stream"}
        status, resp = self._request("PUT", path, {}, body, headers)
        assert status == 201, f"azurite put {bucket}/{key}: {status} {resp[:300]!r}"

    def get(self, bucket: str, key: str) -> bytes:
        status, body = self._request("GET", f"{bucket}/{urllib.parse.quote(key, safe='/')}", {})
        assert status == 200, f"azurite get {bucket}/{key}: {status} {body[:300]!r}"
        return body

    def keys(self, bucket: str) -> List[str]:
        out: List[str] = []
        marker = ""
        while True:
            query = {"comp": "list", "restype": "container", **({"marker": marker} if marker else {})}
            status, body = self._request("GET", bucket, query)
            assert status == 200, f"azurite list {bucket}: {status} {body[:300]!r}"
            root = ET.fromstring(body)
            out.extend(n.text or "" for n in root.iter("Name") if n.text is not None)
            marker = root.findtext("NextMarker") or ""
            if not marker:
                return out


@dataclass(frozen=True)
class GcsServer:
    """fake-gcs-server: written and listed through its JSON API; Spool reaches it through the
    XML adapter at `base_url`."""

    base_url: str  # the adapter, what object_store talks to
    fake_url: str  # fake-gcs-server itself

    def credentials(self, **extra: str) -> bytes:
        """A service-account file object_store accepts offline (`disable_oauth`)."""
        sa = {"gcs_base_url": self.base_url, "disable_oauth": True, "client_email": "", "private_key": "", "private_key_id": ""}
        sa.update(extra)
        return json.dumps(sa).encode()

    def make_bucket(self, prefix: str = "spool-test") -> str:
        bucket = f"{prefix}-{uuid.uuid4().hex[:12]}"
        status, body = _http(
            "POST",
            f"{self.fake_url}/storage/v1/b?project=spool-test",
            json.dumps({"name": bucket}).encode(),
            {"Content-Type": "application/json"},
        )
        assert status == 200, f"fake-gcs create bucket {bucket}: {status} {body[:300]!r}"
        return bucket

    def put(self, bucket: str, key: str, body: bytes) -> None:
        q = urllib.parse.urlencode({"uploadType": "media", "name": key})
        url = f"{self.fake_url}/upload/storage/v1/b/{urllib.parse.quote(bucket, safe='')}/o?{q}"
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(body))}
        status, resp = _http("POST", url, body, headers)
        assert status == 200, f"fake-gcs put {bucket}/{key}: {status} {resp[:300]!r}"

    def get(self, bucket: str, key: str) -> bytes:
        url = f"{self.fake_url}/storage/v1/b/{urllib.parse.quote(bucket, safe='')}/o/{urllib.parse.quote(key, safe='')}?alt=media"
        status, body = _http("GET", url)
        assert status == 200, f"fake-gcs get {bucket}/{key}: {status} {body[:300]!r}"
        return body

    def keys(self, bucket: str) -> List[str]:
        out: List[str] = []
        token = ""
        while True:
            q = urllib.parse.urlencode({"pageToken": token} if token else {})
            status, body = _http("GET", f"{self.fake_url}/storage/v1/b/{urllib.parse.quote(bucket, safe='')}/o?{q}")
            assert status == 200, f"fake-gcs list {bucket}: {status} {body[:300]!r}"
            page = json.loads(body)
            out.extend(item["name"] for item in page.get("items", []))
            token = page.get("nextPageToken") or ""
            if not token:
                return out


def azurite() -> AzuriteServer:
    return AzuriteServer(
        _need("SPOOL_TEST_AZURITE_URL"),
        _need("SPOOL_TEST_AZURITE_ACCOUNT"),
        _need("SPOOL_TEST_AZURITE_KEY"),
    )


def gcs() -> GcsServer:
    return GcsServer(_need("SPOOL_TEST_GCS_BASE_URL"), _need("SPOOL_TEST_FAKE_GCS_URL"))
