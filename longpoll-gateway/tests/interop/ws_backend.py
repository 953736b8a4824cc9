"""A WebSocket-over-HTTP backend written with the PyPI package `gripcontrol`
(WebSocketContext, decode/encode_websocket_events, GripPubControl), answering
as django-grip's middleware does, for longpoll-gateway/tests/websocket.rs.

Usage: ws_backend.py SIG_KEY SIG_ISS PUBLISH_ISS PUBLISH_KEY
Prints "listening on http://127.0.0.1:PORT", then serves until killed.

Every POST is a socket's events. OPEN is accepted (Sec-WebSocket-Extensions:
grip), the socket subscribed to channel `room`, `Set-Meta-User: alice` set.
Messages:
  "close"           the backend closes with code 4000
  "publish:TEXT"    TEXT published as a ws-message on `room` (control URL from
                    the query's `control`)
  "unsubscribe"     the socket leaves `room`
  "interval"        answered with Keep-Alive-Interval: 1; the gateway's empty
                    POSTs that follow are answered with the message "tick"
  "keep-alive"      a keep-alive control: "still here" every second
  anything else     echoed as "echo:MESSAGE user=META-USER id=CONNECTION-ID"
With `greet` in the query, the OPEN answer also sends "subscribed" after the
subscribe.
A CLOSE from the client is answered with CLOSE of the same code.
The backend refuses sockets whose Grip-Sig does not verify (403).
"""

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from struct import pack
from urllib.parse import parse_qs, urlparse

from pubcontrol import Item
from gripcontrol import (
    GripPubControl,
    WebSocketContext,
    WebSocketEvent,
    WebSocketMessageFormat,
    decode_websocket_events,
    encode_websocket_events,
    validate_sig,
    websocket_control_message,
)

SIG_KEY, SIG_ISS, PUBLISH_ISS, PUBLISH_KEY = sys.argv[1:5]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, code, body, headers=()):
        self.send_response(code)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length) if length else b""
        sig = self.headers.get("Grip-Sig")
        if sig is None or not validate_sig(sig, SIG_KEY, SIG_ISS):
            return self.reply(403, b"not proxied")
        if not self.headers.get("Content-Type", "").startswith(
            "application/websocket-events"
        ):
            return self.reply(400, b"not websocket events")
        query = parse_qs(urlparse(self.path).query)
        meta = {}
        for name, value in self.headers.items():
            if name.lower().startswith("meta-"):
                meta[name[5:].lower()] = value
        cid = self.headers.get("Connection-Id")
        ws = WebSocketContext(cid, meta, decode_websocket_events(body))
        extra = []
        if not ws.in_events:
            # The gateway's Keep-Alive-Interval POST.
            ws.send("tick")
        if ws.is_opening():
            ws.accept()
            ws.subscribe("room")
            ws.meta["user"] = "alice"
            if "greet" in query:
                # In the same answer, after the subscribe.
                ws.send("subscribed")
        while ws.can_recv():
            message = ws.recv()
            if message is None:
                ws.close(ws.close_code)
                break
            if message == "close":
                ws.close(4000)
            elif message.startswith("publish:"):
                publisher = GripPubControl(
                    {
                        "control_uri": query["control"][0],
                        "control_iss": PUBLISH_ISS,
                        "key": PUBLISH_KEY,
                    }
                )
                try:
                    publisher.publish(
                        "room", Item(WebSocketMessageFormat(message[8:])), blocking=True
                    )
                finally:
                    publisher.close()
            elif message == "unsubscribe":
                ws.unsubscribe("room")
            elif message == "interval":
                extra.append(("Keep-Alive-Interval", "1"))
            elif message == "keep-alive":
                ws.send_control(
                    websocket_control_message(
                        "keep-alive", {"content": "still here", "timeout": 1}
                    )
                )
            else:
                ws.send("echo:%s user=%s id=%s" % (message, meta.get("user"), cid))
        events = []
        if ws.accepted:
            events.append(WebSocketEvent("OPEN"))
        events.extend(ws.out_events)
        if ws.closed:
            events.append(WebSocketEvent("CLOSE", pack(">H", ws.out_close_code)))
        headers = [("Content-Type", "application/websocket-events")] + extra
        if ws.accepted:
            headers.append(("Sec-WebSocket-Extensions", "grip"))
        for key, value in ws.meta.items():
            if ws.orig_meta.get(key) != value:
                headers.append(("Set-Meta-" + key, value))
        self.reply(200, encode_websocket_events(events), headers)


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print("listening on http://127.0.0.1:%d" % server.server_address[1], flush=True)
server.serve_forever()
