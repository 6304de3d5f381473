"""The application as scripts/web.sh serves it under uvicorn: config.asgi, except that a
WebSocket message sent after the socket closed is dropped, as daphne drops it.

A consumer forwards group events as they come, and one can arrive between the browser
closing its tab and the consumer's disconnect; uvicorn raises on that send, which logged
"Exception in ASGI application" for every socket closed during a training run.
"""

from config.asgi import application as platform_application


async def application(scope, receive, send):
    if scope["type"] != "websocket":
        return await platform_application(scope, receive, send)
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

    return await platform_application(scope, receive_noting_close, send_while_open)
