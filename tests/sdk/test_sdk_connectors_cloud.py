"""Azure Blob and GCS connectors through the official SDK against local servers (contract §2.2).

Azure: azurite, which checks SharedKey signatures. The SDK's create_azure (service-principal
fields only) reaches azurite's well-known emulator account because conftest runs the server with
AZURE_STORAGE_USE_EMULATOR=true; the `account_key` + `endpoint` extension (raw HTTP) signs with
the key given, so a wrong key really fails.

GCS: fake-gcs-server behind tests/storage/gcs_xml_adapter.py. object_store speaks only the XML
API, which fake-gcs-server implements partly; the adapter fakes the object PUT (and its ETag),
`x-goog-if-generation-match`, copy, and the missing-bucket error. What these tests show about
those is the adapter's behaviour, not Google's. XML multipart uploads (large or streamed
uploads) are faked by the adapter too (parts kept, then one upload upstream): the resumable
export to GCS is tested in test_cloud_exports.py, the watch in test_automation_watch.py.
"""

from __future__ import annotations

import base64
import io
import json
import os
import uuid

import pytest
from videovector import NotFoundError, ValidationError

import storage
from spool_sdk_helpers import assert_error_envelope, assert_timestamp, unique

# Same layout as FILES in test_sdk_connectors.py.
FILES = {
    "videos/2024/a.mp4": b"a" * 10,
    "videos/2024/b.MOV": b"b" * 20,
    "videos/2024/notes.txt": b"n",
    "videos/2024/sub/c.mp4": b"c" * 30,
    "videos/2024-extra/x.mp4": b"x",
    "videos/2025/d.mp4": b"d" * 40,
    "other/e.mp4": b"e",
}

GCS_URL = "/api/v2/connectors/gcs"
AZURE_URL = "/api/v2/connectors/azure"


@pytest.fixture(scope="module")
def azure_container():
    server = storage.azurite()
    container = server.make_bucket()
    for key, body in FILES.items():
        server.put(container, key, body)
    return server, container


@pytest.fixture(scope="module")
def gcs_bucket():
    server = storage.gcs()
    bucket = server.make_bucket()
    for key, body in FILES.items():
        server.put(bucket, key, body)
    return server, bucket


def _paths(files):
    return sorted(f.path for f in files)


def _no_probe_left(keys):
    assert not [k for k in keys if ".spool-probe" in k], keys


def _create_azure(client, server, container, **kw):
    # Emulator mode: the service principal is stored but never contacted.
    args = dict(
        name=unique("azure"),
        storage_account=server.account,
        container=container,
        tenant_id="00000000-0000-0000-0000-000000000000",
        client_id="11111111-1111-1111-1111-111111111111",
        client_secret="unused-in-emulator-mode",
        scopes=["import", "export"],
        export_base_path="exports/spool",
    )
    args.update(kw)
    return client.connectors.create_azure(**args)


def _create_azure_shared_key(raw, admin_headers, server, container, key, **kw):
    body = {
        "name": unique("azure-key"),
        "storage_account": server.account,
        "container": container,
        "tenant_id": "t",
        "client_id": "c",
        "client_secret": "s",
        "scopes": ["import", "export"],
        "export_base_path": "exports/spool",
        "account_key": key,
        "endpoint": server.endpoint,
    }
    body.update(kw)
    return raw.post(AZURE_URL, json=body, headers=admin_headers)


def _create_gcs(client, server, bucket, credentials=None, **kw):
    args = dict(
        name=unique("gcs"),
        bucket=bucket,
        gcp_project_id="spool-test",
        credentials_file=io.BytesIO(credentials if credentials is not None else server.credentials()),
        scopes=["import", "export"],
        export_base_path="exports/spool",
    )
    args.update(kw)
    return client.connectors.create_gcs(**args)


def _gcs_form(server, bucket, credentials=None, **fields):
    data = {
        "name": unique("gcs-raw"),
        "bucket": bucket,
        "gcp_project_id": "spool-test",
        "scopes": ["import", "export"],
        "import_mode": "all",
    }
    data.update(fields)
    creds = credentials if credentials is not None else server.credentials()
    return dict(data=data, files={"credentials_file": ("service-account.json", creds, "application/json")})


def _check_test_ok(client, conn, keys):
    result = client.connectors.test(conn.connector_id)
    assert result.success is True, result.error_message
    assert result.error_message is None
    after = client.connectors.retrieve(conn.connector_id)
    assert after.last_test_result == "success"
    assert after.status == "active"
    assert_timestamp(after.last_tested_at)
    # The export probe was written under export_base_path and removed again.
    _no_probe_left(keys())


def _check_test_fails(client, conn_id):
    result = client.connectors.test(conn_id)
    assert result.success is False
    assert result.error_message
    after = client.connectors.retrieve(conn_id)
    assert after.status == "failed"
    assert after.last_test_result == "failed"
    assert after.last_test_error == result.error_message
    return result.error_message


def _check_browse(client, conn_id):
    deep = client.connectors.browse(conn_id, prefix="videos/2024/", pattern="*.{mp4,mov,MOV}", recursive=True)
    assert _paths(deep) == ["videos/2024/a.mp4", "videos/2024/b.MOV", "videos/2024/sub/c.mp4"]
    flat = client.connectors.browse(conn_id, prefix="videos/2024/", pattern="*.{mp4,MOV}", recursive=False)
    assert _paths(flat) == ["videos/2024/a.mp4", "videos/2024/b.MOV"]
    a = next(f for f in flat if f.name == "a.mp4")
    assert a.size_bytes == 10 and a.extension == "mp4" and a.content_type == "video/mp4"
    assert_timestamp(a.last_modified)
    assert next(f for f in flat if f.name == "b.MOV").extension == "mov"
    # A prefix is a string prefix: "videos/2024" also covers "videos/2024-extra".
    partial = client.connectors.browse(conn_id, prefix="videos/2024", pattern="*.mp4", recursive=True)
    assert "videos/2024-extra/x.mp4" in _paths(partial)
    assert _paths(client.connectors.browse(conn_id, prefix="", pattern="*", recursive=True)) == sorted(FILES)
    assert client.connectors.browse(conn_id, prefix="", pattern="*", recursive=False) == []


def _check_delete(client, conn_id):
    first = client.connectors.delete(conn_id)
    assert first.message
    second = client.connectors.delete(conn_id)
    assert second.message == first.message
    with pytest.raises(NotFoundError):
        client.connectors.retrieve(conn_id)
    assert conn_id not in [c.connector_id for c in client.connectors.list()]


# -- Azure ------------------------------------------------------------------------------------


def test_azure_create_list_retrieve_test_ok(client, azure_container):
    server, container = azure_container
    conn = _create_azure(client, server, container)
    assert conn.connector_id.startswith("conn_")
    assert conn.provider == "azure"
    assert conn.status == "active"
    assert (conn.storage_account, conn.container) == (server.account, container)
    assert sorted(conn.scopes) == ["export", "import"]
    assert conn.import_mode == "all"
    assert conn.export_base_path == "exports/spool"
    assert conn.bucket is None
    assert_timestamp(conn.created_at)
    assert conn.last_tested_at is None

    assert conn.connector_id in [c.connector_id for c in client.connectors.list()]
    fetched = client.connectors.retrieve(conn.connector_id)
    assert (fetched.name, fetched.provider, fetched.container) == (conn.name, "azure", container)
    _check_test_ok(client, conn, lambda: server.keys(container))


def test_azure_browse_prefix_pattern_recursive(client, azure_container):
    server, container = azure_container
    conn = _create_azure(client, server, container, scopes=["import"], export_base_path=None)
    _check_browse(client, conn.connector_id)


def test_azure_shared_key_extension(raw, admin_headers, client, azure_container):
    server, container = azure_container
    created = _create_azure_shared_key(raw, admin_headers, server, container, server.key)
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["provider"], body["storage_account"], body["container"]) == ("azure", server.account, container)
    assert server.key not in created.text and "account_key" not in body and "client_secret" not in body
    conn = client.connectors.retrieve(body["connector_id"])
    _check_test_ok(client, conn, lambda: server.keys(container))
    flat = client.connectors.browse(conn.connector_id, prefix="videos/2024/", pattern="*.mp4", recursive=False)
    assert _paths(flat) == ["videos/2024/a.mp4"]
    assert server.key not in raw.get(f"/api/v2/connectors/{conn.connector_id}", headers=admin_headers).text


def test_azure_wrong_account_key_fails_the_test(raw, admin_headers, client, azure_container):
    server, container = azure_container
    wrong = base64.b64encode(os.urandom(64)).decode()
    created = _create_azure_shared_key(raw, admin_headers, server, container, wrong)
    assert created.status_code == 201, created.text
    message = _check_test_fails(client, created.json()["connector_id"])
    # azurite checks SharedKey: 403 AuthorizationFailure.
    assert "Authoriz" in message or "authenticat" in message.lower(), message
    assert wrong not in message


def test_azure_delete_then_repeat_then_gone(client, azure_container):
    server, container = azure_container
    conn = _create_azure(client, server, container)
    _check_delete(client, conn.connector_id)
    with pytest.raises(NotFoundError):
        client.connectors.test(conn.connector_id)


# -- GCS --------------------------------------------------------------------------------------


def test_gcs_create_list_retrieve_test_ok(client, gcs_bucket):
    server, bucket = gcs_bucket
    conn = _create_gcs(client, server, bucket)
    assert conn.connector_id.startswith("conn_")
    assert conn.provider == "gcs"
    assert conn.status == "active"
    assert (conn.bucket, conn.gcp_project_id) == (bucket, "spool-test")
    assert sorted(conn.scopes) == ["export", "import"]
    assert conn.import_mode == "all"
    assert conn.export_base_path == "exports/spool"
    assert_timestamp(conn.created_at)
    assert conn.last_tested_at is None

    assert conn.connector_id in [c.connector_id for c in client.connectors.list()]
    fetched = client.connectors.retrieve(conn.connector_id)
    assert (fetched.name, fetched.provider, fetched.bucket) == (conn.name, "gcs", bucket)
    _check_test_ok(client, conn, lambda: server.keys(bucket))


def test_gcs_browse_prefix_pattern_recursive(client, gcs_bucket):
    server, bucket = gcs_bucket
    conn = _create_gcs(client, server, bucket, scopes=["import"], export_base_path=None)
    _check_browse(client, conn.connector_id)


def test_gcs_missing_bucket_fails_the_test(client, gcs_bucket):
    server, _ = gcs_bucket
    conn = _create_gcs(client, server, "no-such-bucket-" + uuid.uuid4().hex[:8])
    message = _check_test_fails(client, conn.connector_id)
    assert any(s in message for s in ("NoSuchBucket", "does not exist", "not found")), message


def test_gcs_comma_separated_scopes(raw, admin_headers, gcs_bucket):
    server, bucket = gcs_bucket
    form = _gcs_form(server, bucket, scopes="import,export", export_base_path="out")
    created = raw.post(GCS_URL, headers=admin_headers, **form)
    assert created.status_code == 201, created.text
    assert sorted(created.json()["scopes"]) == ["export", "import"]
    assert created.json()["export_base_path"] == "out"


def test_gcs_credentials_file_that_is_not_json_is_refused(client, gcs_bucket):
    server, bucket = gcs_bucket
    with pytest.raises(ValidationError) as info:
        _create_gcs(client, server, bucket, credentials=b"this is -- not { json")
    assert info.value.status_code == 422
    assert "credentials_file" in str(info.value) or "credentials_file" in json.dumps(info.value.details or {})


def test_gcs_credentials_file_over_64_kib_is_refused(raw, admin_headers, gcs_bucket):
    # The SDK refuses it client-side, so this goes over raw multipart.
    server, bucket = gcs_bucket
    big = server.credentials(padding="x" * (70 * 1024))
    assert len(big) > 70 * 1024
    resp = raw.post(GCS_URL, headers=admin_headers, **_gcs_form(server, bucket, credentials=big))
    err = assert_error_envelope(resp, 422, "validation_error")
    assert "credentials_file" in err["message"]


def test_gcs_credentials_appear_in_no_response_file_or_log_line(raw, admin_headers, client, gcs_bucket, spool_server):
    server, bucket = gcs_bucket
    planted = "PLANTED-gcs-key-id-" + uuid.uuid4().hex
    form = _gcs_form(server, bucket, credentials=server.credentials(private_key_id=planted))
    texts = []
    created = raw.post(GCS_URL, headers=admin_headers, **form)
    assert created.status_code == 201, created.text
    texts.append(created.text)
    conn_id = created.json()["connector_id"]
    for path in ("/api/v2/connectors", f"/api/v2/connectors/{conn_id}"):
        texts.append(raw.get(path, headers=admin_headers).text)
    test = raw.post(f"/api/v2/connectors/{conn_id}/test", headers=admin_headers)
    assert test.json()["success"] is True, test.text
    texts.append(test.text)
    texts.append(
        raw.post(
            f"/api/v2/connectors/{conn_id}/browse",
            json={"prefix": "videos/", "pattern": "*", "recursive": True},
            headers=admin_headers,
        ).text
    )
    texts.append(raw.patch(f"/api/v2/connectors/{conn_id}", json={"name": "still secret"}, headers=admin_headers).text)
    for t in texts:
        assert planted not in t
        assert "credentials_file" not in t and "private_key" not in t
    assert planted not in spool_server.log_text()
    needle = planted.encode()
    for dirpath, _, files in (w for d in spool_server.data_dirs for w in os.walk(d)):
        for f in files:
            with open(os.path.join(dirpath, f), "rb") as fh:
                assert needle not in fh.read(), f"{f} holds the service-account file in clear"


def test_gcs_delete_then_repeat_then_gone(client, gcs_bucket):
    server, bucket = gcs_bucket
    conn = _create_gcs(client, server, bucket)
    _check_delete(client, conn.connector_id)
    with pytest.raises(NotFoundError):
        client.connectors.test(conn.connector_id)
