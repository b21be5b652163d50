"""What the project's command lines share: bad input is one line on stderr and exit code 2, never more.

argparse alone prints its whole usage text before a mistake, and a message may quote what was typed
(newlines and terminal escapes included); a file named on the command line may be a folder, a device or a
pipe that never ends. Standard library only: benchmarks/gpu_check.py loads this file without importing the
`shared` package (its child process must import the built Space's copy of that package).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def one_line(text) -> str:
    """`text` as one printable line: runs of white space become one space, other control characters `?`."""
    return "".join(ch if ch.isprintable() else "?" for ch in " ".join(str(text).split()))


def refuse(error) -> int:
    """Write `error: <one line>` to stderr and return exit code 2: the answer to input the command refuses."""
    sys.stderr.write(f"error: {one_line(error)}\n")
    return 2


class OneLineParser(argparse.ArgumentParser):
    """An argparse parser whose usage mistakes are `error: <one line> (see --help)` and exit code 2."""

    def error(self, message):
        self.exit(2, f"error: {one_line(message)} (see --help)\n")


def read_text(path, limit: int) -> str:
    """A UTF-8 text file named on the command line, read no further than `limit` + 1 characters.

    The caller refuses a longer text in its own words: one character past `limit` tells it so without
    reading a large file (or /dev/zero) whole. Anything but a regular file is refused unopened, since a
    pipe may never end. Raises ValueError with one sentence that names the path as typed, made printable.
    """
    where = one_line(path)
    try:
        # is_file() is False for a folder, a device or a pipe, and for a name with a NUL byte.
        if not Path(path).is_file():
            raise ValueError(f"cannot read {where}: {'not a regular file' if Path(path).exists() else 'no such file'}")
        with open(path, encoding="utf-8") as file:
            return file.read(limit + 1)
    except OSError as exc:  # no permission, or a name too long for the file system
        raise ValueError(f"cannot read {where}: {exc.strerror or 'unreadable'}") from None
    except UnicodeDecodeError:
        raise ValueError(f"cannot read {where}: not UTF-8 text") from None
