"""A multipart/form-data body that is read from disk while it is sent, so an archive of any
size takes no memory and the progress shown is what has gone out on the socket."""

import os
import secrets
from pathlib import Path

CHUNK = 1 << 16


class MultipartUpload:
    """A file-like body for requests: `read(n)` hands out the next bytes, `len()` the total.

    `fields` are form values (str); `files` maps a field name to a local path."""

    def __init__(self, fields, files, progress=None):
        self.boundary = "dlp-" + secrets.token_hex(16)
        self.progress = progress
        self.parts = []  # bytes, or an open file, in order
        for name, value in fields.items():
            self.parts.append(self._header(name) + b"\r\n" + str(value).encode() + b"\r\n")
        self.files = []
        for name, path in files.items():
            path = Path(path)
            filename = path.name.replace('"', "%22")
            self.parts.append(
                self._header(name, f'; filename="{filename}"') + b"Content-Type: application/octet-stream\r\n\r\n"
            )
            file = open(path, "rb")  # closed by read() at its end, or close()
            self.files.append(file)
            self.parts.append(file)
            self.parts.append(b"\r\n")
        self.parts.append(f"--{self.boundary}--\r\n".encode())
        self.total = sum(os.fstat(p.fileno()).st_size if hasattr(p, "read") else len(p) for p in self.parts)
        self.sent = 0
        self._pending = b""

    @property
    def content_type(self):
        return f"multipart/form-data; boundary={self.boundary}"

    def _header(self, name, extra=""):
        return f'--{self.boundary}\r\nContent-Disposition: form-data; name="{name}"{extra}\r\n'.encode()

    def __len__(self):
        return self.total

    def read(self, size=-1):
        size = CHUNK if size is None or size < 0 else size
        while len(self._pending) < size and self.parts:
            part = self.parts[0]
            if isinstance(part, bytes):
                self._pending += part
                self.parts.pop(0)
                continue
            chunk = part.read(size - len(self._pending))
            if chunk:
                self._pending += chunk
            else:
                part.close()
                self.parts.pop(0)
        data, self._pending = self._pending[:size], self._pending[size:]
        self.sent += len(data)
        if self.progress and data:
            self.progress(self.sent, self.total)
        return data

    def close(self):
        for file in self.files:
            file.close()
