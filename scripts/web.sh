#!/usr/bin/env bash
# The web tier: pages, the API and WebSockets (config.asgi) on HOST:PORT, served by
# WEB_PROCESSES uvicorn processes (default: one per CPU core). uvicorn's parent binds the
# port once and its worker processes accept from that one socket; it restarts a worker
# that dies. Each process keeps a pool of up to DATABASE_POOL_SIZE PostgreSQL connections.
# A proxy in front at an address in FORWARDED_ALLOW_IPS (default: this machine) is believed
# about the client's address (X-Forwarded-For), which the audit log and the login limit use.
set -euo pipefail
cd "$(dirname "$0")/.."
processes=${WEB_PROCESSES:-$(nproc)}
export DATABASE_POOL_SIZE=${DATABASE_POOL_SIZE:-10}
# No lifespan: Channels' router speaks only http and websocket.
exec .venv/bin/uvicorn config.serve:application --host "${HOST:-127.0.0.1}" --port "${PORT:-8000}" \
  --workers "$processes" --ws websockets-sansio --ws-per-message-deflate false --lifespan off \
  --proxy-headers --forwarded-allow-ips "${FORWARDED_ALLOW_IPS:-127.0.0.1}" --timeout-graceful-shutdown 10 "$@"
