"""A small GCS XML-API adapter in front of fake-gcs-server (test use only; Python stdlib).

object_store's GCS client speaks only the XML API (PUT/GET/HEAD/DELETE /{bucket}/{object},
list = GET /{bucket}?list-type=2&prefix=&delimiter=&continuation-token=, copy = PUT with
`x-goog-copy-source`, create-only = `x-goog-if-generation-match: 0`). fake-gcs-server 1.54.0
implements GET, HEAD, DELETE and list there, but not the rest, so this adapter fakes:

* PUT object: upstream refuses a plain XML PUT (`400 invalid uploadType`) and only accepts it as
  a signed-URL upload, so `X-Goog-Algorithm` is added to the query; that path returns no ETag,
  so the object is HEADed afterwards and its `ETag` and `x-goog-generation` are returned.
* `x-goog-if-generation-match` (on PUT and copy): checked here with a HEAD first (412 when it
  does not hold; 0 means "must not exist"). Racy, which is fine for tests.
* copy: mapped to the JSON API `POST /storage/v1/b/{b}/o/{o}/copyTo/b/{b}/o/{o}`.
* a missing bucket: upstream answers 500 (list) or a JSON 404 (put); sent on as GCS's
  `404 NoSuchBucket` XML error (a 500 would make object_store retry for minutes).
* Everything else is forwarded unchanged (Host rewritten to the upstream's -public-host).

* XML multipart uploads (object_store's put_multipart / MultipartStore, used for large or
  streamed uploads; the same S3-style calls Google documents):
  - initiate `POST /{b}/{o}?uploads` -> `<InitiateMultipartUploadResult>` with a random hex
    `UploadId`; the object headers sent with it (Content-Type, Cache-Control, Content-*,
    `x-goog-meta-*`, `x-goog-storage-class`, ...) are kept for the final object.
  - part `PUT /{b}/{o}?partNumber=N&uploadId=ID` -> 200 with `ETag: "<md5 hex>"`. Parts are
    files in a temporary directory of this process (removed when it exits); N is 1..10000 and
    a part may be at most 64 MiB (else 400). Re-sending a part number replaces it.
  - complete `POST /{b}/{o}?uploadId=ID` with `<CompleteMultipartUpload><Part><PartNumber>
    <ETag>...` (ascending part numbers; ETags compared without quotes; unlisted parts dropped)
    -> the listed parts are concatenated and written upstream like a PUT (above), then the
    `<CompleteMultipartUploadResult>` carries the new object's ETag (as a later HEAD shows it)
    and the `x-goog-generation` header its generation. `x-goog-if-generation-match` on the
    complete (or, failing that, on the initiate) is checked as for PUT. A complete repeated
    after success (a client retry) gets the same answer.
  - abort `DELETE /{b}/{o}?uploadId=ID` -> 204; list parts `GET /{b}/{o}?uploadId=ID` ->
    `<ListPartsResult>` (object_store does not call it).
  - an unknown upload id (or one started for another object) -> `404 NoSuchUpload`.
  Uploads live in this process's memory and temporary directory: they survive any number of
  client restarts (a client may upload parts 1..k, die, and a new one send k+1..n and the
  complete) but not a restart of the adapter. No expiry and no listing of uploads
  (`GET /{b}?uploads`), and no real composite-object semantics (the result is an ordinary
  object; its ETag is not GCS's `"...-N"` multipart form).

Whatever the GCS tests prove about conditional puts, copies and multipart uploads is this
adapter's behaviour, not Google's.

Run: python3 gcs_xml_adapter.py --listen 127.0.0.1:4444 --upstream http://127.0.0.1:4443
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from xml.sax.saxutils import escape

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-authorization", "proxy-authenticate", "content-length", "host"}
UPSTREAM = ("127.0.0.1", 4443)
VERBOSE = False


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    # -- plumbing -------------------------------------------------------------------------
    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

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

    def _fwd_headers(self, drop=()):
        return {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP and k.lower() not in drop}

    def _head(self, path):
        status, headers, _ = self._upstream("HEAD", path)
        return status, {k.lower(): v for k, v in headers}

    def _precondition_ok(self, path) -> bool:
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

    do_GET = do_DELETE = do_PATCH = _forward

    def do_HEAD(self):
        self._forward()

    def do_POST(self):
        query = urllib.parse.urlsplit(self.path).query
        if "uploads" in urllib.parse.parse_qs(query, keep_blank_values=True) or "uploadId=" in query:
            self._read_body()
            return self._error(501, "NotImplemented",
                               "XML multipart uploads are not supported by the local GCS test adapter "
                               "(fake-gcs-server has no XML multipart API)")
        self._forward()

    def do_PUT(self):
        split = urllib.parse.urlsplit(self.path)
        body = self._read_body()
        if "uploadId=" in split.query:
            return self._error(501, "NotImplemented",
                               "XML multipart upload parts are not supported by the local GCS test adapter")
        if not self._precondition_ok(split.path):
            return
        source = self.headers.get("x-goog-copy-source")
        if source:
            return self._copy(source, split.path)
        query = split.query + ("&" if split.query else "") + "X-Goog-Algorithm=GOOG4-RSA-SHA256"
        headers = self._fwd_headers(drop=("x-goog-if-generation-match", "authorization"))
        status, up_headers, data = self._upstream("PUT", split.path + "?" + query, body, headers)
        if status == 404 or (status == 500 and b"no bucket named" in data):
            return self._no_such_bucket()
        if status >= 300:
            return self._reply(status, up_headers, data)
        self._reply_with_version(split.path)

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

    def _reply_with_version(self, path):
        status, h = self._head(path)
        if status != 200:
            return self._error(502, "AdapterError", "object written but HEAD answered %d" % status)
        out = [("ETag", h.get("etag", "")), ("x-goog-generation", h.get("x-goog-generation", ""))]
        self._reply(200, [(k, v) for k, v in out if v])

    def log_message(self, fmt, *args):
        if VERBOSE:
            sys.stderr.write("gcs-adapter: %s\n" % (fmt % args))


def main() -> None:
    global UPSTREAM, VERBOSE
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
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
