"""Who may use the review app, and which files it may send: token, sessions, CSRF, paths.

Pure (no web framework): :mod:`audit.serve.app` asks these questions of every request.

* **Access token.** ``gan-audit serve`` draws a random token (:func:`secrets.token_urlsafe`)
  and prints it in the URL, as Jupyter does. The first visit with ``?token=`` gets a session
  cookie (HttpOnly, SameSite=Strict); any request without a valid token or session is
  refused (403).
* **CSRF.** Every write (POST) carries the session's CSRF token in its form, checked with
  :func:`hmac.compare_digest`; its ``Origin`` (when the browser sends one) must be the
  server itself.
* **Host.** Bound to a loopback address, the app answers only requests whose ``Host`` names
  that address (or ``localhost``) and port: a web page that points a DNS name of its own
  at 127.0.0.1 (DNS rebinding) is refused.
* **Files.** Only PNG images in the run folder's known image folders (``samples/`` and
  ``samples/labelling/``), named plainly, never through a link, never outside the folder
  (:func:`run_file`).

>>> guard = Guard.for_bind("127.0.0.1", 8765, token="t0k")
>>> guard.host_ok("127.0.0.1:8765"), guard.host_ok("localhost:8765"), guard.host_ok("evil.com")
(True, True, False)
>>> sid = guard.new_session()
>>> guard.csrf_ok(sid, guard.csrf_token(sid)), guard.csrf_ok(sid, "0" * 64)
(True, False)
>>> safe_relpath("samples/generated-tone-dark.png")
'samples/generated-tone-dark.png'
>>> safe_relpath("samples/../../etc/passwd") is None, safe_relpath("/etc/passwd.png") is None
(True, True)
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from audit.errors import RunFolderError

__all__ = ["FOLDERS", "Guard", "is_loopback", "run_file", "safe_relpath"]

#: The run folder's subfolders the app sends files from, and the file types it sends.
FOLDERS: tuple[str, ...] = ("samples", "samples/labelling")
_SUFFIXES = (".png",)
#: A plain file name: letters (any script), digits, ``.``, ``_``, ``+``, ``-``, ``=``,
#: spaces inside; no leading dot, no separator, no control character.
_NAME = re.compile(r"^[^\W_][\w.+=\- ]{0,199}$")
_LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and the loopback addresses (127.0.0.0/8, ::1)."""
    if host.strip("[]").lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class Guard:
    """The app's secrets and the checks made with them (one per server).

    Attributes
    ----------
    token
        The access token printed in the URL.
    allowed_hosts
        ``Host`` header values the app answers (``host:port``, lower case); None: any
        (a server bound to a non-loopback address on purpose, ``--host``).
    port
        The port the server listens on (names its cookie).
    sessions
        Session id -> what the session remembers (the reviewer's and labeller's names).
    """

    token: str
    allowed_hosts: frozenset[str] | None
    port: int = 0
    key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def for_bind(cls, host: str, port: int, *, token: str | None = None) -> Guard:
        """The guard of a server bound to ``host:port`` (a new random token unless given)."""
        names = {host.lower()}
        if is_loopback(host):
            names |= {"127.0.0.1", "localhost", "[::1]"}
        allowed = frozenset(f"{n}:{port}" for n in names) if is_loopback(host) else None
        return cls(token=token or secrets.token_urlsafe(32), allowed_hosts=allowed, port=port)

    @property
    def cookie_suffix(self) -> str:
        """Tells this server's cookie from another's on the same host (cookies ignore ports)."""
        return str(self.port)

    def token_ok(self, given: str | None) -> bool:
        """Whether ``given`` is the access token (constant time)."""
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def new_session(self) -> str:
        """A new session id (the cookie's value)."""
        sid = secrets.token_urlsafe(32)
        self.sessions[sid] = {}
        return sid

    def session(self, sid: str | None) -> dict[str, Any] | None:
        """The session of cookie value ``sid``, or None when it is not one of ours."""
        if not sid:
            return None
        for known, data in self.sessions.items():  # constant time per comparison
            if hmac.compare_digest(known.encode(), sid.encode()):
                return data
        return None

    def csrf_token(self, sid: str) -> str:
        """The CSRF token of session ``sid`` (an HMAC of it under the server's key)."""
        return hmac.new(self.key, sid.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, sid: str | None, given: str | None) -> bool:
        """Whether ``given`` is session ``sid``'s CSRF token (constant time)."""
        if not sid or not given or self.session(sid) is None:
            return False
        return hmac.compare_digest(self.csrf_token(sid).encode(), given.encode())

    def host_ok(self, host: str | None) -> bool:
        """Whether a request's ``Host`` header names this server."""
        if self.allowed_hosts is None:
            return True
        return (host or "").lower() in self.allowed_hosts

    def origin_ok(self, origin: str | None, host: str | None) -> bool:
        """Whether a write's ``Origin`` is this server (absent: left to the CSRF token).

        ``null`` (a sandboxed or privacy-stripped origin) is refused.
        """
        if origin is None:
            return True
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and bool(host) and \
            parts.netloc.lower() == (host or "").lower()


def safe_relpath(rel: str, *, folders: tuple[str, ...] = FOLDERS) -> str | None:
    """``rel`` when it names a PNG directly in one of ``folders``, else None.

    Refused: absolute paths, ``..`` or ``.`` parts, backslashes, empty parts, control
    characters, names with a leading dot, other folders and other file types. The check is
    on the text (after URL decoding, which the web framework does); :func:`run_file` then
    opens the file without following any link.
    """
    if not isinstance(rel, str) or "\\" in rel or "\x00" in rel or rel.startswith("/"):
        return None
    folder, _, name = rel.rpartition("/")
    if folder not in folders or not _NAME.match(name) or not name.lower().endswith(_SUFFIXES):
        return None
    return rel


def run_file(run_dir: Path, rel: str, *, recorded: dict[str, Any] | None = None) -> bytes:
    """The bytes of the image ``RUN_DIR/rel`` that the app may send.

    Parameters
    ----------
    rel
        Path relative to the run folder, as a URL gave it (checked by :func:`safe_relpath`).
    recorded
        The manifest's ``artifacts`` (path -> {sha256}); when given, the file must be the
        bytes the run recorded (an image placed or changed afterwards is refused).

    Raises
    ------
    FileNotFoundError
        Not a path the app sends, or no such file.
    RunFolderError
        A link in the path, a path that resolves outside the run folder, a hard link or a
        file that is not a regular one, or bytes the manifest does not record.
    """
    from audit.report.runfiles import recorded_file
    from audit.runfolder import read_artifact

    checked = safe_relpath(rel)
    if checked is None:
        raise FileNotFoundError(rel)
    root = Path(run_dir).resolve()
    if not (Path(run_dir) / checked).resolve().is_relative_to(root):
        raise RunFolderError(f"{rel}: resolves outside the run folder; not sent.")
    if recorded is None:
        return read_artifact(Path(run_dir), checked)
    return recorded_file(Path(run_dir), checked, recorded)
