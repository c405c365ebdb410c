"""Connectors through the official SDK against real S3 servers (contract §2.2).

s3s-fs checks SigV4 signatures, so a wrong secret really fails there; moto covers broader S3
semantics and is reached through the `endpoint` extension. Local-folder connectors (an
extension) get the same browse checks.
"""

from __future__ import annotations

import json
import os
import uuid

import pytest
from videovector import NotFoundError, ValidationError

import storage
from spool_sdk_helpers import assert_error_envelope, assert_timestamp, unique

FILES = {
    "videos/2024/a.mp4": b"a" * 10,
    "videos/2024/b.MOV": b"b" * 20,
    "videos/2024/notes.txt": b"n",
    "videos/2024/sub/c.mp4": b"c" * 30,
    "videos/2024-extra/x.mp4": b"x",
    "videos/2025/d.mp4": b"d" * 40,
    "other/e.mp4": b"e",
}


@pytest.fixture(scope="module")
def s3s_bucket():
    server = storage.s3s()
    bucket = server.make_bucket()
    for key, body in FILES.items():
        server.put(bucket, key, body)
    return server, bucket


def _create_s3(client, server, bucket, **kw):
    args = dict(
        name=unique("s3"),
        bucket=bucket,
        region="us-east-1",
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        scopes=["import", "export"],
        export_base_path="exports/spool",
    )
    args.update(kw)
    return client.connectors.create_s3(**args)


def _paths(files):
    return sorted(f.path for f in files)


def test_s3_create_list_retrieve_test_ok(client, s3s_bucket):
    server, bucket = s3s_bucket
    conn = _create_s3(client, server, bucket)
    assert conn.connector_id.startswith("conn_")
    assert conn.provider == "s3"
    assert conn.status == "active"
    assert sorted(conn.scopes) == ["export", "import"]
    assert conn.import_mode == "all"
    assert conn.bucket == bucket and conn.region == "us-east-1"
    assert conn.export_base_path == "exports/spool"
    assert_timestamp(conn.created_at)
    assert conn.last_tested_at is None

    assert conn.connector_id in [c.connector_id for c in client.connectors.list()]
    fetched = client.connectors.retrieve(conn.connector_id)
    assert (fetched.name, fetched.bucket) == (conn.name, bucket)

    result = client.connectors.test(conn.connector_id)
    assert result.success is True, result.error_message
    assert result.error_message is None
    after = client.connectors.retrieve(conn.connector_id)
    assert after.last_test_result == "success"
    assert after.status == "active"
    assert_timestamp(after.last_tested_at)
    # The export probe was written and removed again.
    assert not [k for k in server.keys(bucket) if ".spool-probe" in k]


def test_s3_browse_prefix_pattern_recursive(client, s3s_bucket):
    server, bucket = s3s_bucket
    conn = _create_s3(client, server, bucket, scopes=["import"])
    deep = client.connectors.browse(conn.connector_id, prefix="videos/2024/", pattern="*.{mp4,mov,MOV}", recursive=True)
    assert _paths(deep) == ["videos/2024/a.mp4", "videos/2024/b.MOV", "videos/2024/sub/c.mp4"]
    flat = client.connectors.browse(conn.connector_id, prefix="videos/2024/", pattern="*.{mp4,MOV}", recursive=False)
    assert _paths(flat) == ["videos/2024/a.mp4", "videos/2024/b.MOV"]
    a = next(f for f in flat if f.name == "a.mp4")
    assert a.size_bytes == 10 and a.extension == "mp4" and a.content_type == "video/mp4"
    assert_timestamp(a.last_modified)
    b = next(f for f in flat if f.name == "b.MOV")
    assert b.extension == "mov"
    # A prefix is a string prefix, as in S3: "videos/2024" also covers "videos/2024-extra".
    partial = client.connectors.browse(conn.connector_id, prefix="videos/2024", pattern="*.mp4", recursive=True)
    assert "videos/2024-extra/x.mp4" in _paths(partial)
    everything = client.connectors.browse(conn.connector_id, prefix="", pattern="*", recursive=True)
    assert _paths(everything) == sorted(FILES)
    top = client.connectors.browse(conn.connector_id, prefix="", pattern="*", recursive=False)
    assert top == []


def test_s3_wrong_secret_fails_the_test_and_keeps_the_connector(client, s3s_bucket):
    server, bucket = s3s_bucket
    conn = _create_s3(client, server, bucket, aws_secret_access_key="not-the-secret")
    result = client.connectors.test(conn.connector_id)
    assert result.success is False
    assert result.error_message and "Signature" in result.error_message, result.error_message
    after = client.connectors.retrieve(conn.connector_id)
    assert after.status == "failed"
    assert after.last_test_result == "failed"
    assert after.last_test_error == result.error_message
    assert (after.name, after.bucket, after.scopes, after.export_base_path) == (
        conn.name,
        conn.bucket,
        conn.scopes,
        conn.export_base_path,
    )


def test_s3_wrong_bucket_fails_the_test(client, s3s_bucket):
    server, _ = s3s_bucket
    conn = _create_s3(client, server, "no-such-bucket-" + uuid.uuid4().hex[:8])
    result = client.connectors.test(conn.connector_id)
    assert result.success is False
    assert result.error_message


def test_dead_endpoint_fails_the_test_with_a_message(raw, admin_headers, client):
    body = {
        "name": unique("dead"),
        "bucket": "bkt",
        "region": "us-east-1",
        "aws_access_key_id": "k",
        "aws_secret_access_key": "s",
        "endpoint": "http://127.0.0.1:1",
    }
    created = raw.post("/api/v2/connectors/s3", json=body, headers=admin_headers)
    assert created.status_code == 201, created.text
    result = client.connectors.test(created.json()["connector_id"])
    assert result.success is False and result.error_message


def test_moto_through_the_endpoint_extension(raw, admin_headers, client):
    server = storage.moto()
    bucket = server.make_bucket()
    server.put(bucket, "in/one.mp4", b"1")
    server.put(bucket, "in/deeper/two.mp4", b"22")
    body = {
        "name": unique("moto"),
        "bucket": bucket,
        "region": "us-east-1",
        "aws_access_key_id": "test",
        "aws_secret_access_key": "test",
        "scopes": ["import", "export"],
        "endpoint": server.endpoint,
    }
    created = raw.post("/api/v2/connectors/s3", json=body, headers=admin_headers)
    assert created.status_code == 201, created.text
    conn_id = created.json()["connector_id"]
    assert created.json()["endpoint"] == server.endpoint
    assert client.connectors.test(conn_id).success is True
    assert _paths(client.connectors.browse(conn_id, prefix="in/", pattern="*.mp4", recursive=True)) == [
        "in/deeper/two.mp4",
        "in/one.mp4",
    ]
    assert _paths(client.connectors.browse(conn_id, prefix="in/", pattern="*.mp4", recursive=False)) == ["in/one.mp4"]


def test_patch_changes_only_what_is_given(raw, admin_headers, client, s3s_bucket):
    server, bucket = s3s_bucket
    conn = _create_s3(client, server, bucket)
    url = f"/api/v2/connectors/{conn.connector_id}"
    resp = raw.patch(url, json={"name": "renamed", "import_mode": "new_only", "scopes": ["import"]}, headers=admin_headers)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["name"], body["import_mode"], body["scopes"]) == ("renamed", "new_only", ["import"])
    assert body["export_base_path"] == "exports/spool"
    resp = raw.patch(url, json={"export_base_path": "out/"}, headers=admin_headers)
    assert resp.json()["export_base_path"] == "out"
    resp = raw.patch(url, json={"export_base_path": None}, headers=admin_headers)
    assert resp.json()["export_base_path"] is None
    for bad in ("../up", "/abs", "a\\b", "a//b"):
        err = assert_error_envelope(raw.patch(url, json={"export_base_path": bad}, headers=admin_headers), 422, "validation_error")
        assert "export_base_path" in err["message"]
    # New credentials take effect: a wrong secret fails the next test, the right one passes.
    raw.patch(url, json={"aws_secret_access_key": "wrong"}, headers=admin_headers)
    assert client.connectors.test(conn.connector_id).success is False
    raw.patch(url, json={"aws_secret_access_key": server.secret_key}, headers=admin_headers)
    assert client.connectors.test(conn.connector_id).success is True
    assert client.connectors.retrieve(conn.connector_id).name == "renamed"


def test_delete_then_repeat_then_gone(client, s3s_bucket):
    server, bucket = s3s_bucket
    conn = _create_s3(client, server, bucket)
    first = client.connectors.delete(conn.connector_id)
    assert first.message
    second = client.connectors.delete(conn.connector_id)
    assert second.message == first.message
    with pytest.raises(NotFoundError):
        client.connectors.retrieve(conn.connector_id)
    assert conn.connector_id not in [c.connector_id for c in client.connectors.list()]
    with pytest.raises(NotFoundError):
        client.connectors.test(conn.connector_id)


@pytest.mark.parametrize(
    "override,field",
    [
        ({"name": ""}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"scopes": ["bogus"]}, "scopes"),
        ({"import_mode": "sometimes"}, "import_mode"),
        ({"export_base_path": "../escape"}, "export_base_path"),
        ({"export_base_path": "/root"}, "export_base_path"),
    ],
)
def test_create_validation_names_the_field(client, s3s_bucket, override, field):
    server, bucket = s3s_bucket
    with pytest.raises(ValidationError) as info:
        _create_s3(client, server, bucket, **override)
    assert info.value.status_code == 422
    assert field in str(info.value) or field in json.dumps(info.value.details or {})


def test_empty_scopes_are_refused(raw, admin_headers):
    # The SDK turns [] into ["import"], so this goes over raw HTTP.
    body = {"name": unique("noscope"), "bucket": "bkt", "region": "us-east-1", "aws_access_key_id": "k", "aws_secret_access_key": "s", "scopes": []}
    err = assert_error_envelope(raw.post("/api/v2/connectors/s3", json=body, headers=admin_headers), 422, "validation_error")
    assert "scopes" in err["message"]


def test_unknown_connector_is_not_found(client):
    with pytest.raises(NotFoundError):
        client.connectors.retrieve("conn_" + "0" * 26)
    with pytest.raises(NotFoundError):
        client.connectors.browse("conn_01KB0000000000000000000000", prefix="", pattern="*", recursive=True)


def _local_connector(raw, admin_headers, root):
    resp = raw.post(
        "/api/v2/connectors/local",
        json={"name": unique("local"), "root": str(root), "scopes": ["import"]},
        headers=admin_headers,
    )
    assert resp.status_code == 201, resp.text
    assert resp.json()["provider"] == "local"
    return resp.json()["connector_id"]


def test_local_connector_browse(raw, admin_headers, client, spool_server):
    root = spool_server.local_root / ("media-" + uuid.uuid4().hex[:8])
    for key, body in FILES.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    conn_id = _local_connector(raw, admin_headers, root)
    assert client.connectors.test(conn_id).success is True
    deep = client.connectors.browse(conn_id, prefix="videos/2024/", pattern="*.{mp4,MOV}", recursive=True)
    assert _paths(deep) == ["videos/2024/a.mp4", "videos/2024/b.MOV", "videos/2024/sub/c.mp4"]
    flat = client.connectors.browse(conn_id, prefix="videos/2024/", pattern="*.mp4", recursive=False)
    assert _paths(flat) == ["videos/2024/a.mp4"]
    assert flat[0].size_bytes == 10


def test_local_root_outside_the_allowed_roots_is_refused(raw, admin_headers, tmp_path):
    resp = raw.post(
        "/api/v2/connectors/local",
        json={"name": unique("outside"), "root": str(tmp_path)},
        headers=admin_headers,
    )
    err = assert_error_envelope(resp, 422, "validation_error")
    assert "root" in err["message"]


def test_browse_past_the_maximum_is_refused_and_a_narrower_prefix_works(raw, admin_headers, client, spool_server):
    # conftest sets SPOOL_BROWSE_MAX_ENTRIES=200 for this server.
    root = spool_server.local_root / ("many-" + uuid.uuid4().hex[:8])
    for i in range(230):
        d = root / ("a" if i < 150 else "b")
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:03}.mp4").write_bytes(b"x")
    conn_id = _local_connector(raw, admin_headers, root)
    resp = raw.post(
        f"/api/v2/connectors/{conn_id}/browse",
        json={"prefix": "", "pattern": "*", "recursive": True},
        headers=admin_headers,
    )
    err = assert_error_envelope(resp, 422, "browse_too_many_results")
    assert err["details"]["max_entries"] == 200
    assert len(client.connectors.browse(conn_id, prefix="a/", pattern="*", recursive=True)) == 150


def test_connector_secrets_appear_in_no_response_file_or_log_line(raw, admin_headers, client, spool_server):
    planted = "PLANTED-s3-secret-" + uuid.uuid4().hex
    server = storage.moto()
    bucket = server.make_bucket()
    body = {
        "name": unique("secret"),
        "bucket": bucket,
        "region": "us-east-1",
        "aws_access_key_id": "AKIA" + uuid.uuid4().hex[:12].upper(),
        "aws_secret_access_key": planted,
        "endpoint": server.endpoint,
    }
    texts = []
    created = raw.post("/api/v2/connectors/s3", json=body, headers={**admin_headers, "Idempotency-Key": "k-" + planted[-8:]})
    texts.append(created.text)
    conn_id = created.json()["connector_id"]
    replay = raw.post("/api/v2/connectors/s3", json=body, headers={**admin_headers, "Idempotency-Key": "k-" + planted[-8:]})
    assert replay.json()["connector_id"] == conn_id
    texts.append(replay.text)
    for path in ("/api/v2/connectors", f"/api/v2/connectors/{conn_id}"):
        texts.append(raw.get(path, headers=admin_headers).text)
    texts.append(raw.post(f"/api/v2/connectors/{conn_id}/test", headers=admin_headers).text)
    texts.append(raw.patch(f"/api/v2/connectors/{conn_id}", json={"name": "still secret"}, headers=admin_headers).text)
    for t in texts:
        assert planted not in t
    assert planted not in spool_server.log_text()
    needle = planted.encode()
    for dirpath, _, files in (w for d in spool_server.data_dirs for w in os.walk(d)):
        for f in files:
            with open(os.path.join(dirpath, f), "rb") as fh:
                assert needle not in fh.read(), f"{f} holds the secret in clear"
