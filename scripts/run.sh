#!/usr/bin/env bash
# Start the whole platform on this machine in the foreground: the web tier (scripts/web.sh:
# pages, API, WebSockets) and the RQ workers (dataset builds, training). Ctrl-C stops all
# of it, and the Redis that scripts/setup.sh started (never one that was running before).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p var

# A secret key made once per installation and kept out of the repository.
if [ -z "${DJANGO_SECRET_KEY:-}" ]; then
  [ -s var/secret_key ] || .venv/bin/python -c "import secrets; print(secrets.token_urlsafe(50))" > var/secret_key
  DJANGO_SECRET_KEY=$(cat var/secret_key)
  export DJANGO_SECRET_KEY
fi
export HOST=${HOST:-127.0.0.1} PORT=${PORT:-8000}
samples=${SAMPLES_ROOT:-$PWD/var/samples}
export DATA_IMPORT_ROOTS=${DATA_IMPORT_ROOTS:-$samples}

.venv/bin/python manage.py migrate --no-input -v 0
.venv/bin/python manage.py collectstatic --no-input -v 0
.venv/bin/python -m datasets.mnist_sample "$samples"
.venv/bin/python manage.py ensure_admin

export WEB_PROCESSES=${WEB_PROCESSES:-$(nproc)}
cat <<TXT

  The platform runs at   http://$HOST:$PORT/  ($WEB_PROCESSES web processes; set WEB_PROCESSES to change)
  Sample images (MNIST): $samples/mnist/train and $samples/mnist/test
  Import roots (DATA_IMPORT_ROOTS, ":"-separated: datasets are made only from folders under these):
$(echo "$DATA_IMPORT_ROOTS" | tr ':' '\n' | sed 's/^/    /')
  Stop it with Ctrl-C.

TXT
trap '.venv/bin/python scripts/ensure_redis.py --stop' EXIT
.venv/bin/honcho start -f Procfile
