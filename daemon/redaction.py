"""Credentials out of text that people read: config problems, messages that quote a value."""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"
# Shorter values are not masked where they appear as text: "ab" would mask every word with
# "ab" in it. A URL's or a DSN's password is masked whatever its length.
MIN_SECRET = 4

# scheme://user:PASSWORD@host -- the password runs to the last @ before a space or quote.
_USERINFO = re.compile(r"(?P<keep>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/?#@:'\"]*:)[^\s'\"]*@")
# password=... in a key/value DSN ("host=db password='x y'") or a URL's query string.
_KEY_VALUE = re.compile(
    r"(?P<keep>password\s*=\s*)(?:'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^\s&;,'\"]+)",
    re.IGNORECASE,
)


def redact_credentials(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with URL and DSN passwords, and each of `secrets`, replaced by ***."""
    # As written, and as repr() quotes it in a message ("it's" -> "it\\'s", \\ doubled).
    forms = {form for secret in secrets for form in (secret, repr(secret)[1:-1])}
    for form in sorted(forms, key=len, reverse=True):
        if len(form) >= MIN_SECRET:
            text = text.replace(form, MASK)
    text = _USERINFO.sub(rf"\g<keep>{MASK}@", text)
    return _KEY_VALUE.sub(rf"\g<keep>{MASK}", text)
