"""What the commands print: aligned tables and key/value lists for people, JSON for scripts,
and a progress bar on stderr."""

import json
import sys
import time


def print_json(data):
    print(json.dumps(data, indent=2, ensure_ascii=False))


def cell(value):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ", ".join(cell(item) for item in value) or "-"
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    text = str(value)
    return text.replace("\n", " ")


def print_table(rows, columns, empty="Nothing here."):
    """`columns`: (heading, function of a row) pairs."""
    if not rows:
        print(empty)
        return
    table = [[heading.upper() for heading, _ in columns]]
    table += [[cell(get(row)) for _, get in columns] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    for line in table:
        print("  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip())


def print_fields(row, names):
    width = max(len(name) for name in names)
    for name in names:
        if name in row:
            print(f"{name.ljust(width)}  {cell(row[name])}")


def percent(value):
    return "-" if value is None else f"{value * 100:.2f}%"


def size(count):
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000


class ProgressBar:
    """`bar(done, total)` redraws a line on stderr at most ten times a second; `bar.end()`."""

    def __init__(self, label, width=30, stream=None):
        self.label = label
        self.width = width
        self.stream = stream or sys.stderr
        self.last = 0.0
        self.drawn = False
        self.state = (0, 0)

    def __call__(self, done, total):
        self.state = (done, total)
        now = time.monotonic()
        if now - self.last >= 0.1 or (total and done >= total):
            self.last = now
            self.draw()

    def draw(self):
        done, total = self.state
        if total:
            filled = int(self.width * done / total)
            bar = "#" * filled + " " * (self.width - filled)
            line = f"{self.label} [{bar}] {done * 100 // total:3d}% {size(done)} of {size(total)}"
        else:
            line = f"{self.label} {size(done)}"
        self.stream.write("\r" + line)
        self.stream.flush()
        self.drawn = True

    def end(self):
        if self.drawn:
            self.draw()
            self.stream.write("\n")
            self.stream.flush()
