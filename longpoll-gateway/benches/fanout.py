"""Fan-out figures for longpoll-gateway: N clients held on one channel, one
publish, how long until all N have it, and the gateway's memory while they
are held. Loopback only; bounded in count and time.

    cargo build --release -p longpoll-gateway
    python3 longpoll-gateway/benches/fanout.py target/release/longpoll-gateway 5000
    python3 longpoll-gateway/benches/fanout.py target/release/longpoll-gateway 5000 route
    python3 longpoll-gateway/benches/fanout.py target/release/longpoll-gateway 10000 stream

It starts a minimal asyncio upstream that answers every request with a hold
on channel `fan`, starts the gateway in front of it, opens N keep-alive
connections, waits until N holds are counted in /metrics, publishes once,
and reads every client's share. The gateway is stopped by its PID. Modes:

- (default) GRIP response holds (`Grip-Hold: response`), one http-response
  publish answering all of them;
- `route`: the clients poll a `--route` held by the gateway itself (no
  upstream involved), for comparison;
- `stream`: GRIP streams (`Grip-Hold: stream`), each client reads the first
  body and stays connected; one http-stream publish is appended to all.
"""

import asyncio
import json
import os
import re
import subprocess
import sys
import time

HOLD = (
    b"HTTP/1.1 200 OK\r\nGrip-Hold: response\r\nGrip-Channel: fan\r\n"
    b"Grip-Timeout: 120\r\nContent-Length: 0\r\n\r\n"
)
STREAM = (
    b"HTTP/1.1 200 OK\r\nGrip-Hold: stream\r\nGrip-Channel: fan\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 6\r\n\r\nstart\n"
)


def upstream(answer):
    async def serve(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not head:
                    return
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.CancelledError, ConnectionError):
            pass
        finally:
            writer.close()

    return serve


async def http(addr, method, path, body=b""):
    reader, writer = await asyncio.open_connection(*addr)
    writer.write(
        b"%s %s HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
        % (method.encode(), path.encode(), len(body))
        + body
    )
    await writer.drain()
    data = await reader.read()
    writer.close()
    return data


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))
    await reader.readexactly(length)
    return head.split(b" ", 2)[1]


async def read_item(reader):
    await reader.readuntil(b"END\n")
    return b"200"


def all_written(publish_addr, n, started):
    """How long until the gateway counts the item written to all n streams,
    polled every 10 ms from a thread of its own (with blocking sockets), so
    that the clients' event loop, busy reading, does not delay it much."""
    import socket

    while True:
        with socket.create_connection(publish_addr) as conn:
            conn.sendall(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
        found = re.search(rb"^longpoll_gateway_grip_stream_items_total (\d+)", data, re.M)
        if int(found.group(1)) >= n:
            return time.monotonic() - started
        time.sleep(0.01)


async def main(binary, n, mode):
    route = mode == "route"
    stream = mode == "stream"
    answer = STREAM if stream else HOLD
    server = await asyncio.start_server(upstream(answer), "127.0.0.1", 0, backlog=4096)
    up = server.sockets[0].getsockname()
    gateway = subprocess.Popen(
        [binary, "--upstream", "http://%s:%d" % up, "--listen", "127.0.0.1:0",
         "--publish-listen", "127.0.0.1:0", "--sig-key", "bench"]
        + (["--route", "/poll/{id}", "--max-per-id", str(n), "--timeout", "120"] if route else []),
        stdout=subprocess.PIPE, env=dict(os.environ, RUST_LOG="warn"),
    )
    try:
        listen = gateway.stdout.readline().decode().split("http://")[1].strip()
        publish = gateway.stdout.readline().decode().split("http://")[1].strip()
        client_addr = (listen.split(":")[0], int(listen.split(":")[1]))
        publish_addr = (publish.split(":")[0], int(publish.split(":")[1]))
        idle_rss = rss_kib(gateway.pid)

        conns = []
        for start in range(0, n, 500):
            batch = await asyncio.gather(
                *[asyncio.open_connection(*client_addr) for _ in range(start, min(n, start + 500))]
            )
            for reader, writer in batch:
                writer.write(b"GET /poll/fan HTTP/1.1\r\nhost: x\r\n\r\n")
            if stream:
                # Each stream's head and first body have come.
                await asyncio.gather(*[reader.readuntil(b"start\n") for reader, _ in batch])
            conns.extend(batch)
        deadline = time.monotonic() + 60
        while True:
            metrics = (await http(publish_addr, "GET", "/metrics")).decode()
            gauge = {
                "route": "longpoll_waiters",
                "stream": "longpoll_gateway_stream_waiters",
            }.get(mode, "longpoll_gateway_grip_holding")
            holding = int(re.search(r"^%s (\d+)" % gauge, metrics, re.M).group(1))
            if holding == n:
                break
            if time.monotonic() > deadline:
                raise SystemExit("only %d of %d held" % (holding, n))
            await asyncio.sleep(0.05)
        held_rss = rss_kib(gateway.pid)

        format = "http-stream" if stream else "http-response"
        field = "content" if stream else "body"
        item = {"items": [{"channel": "fan", "formats": {format: {field: "x" * 96 + "END\n"}}}]}
        started = time.monotonic()
        if route:
            await http(publish_addr, "POST", "/publish/fan", b"x" * 100)
        else:
            await http(publish_addr, "POST", "/publish/", json.dumps(item).encode())
        read = read_item if stream else read_response
        written = (
            asyncio.get_running_loop().run_in_executor(None, all_written, publish_addr, n, started)
            if stream
            else None
        )
        statuses = await asyncio.wait_for(
            asyncio.gather(*[read(reader) for reader, _ in conns]), 60
        )
        elapsed = time.monotonic() - started
        assert all(status == b"200" for status in statuses), set(statuses)
        kind = {"route": "--route polls", "stream": "GRIP streams"}.get(mode, "GRIP holds")
        print("clients held:              %d (%s)" % (n, kind))
        print("gateway RSS idle:          %.1f MiB" % (idle_rss / 1024))
        print("gateway RSS with holds:    %.1f MiB (%.1f KiB per held client)"
              % (held_rss / 1024, (held_rss - idle_rss) / n))
        print("publish -> all %d answered: %.0f ms" % (n, elapsed * 1000))
        if written:
            print("publish -> all %d written by the gateway: %.0f ms (from /metrics)"
                  % (n, await written * 1000))
        for _, writer in conns:
            writer.close()
    finally:
        gateway.terminate()
        gateway.wait(timeout=30)
        server.close()


if __name__ == "__main__":
    asyncio.run(
        main(
            sys.argv[1],
            int(sys.argv[2]) if len(sys.argv) > 2 else 5000,
            sys.argv[3] if len(sys.argv) > 3 else "hold",
        )
    )
