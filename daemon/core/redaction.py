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


# A credential that a cut leaves open at its end: a URL's password before its "@", or the
# start of a `password=` value, quoted or not.
_OPEN_ENDS = (
    re.compile(r"(?P<keep>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/?#@:'\"]*:)[^\s'\"@]+\Z"),
    re.compile(r"(?P<keep>password\s*=\s*')[^']+\Z", re.IGNORECASE),
    re.compile(r'(?P<keep>password\s*=\s*")[^"]+\Z', re.IGNORECASE),
    re.compile(r"(?P<keep>password\s*=\s*)[^\s&;,'\"]+\Z", re.IGNORECASE),
)


def excerpt(
    text: str,
    limit: int,
    secrets: Iterable[str] = (),
    marker: str = "…",
    *,
    whole: bool = True,
) -> str:
    """`text` in at most `limit` characters, ending with `marker` if it was cut, with no
    credential in it, whole or in part. `whole=False`: `text` is itself the start of a
    longer text (a body read up to a bound), so it counts as cut.

    Masks first, then cuts: cut first, a secret across the cut would keep its start. Then
    what the cut leaves at the end that may start a credential is masked too: the end of a
    secret's start, a URL's password before its "@", a `password=` value.
    """
    secrets = [s for s in secrets if s]
    text = redact_credentials(text, secrets)
    if whole and len(text) <= limit:
        return text
    room = max(0, limit - len(marker))
    kept = _mask_open_end(text[:room], secrets)
    if len(kept) > room:  # the mask is longer than what it hides
        kept = kept[: max(0, room - len(MASK))] + MASK
    return kept + marker


def _mask_open_end(text: str, secrets: list[str]) -> str:
    forms = {form for secret in secrets for form in (secret, repr(secret)[1:-1])}
    start = len(text)  # where the longest start of a secret that ends the text begins
    for form in forms:
        at = text.find(form[0], max(0, len(text) - len(form) + 1))
        while -1 < at < start:
            if form.startswith(text[at:]):
                start = at
                break
            at = text.find(form[0], at + 1)
    text = text[:start] + MASK if start < len(text) else text
    for pattern in _OPEN_ENDS:
        text = pattern.sub(rf"\g<keep>{MASK}", text)
    return text
