"""The embedded reference stack behind `--env local`: a RingRift-shaped game API and an AI service.

It speaks RingRift's API (docs/contract.md §1-§5): REST routes with RingRift's envelopes,
Socket.IO v4 on `/socket.io/` served by python-socketio (no hand-rolled framing), its
named rate limiters and bypass, and its Prometheus metric names. The game itself is a
simulation (engine.py): the protocol is real, the rules are not. State lives in memory;
the stack is a load-test target, not a product. `pytest_prodval.refstack.launcher`
starts it (also standalone: `python -m pytest_prodval.refstack.launcher`).

Layout: faults (knobs) · security (users, JWTs) · ratelimit (limiters, bypass) · metrics ·
engine (simulated rules) · games (records, lifecycle) · aiclient (AI turns, fallback) ·
play (game flow, events) · sockets (Socket.IO handlers) · api (HTTP, the app) · ai (the
AI service) · server (envelopes, CLI, uvicorn) · launcher (processes).
"""
