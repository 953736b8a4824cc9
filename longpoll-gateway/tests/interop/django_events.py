"""A minimal Django app serving Server-Sent Events with the PyPI package
`django-eventstream` (and its `django-grip`), for the gateway's interop and
browser tests (longpoll-gateway/tests/interop.rs, browser_sse.rs).

It is set up as django-eventstream's README says for use behind a GRIP
proxy: django-grip's middleware, GRIP_PROXIES naming the gateway (its
Grip-Sig is verified with the sig key; publishes are JWT-signed with the
publish key), and the database storage so that events are kept and a
client that reconnects with Last-Event-ID gets what it missed.

Usage: django_events.py SIG_KEY SIG_ISS PUBLISH_ISS PUBLISH_KEY
Prints "listening on http://127.0.0.1:PORT" (so that the gateway can be
started in front of it), reads one line from stdin, the gateway's publish
URL, prints "ready", then serves until killed.

GET /events/            the SSE stream of channel "test" (django-eventstream)
GET /send?n=N           send_event("test", "message", {"n": N}), blocking
GET /                   a page whose EventSource lists the events it gets
POST /ws/               a WebSocket-over-HTTP endpoint (django-grip's
                        request.wscontext): accepts, subscribes to channel
                        "room", answers "publish" by publishing a ws-message
                        "from django" to "room" (django_grip.publish), echoes
                        anything else as "django:MESSAGE"
"""

import os
import sys
import tempfile
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

import django
from django.conf import settings


class Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


SIG_KEY, SIG_ISS, PUBLISH_ISS, PUBLISH_KEY = sys.argv[1:5]
DATA = tempfile.mkdtemp(prefix="django-events-")
SERVER = Server(("127.0.0.1", 0), Quiet)
print("listening on http://127.0.0.1:%d" % SERVER.server_address[1], flush=True)
CONTROL_URI = sys.stdin.readline().strip()

settings.configure(
    DEBUG=False,
    SECRET_KEY="interop-only-secret-of-at-least-32-bytes",
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    USE_TZ=True,
    INSTALLED_APPS=[
        "django.contrib.contenttypes",
        "django.contrib.auth",
        "django_eventstream",
    ],
    MIDDLEWARE=["django_grip.GripMiddleware"],
    DATABASES={
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.path.join(DATA, "events.sqlite3"),
        }
    },
    GRIP_PROXIES=[
        {
            "control_uri": CONTROL_URI,
            "control_iss": PUBLISH_ISS,
            "key": PUBLISH_KEY,
            "verify_key": SIG_KEY,
            "verify_iss": SIG_ISS,
        }
    ],
    EVENTSTREAM_STORAGE_CLASS="django_eventstream.storage.DjangoModelStorage",
)
django.setup()

from django.core.management import call_command  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpResponse  # noqa: E402
from django.urls import include, path  # noqa: E402

import django_eventstream  # noqa: E402
from django_eventstream import send_event  # noqa: E402

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>django-eventstream through longpoll-gateway</title>
<ul id="events"></ul>
<script>
  window.opened = 0;
  window.received = [];
  const source = new EventSource('/events/');
  source.addEventListener('stream-open', () => { window.opened += 1; });
  source.addEventListener('message', (e) => {
    window.received.push({ id: e.lastEventId, n: JSON.parse(e.data).n });
    const li = document.createElement('li');
    li.textContent = e.lastEventId + ' ' + e.data;
    document.getElementById('events').appendChild(li);
  });
</script>
"""


def send(request):
    send_event("test", "message", {"n": int(request.GET["n"])}, async_publish=False)
    return HttpResponse("sent\n", content_type="text/plain")


def ws(request):
    from django_grip import publish
    from gripcontrol import WebSocketMessageFormat

    context = getattr(request, "wscontext", None)
    if context is None:
        return HttpResponse("not a WebSocket-over-HTTP request\n", status=400)
    if context.is_opening():
        context.accept()
        context.subscribe("room")
    while context.can_recv():
        message = context.recv()
        if message is None:
            context.close()
            break
        if message == "publish":
            publish("room", WebSocketMessageFormat("from django"), blocking=True)
        else:
            context.send("django:" + message)
    return HttpResponse()


def page(request):
    return HttpResponse(PAGE, content_type="text/html; charset=utf-8")


urlpatterns = [
    path("events/", include(django_eventstream.urls), {"channels": ["test"]}),
    path("send", send),
    path("ws/", ws),
    path("", page),
]


def main():
    call_command("migrate", verbosity=0)
    SERVER.set_app(get_wsgi_application())
    print("ready", flush=True)
    SERVER.serve_forever()


if __name__ == "__main__":
    main()
