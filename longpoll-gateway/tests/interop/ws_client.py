"""A WebSocket client written with the PyPI package `websockets`, for
longpoll-gateway/tests/websocket.rs: through the gateway to
ws_backend.py, it sends "hi" and checks the echo, waits for a ws-message
published to the socket's channel (the test publishes once it prints
"subscribed"), then closes with code 4100 and checks the backend's close
answers with the same code.

Usage: ws_client.py WS_URL
Prints "subscribed", then "ok" at the end; exits non-zero on a failure.
"""

import asyncio
import sys

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed


async def main(url):
    async with connect(url) as socket:
        await socket.send("hi")
        echo = await asyncio.wait_for(socket.recv(), 10)
        assert echo.startswith("echo:hi user=alice id="), echo
        print("subscribed", flush=True)
        published = await asyncio.wait_for(socket.recv(), 10)
        assert published == "to python", published
        await socket.close(code=4100)
        assert socket.close_code == 4100, socket.close_code
    print("ok", flush=True)


asyncio.run(main(sys.argv[1]))
