"""Running the review app: bind, print the address with its token, serve with uvicorn.

The socket is bound here, before uvicorn starts, so that ``--port 0`` (any free port) prints
the port the server really has, and so that tests get a server on a free port.
"""

from __future__ import annotations

import socket
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audit.errors import AuditError, DependencyError
from audit.serve.security import Guard, is_loopback

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "Served", "bind", "require_serve_extra", "serve_run",
           "start_in_thread"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
_INSTALL = "pip install 'gan-audit[serve]'"


def require_serve_extra() -> None:
    """Raise :class:`DependencyError` (saying what to install) unless starlette, uvicorn
    and python-multipart can be imported."""
    import importlib.util

    def found(*modules: str) -> bool:
        for module in modules:
            try:
                if importlib.util.find_spec(module) is not None:
                    return True
            except (ImportError, ValueError):  # a module set to None in sys.modules
                continue
        return False

    missing = [package for package, modules in (
        ("starlette", ("starlette",)), ("uvicorn", ("uvicorn",)),
        ("python-multipart", ("python_multipart", "multipart"))) if not found(*modules)]
    if missing:
        raise DependencyError(f"gan-audit serve needs {', '.join(missing)}, which "
                              f"{'is' if len(missing) == 1 else 'are'} not installed. "
                              f"Install the serve extra: {_INSTALL}")


@dataclass
class Served:
    """A bound server: its socket, address, guard and the URL to open (with the token)."""

    sock: socket.socket
    host: str
    port: int
    guard: Guard

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/?token={self.guard.token}"


def bind(host: str, port: int) -> Served:
    """A listening socket on ``host:port`` (``port`` 0: a free one) and its guard.

    Raises
    ------
    AuditError
        The address cannot be bound (port in use, unknown host); the message says so.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise AuditError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose "
                             f"another --port (0 picks a free one) or --host.") from exc
    sock.listen(128)
    sock.set_inheritable(True)
    actual = sock.getsockname()[1]
    return Served(sock=sock, host=host, port=actual, guard=Guard.for_bind(host, actual))


def _server(run_dir: Path, served: Served) -> Any:
    import uvicorn

    from audit.serve.routes import create_app

    app = create_app(run_dir, guard=served.guard)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                            server_header=False)
    return uvicorn.Server(config)


def _check_run(run_dir: Path) -> None:
    from audit.report.render import load_results

    load_results(Path(run_dir))  # a RunFolderError says what is wrong


def serve_run(run_dir: Path, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
              open_browser: bool = True, echo: Callable[[str], None] = print) -> None:
    """Serve the review app of ``run_dir`` until interrupted (Ctrl+C).

    Binds ``host:port`` (loopback by default; any other host warns, since anyone who can
    reach it and has the printed address can write reviews), prints the address with its
    access token through ``echo`` and opens it in a browser unless ``open_browser`` is
    False.

    Raises
    ------
    DependencyError
        The serve extra is not installed.
    RunFolderError
        Not a run folder with results.json.
    AuditError
        The address cannot be bound.
    """
    require_serve_extra()
    _check_run(run_dir)
    if not is_loopback(host):
        warnings.warn(f"serving on {host}, not on this machine's loopback address: anyone "
                      f"who can reach {host}:{port} and has the address below (its token) "
                      f"can read the audit and record reviews and labels; the connection is "
                      f"not encrypted (plain HTTP).", stacklevel=2)
    served = bind(host, port)
    echo(f"Serving {run_dir} (Ctrl+C to stop). Open:\n  {served.url}")
    if open_browser:
        import webbrowser

        threading.Timer(0.5, webbrowser.open, args=(served.url,)).start()
    _server(Path(run_dir), served).run(sockets=[served.sock])


def start_in_thread(run_dir: Path, *, host: str = DEFAULT_HOST,
                    port: int = 0) -> tuple[Served, Any, threading.Thread]:
    """Start the app on a free port in a daemon thread (tests, notebooks).

    Returns ``(served, server, thread)``; stop with ``server.should_exit = True`` and
    ``thread.join()``.
    """
    require_serve_extra()
    _check_run(run_dir)
    served = bind(host, port)
    server = _server(Path(run_dir), served)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [served.sock]},
                              daemon=True, name="gan-audit-serve")
    thread.start()
    return served, server, thread
