"""The platform's REST API over HTTP: the saved login, requests with its token, and the
API's one error shape turned into an exception that reads as plain words."""

import json
import os
import stat
from pathlib import Path
from urllib.parse import unquote, urljoin

import requests

from dlp.upload import MultipartUpload

TIMEOUT = 60  # seconds to wait for an answer; uploads and downloads stream
CHUNK = 1 << 16


class ApiError(Exception):
    """Something the command cannot do, said in words; `status` is the HTTP status, if any."""

    def __init__(self, message, status=None, errors=None):
        super().__init__(message)
        self.status = status
        self.errors = errors or {}


# --- The saved login ---------------------------------------------------------------------------


def config_path():
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "dlp" / "config.json"


def save_login(url, token):
    """Writes the URL and token readable by this user only (the folder 0700, the file 0600)."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(stat.S_IRWXU)
    partial = path.with_suffix(".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        json.dump({"url": url, "token": token}, file)
    os.chmod(partial, 0o600)  # also when an old partial file was left with other bits
    partial.replace(path)
    return path


def load_login():
    """The URL and token: DLP_URL and DLP_TOKEN if set, else the saved login."""
    saved = {}
    path = config_path()
    if path.exists():
        try:
            saved = json.loads(path.read_text())
        except ValueError:
            raise ApiError(f"{path} is not a saved login; run `dlp login` again.") from None
    url = os.environ.get("DLP_URL") or saved.get("url")
    token = os.environ.get("DLP_TOKEN") or saved.get("token")
    if not url or not token:
        raise ApiError("Not logged in: run `dlp login URL` first (or set DLP_URL and DLP_TOKEN).")
    return url, token


def normalise_url(url):
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    if not url.startswith(("http://", "https://")):
        raise ApiError(f"{url} is not an http:// or https:// address.")
    return url.rstrip("/") + "/"


# --- Requests --------------------------------------------------------------------------------


class Client:
    def __init__(self, url, token):
        self.url = normalise_url(url)
        self.token = token
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"
        self.session.headers["Accept"] = "application/json"

    @classmethod
    def from_login(cls):
        return cls(*load_login())

    def endpoint(self, path):
        return urljoin(self.url, "api/" + path.lstrip("/"))

    def request(self, method, path, *, stream=False, **kwargs):
        try:
            response = self.session.request(method, self.endpoint(path), timeout=TIMEOUT, stream=stream, **kwargs)
        except requests.ConnectionError:
            raise ApiError(f"Cannot reach {self.url}: is the platform running there?") from None
        except requests.Timeout:
            raise ApiError(f"{self.url} did not answer within {TIMEOUT} s.") from None
        if response.status_code >= 400:
            raise error_of(response)
        return response

    def get(self, path, **params):
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None}).json()

    def post(self, path, body=None):
        return self.request("POST", path, json=body if body is not None else {}).json()

    def upload(self, path, fields, files, progress=None):
        """A multipart POST that reads each file in chunks as it is sent; `progress(sent, total)`."""
        body = MultipartUpload(fields, files, progress=progress)
        headers = {"Content-Type": body.content_type, "Content-Length": str(len(body))}
        return self.request("POST", path, data=body, headers=headers).json()

    def download(self, path, folder, progress=None):
        """Saves a file answer under `folder` by the name the server gives; returns its path."""
        response = self.request("GET", path, stream=True)
        name = filename_of(response) or Path(path.rstrip("/")).name
        target = Path(folder) / name
        total = int(response.headers.get("Content-Length") or 0)
        partial = target.with_name(target.name + ".partial")
        done = 0
        with open(partial, "wb") as file:
            for chunk in response.iter_content(CHUNK):
                file.write(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
        partial.replace(target)
        return target

    def pages(self, path, limit=None, **params):
        """Every row of a paged list (or the first `limit`)."""
        rows, offset = [], 0
        while True:
            page = self.get(path, offset=offset, limit=min(limit or 100, 100), **params)
            rows.extend(page["results"])
            offset += len(page["results"])
            if not page.get("next") or not page["results"] or (limit and len(rows) >= limit):
                return rows[:limit] if limit else rows


def error_of(response):
    """The API's `{"detail", "errors": {field: [...]}}` as words: the detail, then each field."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or "detail" not in body:
        reason = response.reason or "error"
        return ApiError(f"The server answered {response.status_code} {reason}.", status=response.status_code)
    errors = body.get("errors") or {}
    lines = [f"{name}: {' '.join(messages)}" for name, messages in errors.items()]
    general = body["detail"]
    # The detail repeats the fields' messages after the general ones; keep only what it adds.
    for line in lines:
        general = general.replace(line, "").strip()
    message = "\n".join([text for text in [general] if text] + lines) or f"Error {response.status_code}."
    return ApiError(message, status=response.status_code, errors=errors)


def filename_of(response):
    """The attachment's name (RFC 6266: `filename*=utf-8''…` for a name that is not ASCII),
    without any folder in it."""
    names = {}
    for part in response.headers.get("Content-Disposition", "").split(";"):
        key, _, value = part.strip().partition("=")
        names[key.lower()] = value.strip()
    if names.get("filename*", "").lower().startswith("utf-8''"):
        name = unquote(names["filename*"][len("utf-8''") :])
    else:
        name = names.get("filename", "").strip('"')
    return Path(name.replace("\\", "/")).name or None
