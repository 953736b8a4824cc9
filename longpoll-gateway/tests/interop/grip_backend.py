"""A GRIP backend written with the PyPI package `gripcontrol`, for the
gateway's interop test (longpoll-gateway/tests/interop.rs).

It checks Grip-Sig with gripcontrol's validate_sig, asks for holds and
streams with gripcontrol's header and JSON helpers, and publishes with
GripPubControl, exactly as a backend written for Pushpin would.

Usage: grip_backend.py SIG_KEY SIG_ISS PUBLISH_ISS PUBLISH_KEY
Prints "listening on http://127.0.0.1:PORT", then serves until killed.

GET  /sig                      "valid" when Grip-Sig verifies, else "invalid"
GET  /headers-hold/CHANNEL     hold via Grip-* headers (if Grip-Sig verifies)
GET  /json-hold/CHANNEL?timeout=N
                               hold via application/grip-instruct
GET  /stream-hold/CHANNEL?last=ID&keep=1
                               a stream hold (create_hold_stream) on CHANNEL with
                               prev-id ID, first body "stream open\n"; with keep,
                               a keep-alive "keep-alive\n" every second
POST /publish/CHANNEL?control=URL
                               publish the request body (text) with GripPubControl
POST /publish-bin/CHANNEL?control=URL
                               publish the bytes 00 01 ff
POST /publish-stream/CHANNEL?control=URL&id=ID&prev=PREV
                               publish the request body as an http-stream item
POST /publish-close/CHANNEL?control=URL
                               publish an http-stream close
"""

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from gripcontrol import (
    Channel,
    GripPubControl,
    HttpResponseFormat,
    HttpStreamFormat,
    Response,
    create_grip_channel_header,
    create_hold_response,
    create_hold_stream,
    validate_sig,
)

SIG_KEY, SIG_ISS, PUBLISH_ISS, PUBLISH_KEY = sys.argv[1:5]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def proxied(self):
        sig = self.headers.get("Grip-Sig")
        return sig is not None and validate_sig(sig, SIG_KEY, SIG_ISS)

    def reply(self, code, body, headers=()):
        if isinstance(body, str):
            body = body.encode("utf-8")
        self.send_response(code)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        url = urlparse(self.path)
        query = parse_qs(url.query)
        parts = url.path.strip("/").split("/")
        if parts == ["sig"]:
            return self.reply(200, "valid" if self.proxied() else "invalid")
        if len(parts) == 2 and parts[0] == "headers-hold":
            if not self.proxied():
                return self.reply(200, "not proxied")
            return self.reply(
                200,
                "nothing yet",
                [
                    ("Content-Type", "text/plain"),
                    ("Grip-Hold", "response"),
                    ("Grip-Channel", create_grip_channel_header([Channel(parts[1])])),
                    ("Grip-Timeout", "60"),
                ],
            )
        if len(parts) == 2 and parts[0] == "json-hold":
            if not self.proxied():
                return self.reply(200, "not proxied")
            timeout = int(query.get("timeout", ["60"])[0])
            instruct = create_hold_response(
                Channel(parts[1]),
                Response(code=200, headers={"X-Backend": "py"}, body="timed out"),
                timeout=timeout,
            )
            return self.reply(
                200, instruct, [("Content-Type", "application/grip-instruct")]
            )
        if len(parts) == 2 and parts[0] == "stream-hold":
            if not self.proxied():
                return self.reply(200, "not proxied")
            last = query.get("last", [None])[0]
            instruct = create_hold_stream(
                Channel(parts[1], prev_id=last),
                Response(headers={"Content-Type": "text/plain"}, body="stream open\n"),
            )
            headers = [("Content-Type", "application/grip-instruct")]
            if "keep" in query:
                # gripcontrol has no keep-alive helper: the header, as
                # django-grip writes it.
                headers.append(("Grip-Keep-Alive", "keep-alive\\n; format=cstring; timeout=1"))
            return self.reply(200, instruct, headers)
        return self.reply(404, "not found")

    def do_POST(self):
        url = urlparse(self.path)
        query = parse_qs(url.query)
        parts = url.path.strip("/").split("/")
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length) if length else b""
        kinds = ("publish", "publish-bin", "publish-stream", "publish-close")
        if len(parts) != 2 or parts[0] not in kinds:
            return self.reply(404, "not found")
        publisher = GripPubControl(
            {
                "control_uri": query["control"][0],
                "control_iss": PUBLISH_ISS,
                "key": PUBLISH_KEY,
            }
        )
        stream = parts[0] in ("publish-stream", "publish-close")
        if parts[0] == "publish":
            message = HttpResponseFormat(
                code=200,
                headers={"Content-Type": "text/plain", "X-From": "gripcontrol"},
                body=body.decode("utf-8"),
            )
        elif parts[0] == "publish-bin":
            message = HttpResponseFormat(body=b"\x00\x01\xff")
        elif parts[0] == "publish-stream":
            message = HttpStreamFormat(body.decode("utf-8"))
        else:
            message = HttpStreamFormat(close=True)
        item_id = query.get("id", [None])[0]
        prev_id = query.get("prev", [None])[0]
        try:
            if stream:
                publisher.publish_http_stream(
                    parts[1], message, id=item_id, prev_id=prev_id, blocking=True
                )
            else:
                publisher.publish_http_response(parts[1], message, blocking=True)
        except Exception as err:  # the test shows the publisher's own error
            return self.reply(500, "publish failed: %s" % err)
        finally:
            publisher.close()
        return self.reply(200, "published")


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print("listening on http://127.0.0.1:%d" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
