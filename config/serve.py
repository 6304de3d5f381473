"""The application as scripts/web.sh serves it under uvicorn: config.asgi, with two changes.

Pages take turns (WEB_PAGE_THREADS, default 1 per process). Django runs each page's view in
a thread of its own, and every such thread competes for the interpreter lock with the event
loop that forwards the sockets' events. Fifty pages at once left the loop one turn in
fifty-one: events for 200 watchers arrived 2 s late at p50 and 46 s at p99, and a third had
not arrived 5 s after the drill ended (bench.load_drill). So at most WEB_PAGE_THREADS pages
per process run at once; the others wait in the loop, where waiting costs nothing. A
request takes its turn when its body has been read (an upload does not hold one while it
arrives) and gives it back when its response starts (nor does a download while it streams),
or after WEB_PAGE_TURN_SECONDS (0.5) if it is still working then: a page that waits on
another site, or a long computation, must not hold a whole process's pages behind it.
0 turns lifts the limit.

A WebSocket message sent after the socket closed is dropped, as daphne drops it. A consumer
forwards group events as they come, and one can arrive between the browser closing its tab
and the consumer's disconnect; uvicorn raises on that send, which logged "Exception in ASGI
application" for every socket closed during a training run.
"""

import asyncio
import os

from config.asgi import application as platform_application


def pages_in_turn(app, turns, longest):
    """`app` with at most `turns` HTTP requests between their body's end and their
    response's start at once (per event loop), each for at most `longest` seconds: one that
    takes longer (a page waiting on another site) gives its turn up then and goes on without
    one. Other scopes pass untouched."""
    semaphore = None  # made in the serving loop, at the first request

    async def application(scope, receive, send):
        nonlocal semaphore
        if scope["type"] != "http" or turns <= 0:
            return await app(scope, receive, send)
        if semaphore is None:
            semaphore = asyncio.Semaphore(turns)
        holding = taken = False
        timer = None

        def end_turn():
            nonlocal holding
            if holding:
                holding = False
                semaphore.release()

        async def receive_then_take_turn():
            nonlocal holding, taken, timer
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body") and not taken:
                await semaphore.acquire()
                holding = taken = True
                timer = asyncio.get_running_loop().call_later(longest, end_turn)
            return message

        async def send_ending_turn(message):
            if message["type"] == "http.response.start":
                end_turn()
            await send(message)

        try:
            return await app(scope, receive_then_take_turn, send_ending_turn)
        finally:
            end_turn()
            if timer is not None:
                timer.cancel()

    return application


def no_sends_after_close(app):
    """`app` with a WebSocket message sent after the socket closed dropped."""

    async def application(scope, receive, send):
        if scope["type"] != "websocket":
            return await app(scope, receive, send)
        closed = False

        async def receive_noting_close():
            nonlocal closed
            message = await receive()
            if message["type"] == "websocket.disconnect":
                closed = True
            return message

        async def send_while_open(message):
            nonlocal closed
            if closed:
                return
            if message["type"] == "websocket.close":
                closed = True
            await send(message)

        return await app(scope, receive_noting_close, send_while_open)

    return application


application = no_sends_after_close(
    pages_in_turn(
        platform_application,
        turns=int(os.environ.get("WEB_PAGE_THREADS", "1")),
        longest=float(os.environ.get("WEB_PAGE_TURN_SECONDS", "0.5")),
    )
)
