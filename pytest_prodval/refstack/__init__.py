"""The embedded reference game stack behind `--env local`: a game API (HTTP + WebSocket) and an AI service.

It is built on Starlette and uvicorn because they are small, well-kept ASGI pieces that
serve HTTP and WebSocket from one application, run in-process on loopback without any
outside infrastructure, and add no framework magic: every route, limit and fault knob
is plain, readable Python, so a test can reason about exactly what the target did.
State lives in memory; the stack is a load-test target, not a product (see
`pytest_prodval.refstack.launcher.LocalStack` to start it, and design.md §1 for its API).
"""
