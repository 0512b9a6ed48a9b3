"""Scrub secrets (pool password, tokens, admin token) from text, artifacts and log records."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote, quote_plus

MASK = "***"
MIN_SECRET_LENGTH = 4  # shorter strings would mask ordinary words and digits everywhere


class Redactor:
    """Replaces every occurrence of known secrets with `***`.

    Also masks the JSON-escaped and URL-encoded spellings of each secret, since secrets
    end up in JSON bodies and query strings. Strings shorter than 4 characters are
    ignored: masking them would destroy ordinary text and protect nothing.
    """

    def __init__(self, secrets: Iterable[str | None] = (), *, mask: str = MASK) -> None:
        self.mask = mask
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str | None) -> None:
        """Add one secret (and its escaped spellings); empty or too-short values are ignored."""
        if not secret or len(secret) < MIN_SECRET_LENGTH:
            return
        variants = {secret, json.dumps(secret)[1:-1], quote(secret, safe=""), quote_plus(secret)}
        self._secrets.update(v for v in variants if len(v) >= MIN_SECRET_LENGTH)
        # Longest first, so a secret that contains another is masked whole.
        alternatives = sorted(self._secrets, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(s) for s in alternatives))

    def __bool__(self) -> bool:
        return self._pattern is not None

    def redact(self, text: str) -> str:
        """The text with every secret replaced by the mask."""
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(self.mask, text)

    def redact_file(self, path: str | Path) -> bool:
        """Redact a text artifact in place (atomic replace); returns whether it changed.

        Binary files (a NUL byte in them, e.g. `.gz`) are left alone and return False.
        """
        from .artifacts import write_atomic  # report imports the models; keep this module light

        target = Path(path)
        data = target.read_bytes()
        if self._pattern is None or b"\x00" in data:
            return False
        text = data.decode("utf-8", errors="surrogateescape")
        redacted = self.redact(text)
        if redacted == text:
            return False
        mode = target.stat().st_mode
        write_atomic(target, redacted.encode("utf-8", errors="surrogateescape"))
        target.chmod(mode)
        return True

    def logging_filter(self) -> RedactingFilter:
        """A `logging.Filter` that redacts records with this redactor."""
        return RedactingFilter(self)


class RedactingFilter(logging.Filter):
    """Redacts the message, arguments and traceback text of every log record it sees.

    Attach it to handlers (a filter on a logger does not see records of its children).
    """

    def __init__(self, redactor: Redactor, name: str = "") -> None:
        super().__init__(name)
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.redactor:
            return True
        record.msg = self.redactor.redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redactor.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redactor.redact(record.stack_info)
        return True
