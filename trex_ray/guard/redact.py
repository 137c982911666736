"""No secret out: credentials stay in the environment, and text leaving the program is scrubbed.

Three rules, applied where text leaves (the ledger, the console, error lines):

- **Credentials never ride in a URL.** ``s3://KEY:SECRET@bucket``, ``https://user:pass@host`` and
  pyarrow's ``?access_key=...&secret_key=...`` would be copied into config.yaml, Tune's
  params.json, trackers, reports and error lines; they are refused with one line saying where
  credentials go (``credentials_problem``).
- **A key is never echoed.** A value that looks like a key where a variable's NAME belongs
  (``--llm.api_key_env=sk-...``) is refused without being repeated (``env_name_problem``).
- **Text is scrubbed before it is cut** (``scrub``): the values of the environment's secret
  variables and anything shaped like a key or a URL credential become ``***``. Scrubbing first
  matters: a key cut in half by a length limit no longer matches.

Text bound for a terminal (console log lines, LLM text in logs, ``error:`` lines) also goes
through ``terminal_safe``: escape sequences and control characters are stripped, so no dataset
row or LLM answer can move the cursor, rewrite a line or retitle the window.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any
from urllib.parse import parse_qsl

MASK = "***"
# where the credentials of each kind of endpoint belong (said by every refusal)
WHERE_CREDENTIALS_GO = ("credentials go in the environment, never in a URL: AWS_ACCESS_KEY_ID / "
                        "AWS_SECRET_ACCESS_KEY (or an instance role) for s3://, GOOGLE_APPLICATION_CREDENTIALS "
                        "for gs://, and for the LLM endpoint the variable that llm.api_key_env names")
# pyarrow's S3/GCS URI options that carry secrets
SECRET_QUERY_KEYS = {"access_key", "secret_key", "session_token", "password", "token", "access_token",
                     "sas_token", "account_key", "client_secret"}
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH", re.I)
_NOT_SECRET_NAME = re.compile(r"(_MODE|_ENV|_PATH|_FILE|_DIR|_URL|_HOST|_PORT|_REGION|_ID)$", re.I)
MIN_SECRET_LEN = 8  # shorter values are too common as plain words to be replaced everywhere
# key shapes of the usual providers, and credentials inside URLs and headers; ``pre`` is kept
_PATTERNS = [re.compile(p) for p in (
    r"(?P<pre>://)[^\s@/]+:[^\s@]+(?=@)",  # scheme://user:password@host (a password may hold a /)
    r"(?P<pre>)\b(?:sk|pk|rk)-[A-Za-z0-9_\-]{16,}",  # OpenAI-style keys
    r"(?P<pre>)\bhf_[A-Za-z0-9]{20,}",  # Hugging Face tokens
    r"(?P<pre>)\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",  # AWS access key ids
    r"(?P<pre>)\bgh[pousr]_[A-Za-z0-9]{20,}",  # GitHub tokens
    r"(?P<pre>)\bxox[abprs]-[A-Za-z0-9\-]{10,}",  # Slack tokens
    r"(?i)(?P<pre>bearer\s+)[A-Za-z0-9._~+/=\-]{8,}",  # Authorization: Bearer <token>
    r"(?i)(?P<pre>[?&](?:access_key|secret_key|session_token|password|token|access_token|sas_token|"
    r"account_key|client_secret)=)[^&\s#]+",
)]
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def env_secrets() -> list[str]:
    """Values of this process's environment variables that hold secrets (by their names), longest
    first so a secret containing another is replaced whole."""
    vals = {v for k, v in os.environ.items()
            if _SECRET_NAME.search(k) and not _NOT_SECRET_NAME.search(k) and len(v) >= MIN_SECRET_LEN}
    return sorted(vals, key=len, reverse=True)


def scrub(text: str, extra: list[str] | tuple[str, ...] = (), secrets: list[str] | None = None) -> str:
    """``text`` with every secret it holds replaced by ``***``: the given ``extra`` values, the
    environment's secrets (``secrets``: precomputed ``env_secrets()``) and anything shaped like a
    key or URL credential."""
    if not text:
        return text
    values = sorted((s for s in extra if s and len(s) >= 4), key=len, reverse=True)
    for secret in [*values, *(env_secrets() if secrets is None else secrets)]:
        text = text.replace(secret, MASK)
    for pat in _PATTERNS:
        text = pat.sub(lambda m: m.group("pre") + MASK, text)
    return text


def scrub_data(value: Any, secrets: list[str] | None = None) -> Any:
    """``value`` (JSON-like data) with every string in it scrubbed, keys included."""
    secrets = env_secrets() if secrets is None else secrets
    if isinstance(value, str):
        return scrub(value, secrets=secrets)
    if isinstance(value, dict):
        return {scrub_data(k, secrets): scrub_data(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub_data(v, secrets) for v in value]
    return value


def _authority(url: str) -> tuple[str, str, str]:
    """(scheme, authority, rest) of ``scheme://authority/rest``; the authority runs to the last
    ``@`` before the path when there is one (a secret may hold a ``/``)."""
    scheme, sep, after = str(url).partition("://")
    if not sep:
        return "", "", str(url)
    first = re.split(r"[/?#]", after, maxsplit=1)[0]
    at = after.find("@")
    # the "@" ends the authority when it is in the first segment, or when that segment is a
    # "key:secret" (not host:port) whose secret went on past a "/"
    if at != -1 and (at < len(first) or ":" in first and not first.rsplit(":", 1)[1].isdigit()):
        end = at + 1 + len(re.split(r"[/?#]", after[at + 1:], maxsplit=1)[0])
    else:
        end = len(first)
    return scheme, after[:end], after[end:]


def url_credentials(url: str) -> bool:
    """Whether ``url`` carries credentials: ``user:pass@`` (or a bare ``user@``) in its authority,
    a ``key:secret`` where a host belongs (an object store's bucket never has a ``:``, a port is
    digits), or a secret-carrying query option."""
    scheme, auth, rest = _authority(url)
    if not scheme:
        return False
    if "@" in auth:
        return True
    if ":" in auth and not auth.startswith("[") and not auth.rsplit(":", 1)[1].isdigit():
        return True
    query = rest.split("?", 1)[1].split("#", 1)[0] if "?" in rest else ""
    return any(k.lower() in SECRET_QUERY_KEYS for k, _ in parse_qsl(query, keep_blank_values=True))


def without_credentials(url: str) -> str:
    """``url`` as it may be shown: its credentials (authority and query) replaced by ``***``."""
    scheme, auth, rest = _authority(url)
    if not scheme:
        return str(url)
    if "@" in auth:
        auth = MASK + "@" + auth.rsplit("@", 1)[1]
    elif ":" in auth and not auth.startswith("[") and not auth.rsplit(":", 1)[1].isdigit():
        auth = MASK
    if "?" in rest:
        path, query = rest.split("?", 1)
        rest = path + "?" + "&".join(f"{k}={MASK if k.lower() in SECRET_QUERY_KEYS else v}"
                                     for k, v in parse_qsl(query, keep_blank_values=True))
    return f"{scheme}://{auth}{rest}"


def credentials_problem(what: str, url: str | None) -> str | None:
    """The one-line refusal of a URL carrying credentials (shown without them), or None."""
    if url and url_credentials(url):
        return (f"{what} {without_credentials(url)}: credentials inside the URL are refused (they would be copied "
                f"into config.yaml, logs and reports); {WHERE_CREDENTIALS_GO}")
    return None


def looks_like_key(value: str) -> bool:
    """A value that is not a plausible environment variable NAME, or is long and random-looking
    the way keys are (names are UPPER_SNAKE words)."""
    if not _ENV_NAME.fullmatch(value):
        return True
    return len(value) >= 20 and any(c.islower() for c in value) and sum(c.isdigit() for c in value) >= 3


def env_name_problem(what: str, value: str | None) -> str | None:
    """Why ``value`` is not a usable environment variable NAME, never quoting it (it may be the
    key itself, pasted where its variable's name belongs), or None."""
    if value is None or not looks_like_key(value):
        return None
    return (f"{what} takes the NAME of an environment variable (letters, digits and _), not a key; the value "
            "given is not repeated here in case it is one: export the key as a variable and give its name "
            f"(e.g. {what}=OPENAI_API_KEY)")


def secrets_problem(urls: dict[str, str | None], names: dict[str, str | None]) -> str | None:
    """The first refusal among config values: a URL (by its option's name) carrying credentials,
    or a key where a variable's name belongs; None when all are fine."""
    for what, url in urls.items():
        problem = credentials_problem(what, url)
        if problem:
            return problem
    for what, name in names.items():
        problem = env_name_problem(what, name)
        if problem:
            return problem
    return None


class ConsoleFilter(logging.Filter):
    """Installed on the console's log handlers: every line scrubbed of secrets and stripped of
    terminal escape sequences and control characters (dataset and LLM text reach the logs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = terminal_safe(scrub(record.getMessage())), None
        return True


def console_line(text: str) -> str:
    """One line for the terminal (an ``error:`` line): scrubbed, control characters stripped, one line."""
    return " ".join(terminal_safe(scrub(text)).split())


def console_logging(level: str, fmt: str = "%(asctime)s %(message)s") -> None:
    """The console's logging for an entry point: every line through ``ConsoleFilter``."""
    import sys

    logging.basicConfig(level=level, format=fmt, datefmt="%H:%M:%S", stream=sys.stdout)
    for handler in logging.getLogger().handlers:
        handler.addFilter(ConsoleFilter())


# CSI (ESC [ ... final), OSC (ESC ] ... BEL or ST), other two-character escapes, and 8-bit CSI/OSC
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]"
                      r"|\x9b[0-?]*[ -/]*[@-~]|\x9d[^\x07\x9c]*[\x07\x9c]?")
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def terminal_safe(text: str) -> str:
    """``text`` fit for a terminal: escape sequences and control characters removed (newlines
    and tabs kept), bidirectional overrides dropped."""
    return _CONTROLS.sub("", _ESCAPES.sub("", text))
