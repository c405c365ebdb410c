"""A small GCS XML-API adapter in front of fake-gcs-server (test use only; Python stdlib).

object_store's GCS client speaks only the XML API (PUT/GET/HEAD/DELETE /{bucket}/{object},
list = GET /{bucket}?list-type=2&prefix=&delimiter=&continuation-token=, copy = PUT with
`x-goog-copy-source`, create-only = `x-goog-if-generation-match: 0`, multipart uploads =
`?uploads` / `?partNumber&uploadId` / `?uploadId`). fake-gcs-server 1.54.0 implements GET,
HEAD, DELETE and list there, but not the rest, so this adapter fakes:

* PUT object: upstream refuses a plain XML PUT (`400 invalid uploadType`) and only accepts it as
  a signed-URL upload, so `X-Goog-Algorithm` is added to the query; that path returns no ETag,
  so the object is HEADed afterwards and its `ETag` and `x-goog-generation` are returned.
* `x-goog-if-generation-match` (on PUT, copy and multipart complete): checked here with a HEAD
  first (412 when it does not hold; 0 means "must not exist"). Racy, which is fine for tests.
* copy: mapped to the JSON API `POST /storage/v1/b/{b}/o/{o}/copyTo/b/{b}/o/{o}`.
* a missing bucket: upstream answers 500 (list) or a JSON 404 (put); sent on as GCS's
  `404 NoSuchBucket` XML error (a 500 would make object_store retry for minutes).
* XML multipart uploads (object_store's put_multipart / MultipartStore: large or streamed
  uploads), kept entirely here; only the finished object goes upstream:
  - initiate `POST /{b}/{o}?uploads` -> `<InitiateMultipartUploadResult>` with a random hex
    `<UploadId>`. The request's object headers (Content-Type, Cache-Control, x-goog-meta-*, ...)
    are kept for the final object; so is an `x-goog-if-generation-match`.
  - part `PUT /{b}/{o}?partNumber=N&uploadId=ID` -> 200 with `ETag: "<md5 hex>"`. A part is a
    file in this process's temporary directory (removed when it exits); N must be 1..10000 and a
    part at most 64 MiB (else 400). Sending a part number again replaces that part.
  - complete `POST /{b}/{o}?uploadId=ID` with `<CompleteMultipartUpload><Part><PartNumber>N
    </PartNumber><ETag>..</ETag></Part>..` (part numbers ascending, ETags compared without
    quotes, parts not named are dropped): the named parts are concatenated and written upstream
    as a PUT object (above), `x-goog-if-generation-match` of the complete (else of the
    initiate) checked first; -> `<CompleteMultipartUploadResult>` whose `<ETag>` is the new
    object's (as HEAD/GET report it) plus an `x-goog-generation` header. A complete repeated
    after it succeeded (a client retry) gets the same answer again.
  - abort `DELETE /{b}/{o}?uploadId=ID` -> 204; list parts `GET /{b}/{o}?uploadId=ID`
    (`max-parts`, `part-number-marker`) -> `<ListPartsResult>` (object_store does not use it).
  - an unknown upload id, or one started for another object -> `404 NoSuchUpload`.
  Uploads live as long as this process: a client may upload parts 1..k, die, and a restarted
  one upload k+1..n and complete with all of them. Restarting the adapter forgets them. Not
  faked: expiry of stale uploads, listing uploads (`GET /{b}?uploads`), GCS's minimum part size
  (5 MiB except the last) and its `"..-N"` multipart ETags (the result is an ordinary object).
* Everything else is forwarded unchanged (Host rewritten to the upstream's -public-host).

Whatever the GCS tests prove about conditional puts, copies and multipart uploads is this
adapter's behaviour, not Google's.

Run: python3 gcs_xml_adapter.py --listen 127.0.0.1:4444 --upstream http://127.0.0.1:4443
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import urllib.parse
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from xml.sax.saxutils import escape

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-authorization", "proxy-authenticate", "content-length", "host"}
UPSTREAM = ("127.0.0.1", 4443)
VERBOSE = False

PART_MAX_BYTES = 64 * 1024 * 1024
PART_NUMBER_MAX = 10_000
COMPLETE_BODY_MAX = 4 * 1024 * 1024   # a CompleteMultipartUpload naming 10,000 parts is ~1 MB
COMPLETED_KEPT = 1000                 # finished uploads remembered for retried completes
S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
PARTS_DIR = ""                        # set by main(): this process's temporary directory


class Upload:
    """One multipart upload: its parts are files `part-NNNNN` under `dir`."""

    def __init__(self, upload_id, bucket, key, headers, if_generation_match):
        self.id, self.bucket, self.key = upload_id, bucket, key
        self.headers = headers                          # for the final object's upstream PUT
        self.if_generation_match = if_generation_match  # from the initiate, if any
        self.dir = os.path.join(PARTS_DIR, upload_id)
        self.parts: dict[int, tuple[str, int]] = {}     # number -> (md5 hex, size)
        self.lock = threading.Lock()                    # parts vs complete vs abort
        self.live = True

    def part_path(self, number):
        return os.path.join(self.dir, "part-%05d" % number)


UPLOADS: dict[str, Upload] = {}
COMPLETED: dict[str, tuple[str, str, bytes, str]] = {}  # id -> (bucket, key, xml, generation)
UPLOADS_LOCK = threading.Lock()


def _local(tag):
    return tag.rpartition("}")[2]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    # -- plumbing -------------------------------------------------------------------------
    def _body_chunks(self, block=1 << 20):
        """The request body in pieces (Content-Length or chunked), as it arrives."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return
                while size > 0:
                    data = self.rfile.read(min(size, block))
                    if not data:
                        raise ConnectionError("request body ended early")
                    size -= len(data)
                    yield data
                self.rfile.readline()
        left = int(self.headers.get("Content-Length") or 0)
        while left > 0:
            data = self.rfile.read(min(left, block))
            if not data:
                raise ConnectionError("request body ended early")
            left -= len(data)
            yield data

    def _read_body(self) -> bytes:
        return b"".join(self._body_chunks())

    def _drain_body(self):
        for _ in self._body_chunks():
            pass

    def _upstream(self, method, path, body=None, headers=None):
        conn = http.client.HTTPConnection(*UPSTREAM, timeout=60)
        try:
            hdrs = {"Host": "%s:%d" % UPSTREAM, **(headers or {})}
            conn.request(method, path, body=body, headers=hdrs)
            resp = conn.getresponse()
            return resp.status, resp.getheaders(), resp.read()
        finally:
            conn.close()

    def _reply(self, status, headers, body=b"", head_only=False):
        self.send_response(status)
        has_length = False
        for k, v in headers:
            if k.lower() == "content-length" and head_only:
                has_length = True
            elif k.lower() in HOP_BY_HOP:
                continue
            self.send_header(k, v)
        if not has_length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and not head_only:
            self.wfile.write(body)

    def _error(self, status, code, message):
        xml = ("<?xml version='1.0' encoding='UTF-8'?><Error><Code>%s</Code><Message>%s</Message></Error>"
               % (code, escape(message))).encode()
        self._reply(status, [("Content-Type", "application/xml; charset=UTF-8")], xml)

    def _xml(self, body, extra_headers=()):
        xml = ("<?xml version='1.0' encoding='UTF-8'?>" + body).encode()
        self._reply(200, [("Content-Type", "application/xml; charset=UTF-8"), *extra_headers], xml)

    def _fwd_headers(self, drop=()):
        return {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP and k.lower() not in drop}

    def _head(self, path):
        status, headers, _ = self._upstream("HEAD", path)
        return status, {k.lower(): v for k, v in headers}

    def _precondition_ok(self, path, want=None) -> bool:
        """`want` (else the request's `x-goog-if-generation-match`) holds for `path`; else a 412."""
        if want is None:
            want = self.headers.get("x-goog-if-generation-match")
        if want is None:
            return True
        status, h = self._head(path)
        ok = status == 404 if want.strip() == "0" else status == 200 and h.get("x-goog-generation") == want.strip()
        if not ok:
            self._error(412, "PreconditionFailed",
                        "At least one of the pre-conditions you specified did not hold (x-goog-if-generation-match).")
        return ok

    # -- methods --------------------------------------------------------------------------
    def _forward(self):
        body = self._read_body() if self.command in ("POST", "PUT", "PATCH") else None
        status, headers, data = self._upstream(self.command, self.path, body, self._fwd_headers())
        if status == 500 and b"no bucket named" in data:
            # fake-gcs answers 500 for a missing bucket (object_store would retry it for minutes).
            return self._no_such_bucket()
        self._reply(status, headers, data, head_only=self.command == "HEAD")

    def _no_such_bucket(self):
        self._error(404, "NoSuchBucket", "The specified bucket does not exist.")

    def _query(self):
        split = urllib.parse.urlsplit(self.path)
        return split, urllib.parse.parse_qs(split.query, keep_blank_values=True)

    do_PATCH = _forward

    def do_HEAD(self):
        self._forward()

    def do_GET(self):
        split, q = self._query()
        if "uploadId" in q:
            return self._mp_list_parts(split, q)
        self._forward()

    def do_DELETE(self):
        split, q = self._query()
        if "uploadId" in q:
            return self._mp_abort(split, q)
        self._forward()

    def do_POST(self):
        split, q = self._query()
        if "uploads" in q:
            return self._mp_initiate(split)
        if "uploadId" in q:
            return self._mp_complete(split, q)
        self._forward()

    def do_PUT(self):
        split, q = self._query()
        if "uploadId" in q:
            return self._mp_part(split, q)
        body = self._read_body()
        if not self._precondition_ok(split.path):
            return
        source = self.headers.get("x-goog-copy-source")
        if source:
            return self._copy(source, split.path)
        headers = self._fwd_headers(drop=("x-goog-if-generation-match", "authorization"))
        if self._put_object(split.path, split.query, body, headers):
            self._reply_with_version(split.path)

    def _put_object(self, path, query, body, headers) -> bool:
        """Write an object upstream (a signed-URL style PUT); on failure reply and answer False."""
        query = query + ("&" if query else "") + "X-Goog-Algorithm=GOOG4-RSA-SHA256"
        status, up_headers, data = self._upstream("PUT", path + "?" + query, body, headers)
        if status == 404 or (status == 500 and b"no bucket named" in data):
            self._no_such_bucket()
            return False
        if status >= 300:
            self._reply(status, up_headers, data)
            return False
        return True

    def _copy(self, source, dest_path):
        src_bucket, _, src_obj = urllib.parse.unquote(source).lstrip("/").partition("/")
        dst_bucket, _, dst_obj = urllib.parse.unquote(dest_path).lstrip("/").partition("/")
        q = lambda s: urllib.parse.quote(s, safe="")  # noqa: E731
        path = "/storage/v1/b/%s/o/%s/copyTo/b/%s/o/%s" % (q(src_bucket), q(src_obj), q(dst_bucket), q(dst_obj))
        status, up_headers, data = self._upstream("POST", path, b"", {"Content-Type": "application/json"})
        if status >= 300:
            msg = data.decode(errors="replace")
            try:
                msg = json.loads(msg)["error"]["message"]
            except (ValueError, KeyError, TypeError):
                pass
            return self._error(status, "NoSuchKey" if status == 404 else "CopyFailed", str(msg))
        self._reply_with_version(dest_path)

    def _version(self, path):
        """(ETag, generation) of an object just written, or None after a 502 reply."""
        status, h = self._head(path)
        if status != 200:
            self._error(502, "AdapterError", "object written but HEAD answered %d" % status)
            return None
        return h.get("etag", ""), h.get("x-goog-generation", "")

    def _reply_with_version(self, path):
        version = self._version(path)
        if version is not None:
            out = [("ETag", version[0]), ("x-goog-generation", version[1])]
            self._reply(200, [(k, v) for k, v in out if v])

    # -- XML multipart uploads ------------------------------------------------------------
    @staticmethod
    def _bucket_key(split):
        bucket, _, key = urllib.parse.unquote(split.path).lstrip("/").partition("/")
        return bucket, key

    def _no_such_upload(self):
        self._error(404, "NoSuchUpload", "The requested upload was not found.")

    def _lookup(self, split, q):
        """The live upload named by `uploadId` for this very object, or None."""
        with UPLOADS_LOCK:
            up = UPLOADS.get(q["uploadId"][0])
        if up is None or (up.bucket, up.key) != self._bucket_key(split):
            return None
        return up

    def _mp_initiate(self, split):
        self._drain_body()
        bucket, key = self._bucket_key(split)
        if not bucket or not key:
            return self._error(400, "InvalidArgument", "a multipart upload needs /{bucket}/{object}")
        status, _, _ = self._upstream("GET", "/storage/v1/b/" + urllib.parse.quote(bucket, safe=""))
        if status == 404:
            return self._no_such_bucket()
        headers = self._fwd_headers(drop=("x-goog-if-generation-match", "authorization"))
        up = Upload(secrets.token_hex(16), bucket, key, headers, self.headers.get("x-goog-if-generation-match"))
        os.makedirs(up.dir)
        with UPLOADS_LOCK:
            UPLOADS[up.id] = up
        self._xml('<InitiateMultipartUploadResult xmlns="%s"><Bucket>%s</Bucket><Key>%s</Key>'
                  '<UploadId>%s</UploadId></InitiateMultipartUploadResult>'
                  % (S3_NS, escape(bucket), escape(key), up.id))

    def _mp_part(self, split, q):
        try:
            number = int(q.get("partNumber", [""])[0])
        except ValueError:
            number = 0
        if not 1 <= number <= PART_NUMBER_MAX:
            self._drain_body()
            return self._error(400, "InvalidArgument",
                               "partNumber must be an integer from 1 to %d" % PART_NUMBER_MAX)
        if int(self.headers.get("Content-Length") or 0) > PART_MAX_BYTES:
            self.close_connection = True  # the body is not read
            return self._error(400, "EntityTooLarge", "a part may be at most %d bytes" % PART_MAX_BYTES)
        up = self._lookup(split, q)
        if up is None:
            self._drain_body()
            return self._no_such_upload()
        tmp = os.path.join(up.dir, "tmp-%s" % secrets.token_hex(8))
        md5, size = hashlib.md5(), 0
        try:
            with open(tmp, "wb") as f:
                for data in self._body_chunks():
                    size += len(data)
                    if size > PART_MAX_BYTES:
                        self.close_connection = True  # the rest of the body is not read
                        os.unlink(tmp)
                        return self._error(400, "EntityTooLarge",
                                           "a part may be at most %d bytes" % PART_MAX_BYTES)
                    md5.update(data)
                    f.write(data)
        except FileNotFoundError:  # aborted or completed meanwhile (its directory is gone)
            self.close_connection = True
            return self._no_such_upload()
        with up.lock:
            if not up.live:
                shutil.rmtree(up.dir, ignore_errors=True)
                return self._no_such_upload()
            os.replace(tmp, up.part_path(number))
            up.parts[number] = (md5.hexdigest(), size)
        self._reply(200, [("ETag", '"%s"' % md5.hexdigest())])

    def _mp_parse_complete(self, body):
        """[(part number, ETag without quotes)] of a CompleteMultipartUpload, or an error text."""
        try:
            root = ET.fromstring(body)
        except ET.ParseError as e:
            return "not XML (%s)" % e
        if _local(root.tag) != "CompleteMultipartUpload":
            return "the root element must be CompleteMultipartUpload"
        parts = []
        for part in root:
            if _local(part.tag) != "Part":
                continue
            fields = {_local(c.tag): (c.text or "").strip() for c in part}
            try:
                number = int(fields["PartNumber"])
                etag = fields["ETag"]
            except (KeyError, ValueError):
                return "each Part needs a PartNumber and an ETag"
            parts.append((number, etag.replace("&quot;", '"').strip('"')))
        return parts or "no Part elements"

    def _mp_complete(self, split, q):
        upload_id = q["uploadId"][0]
        body = bytearray()
        for data in self._body_chunks():
            body += data
            if len(body) > COMPLETE_BODY_MAX:
                self.close_connection = True
                return self._error(400, "EntityTooLarge", "the CompleteMultipartUpload body is too large")
        bucket, key = self._bucket_key(split)
        up = self._lookup(split, q)
        if up is None:
            return self._completed_again(upload_id, bucket, key)
        parts = self._mp_parse_complete(bytes(body))
        if isinstance(parts, str):
            return self._error(400, "MalformedXML", "CompleteMultipartUpload: " + parts)
        numbers = [n for n, _ in parts]
        if numbers != sorted(set(numbers)):
            return self._error(400, "InvalidPartOrder", "the part numbers must be ascending and distinct")
        with up.lock:
            if not up.live:
                return self._completed_again(upload_id, bucket, key)
            for number, etag in parts:
                have = up.parts.get(number)
                if have is None or have[0] != etag:
                    return self._error(400, "InvalidPart",
                                       "part %d was not uploaded or its ETag does not match" % number)
            want = self.headers.get("x-goog-if-generation-match", up.if_generation_match)
            if not self._precondition_ok(split.path, want):
                return
            paths = [up.part_path(n) for n, _ in parts]

            def concatenated():
                for path in paths:
                    with open(path, "rb") as f:
                        while data := f.read(1 << 20):
                            yield data

            total = sum(up.parts[n][1] for n, _ in parts)
            if not self._put_object(split.path, "", concatenated(), {**up.headers, "Content-Length": str(total)}):
                return
            version = self._version(split.path)
            if version is None:
                return
            etag, generation = version
            xml = ('<CompleteMultipartUploadResult xmlns="%s"><Location>http://%s/%s/%s</Location>'
                   '<Bucket>%s</Bucket><Key>%s</Key><ETag>%s</ETag></CompleteMultipartUploadResult>'
                   % (S3_NS, escape(self.headers.get("Host", "")), escape(urllib.parse.quote(bucket)),
                      escape(urllib.parse.quote(key)), escape(bucket), escape(key), escape(etag)))
            up.live = False
            with UPLOADS_LOCK:
                UPLOADS.pop(upload_id, None)
                COMPLETED[upload_id] = (bucket, key, xml.encode(), generation)
                while len(COMPLETED) > COMPLETED_KEPT:
                    COMPLETED.pop(next(iter(COMPLETED)))
            shutil.rmtree(up.dir, ignore_errors=True)
        self._completed_again(upload_id, bucket, key)

    def _completed_again(self, upload_id, bucket, key):
        """The answer of a finished complete (also to a retry of it), else NoSuchUpload."""
        with UPLOADS_LOCK:
            done = COMPLETED.get(upload_id)
        if done is None or done[:2] != (bucket, key):
            return self._no_such_upload()
        extra = [("x-goog-generation", done[3])] if done[3] else []
        self._xml(done[2].decode(), extra)

    def _mp_abort(self, split, q):
        self._drain_body()
        up = self._lookup(split, q)
        if up is None:
            return self._no_such_upload()
        with up.lock:
            if not up.live:
                return self._no_such_upload()
            up.live = False
            with UPLOADS_LOCK:
                UPLOADS.pop(up.id, None)
            shutil.rmtree(up.dir, ignore_errors=True)
        self._reply(204, [])

    def _mp_list_parts(self, split, q):
        up = self._lookup(split, q)
        if up is None:
            return self._no_such_upload()
        try:
            marker = int(q.get("part-number-marker", ["0"])[0] or 0)
            max_parts = max(1, min(1000, int(q.get("max-parts", ["1000"])[0] or 1000)))
        except ValueError:
            return self._error(400, "InvalidArgument", "part-number-marker and max-parts must be integers")
        with up.lock:
            numbers = sorted(n for n in up.parts if n > marker)
            page = [(n, *up.parts[n]) for n in numbers[:max_parts]]
        truncated = len(numbers) > max_parts
        body = "".join("<Part><PartNumber>%d</PartNumber><ETag>\"%s\"</ETag><Size>%d</Size></Part>" % p
                       for p in page)
        next_marker = "<NextPartNumberMarker>%d</NextPartNumberMarker>" % page[-1][0] if page else ""
        self._xml('<ListPartsResult xmlns="%s"><Bucket>%s</Bucket><Key>%s</Key><UploadId>%s</UploadId>'
                  '<PartNumberMarker>%d</PartNumberMarker>%s<MaxParts>%d</MaxParts>'
                  '<IsTruncated>%s</IsTruncated>%s</ListPartsResult>'
                  % (S3_NS, escape(up.bucket), escape(up.key), up.id, marker, next_marker, max_parts,
                     "true" if truncated else "false", body))

    def log_message(self, fmt, *args):
        if VERBOSE:
            sys.stderr.write("gcs-adapter: %s\n" % (fmt % args))


def main() -> None:
    global UPSTREAM, VERBOSE, PARTS_DIR
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--listen", default="127.0.0.1:4444")
    ap.add_argument("--upstream", default="http://127.0.0.1:4443", help="fake-gcs-server (-scheme http)")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    up = urllib.parse.urlsplit(args.upstream)
    UPSTREAM, VERBOSE = (up.hostname, up.port or 80), args.verbose
    host, _, port = args.listen.rpartition(":")
    server = ThreadingHTTPServer((host, int(port)), Handler)
    server.daemon_threads = True
    PARTS_DIR = tempfile.mkdtemp(prefix="gcs-xml-adapter-parts-")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # so the parts directory is removed
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        shutil.rmtree(PARTS_DIR, ignore_errors=True)


if __name__ == "__main__":
    main()
