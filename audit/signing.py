"""Keys and signatures: who vouches for a run folder, and for which bytes (issue #21).

``gan-audit keygen`` writes an Ed25519 key pair; ``gan-audit sign`` appends to
``RUN/signatures.jsonl`` one line per signer::

    {"statement": {...}, "public_key": "<base64 of the 32 raw bytes>",
     "signature": "<base64 of the 64-byte Ed25519 signature>", "algorithm": "ed25519"}

The **statement** is what is signed: the sha256 of every artifact the manifest records,
the sha256 of ``config.yaml``, the review log's chain head and number of entries, the
tool's version, the UTC time, and the signer's name, role and key fingerprint. The signed
bytes are :data:`DOMAIN` followed by the statement's canonical JSON (keys sorted, no
spaces, UTF-8: :func:`audit.report.review.canonical_json`), so a signature over anything
else cannot be passed off as one.

:func:`check_signatures` (called by ``gan-audit verify``) checks each line: the signature
is valid over its statement, the statement still describes the folder (any artifact or
config byte changed, any review entry edited or added since: named), and, given trusted
keys, that the key is one of them. What this proves is in docs/SECURITY.md.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audit.errors import DependencyError, ReviewError, RunFolderError, SigningError

__all__ = ["SIGNATURES", "DOMAIN", "KeyFiles", "SignatureCheck", "write_key_files",
           "write_new_file",
           "write_key_pair", "load_private_key", "load_trusted_keys", "fingerprint",
           "run_statement", "sign_run", "check_signatures", "statement_differences"]

#: The signatures file of a run folder (bookkeeping, like review.jsonl: not an artifact).
SIGNATURES = "signatures.jsonl"
#: Prefix of the signed bytes (domain separation): a signature of gan-audit statements only.
DOMAIN = b"gan-audit signed statement v1\n"
_FORMAT = "gan-audit-statement/1"


def _crypto() -> Any:
    """The ``cryptography`` package's Ed25519 and serialization modules."""
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise DependencyError("signing needs the 'cryptography' package: "
                              "pip install cryptography") from exc
    return ed25519, serialization


@dataclass(frozen=True)
class KeyFiles:
    """The files :func:`write_key_pair` wrote, and the key's fingerprint (``sha256:<hex>``)."""

    private: Path
    public: Path
    fingerprint: str


def fingerprint(public_key: Any) -> str:
    """``sha256:<64 hex>`` of an Ed25519 public key's 32 raw bytes."""
    import hashlib

    return "sha256:" + hashlib.sha256(_raw_public(public_key)).hexdigest()


def _raw_public(public_key: Any) -> bytes:
    _, serialization = _crypto()
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def write_new_file(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Create ``path`` with ``mode`` (never widened by chmod later) and write ``data``: an
    existing file or link is never overwritten nor followed (O_EXCL, O_NOFOLLOW), its
    folder is made if missing, and a file whose write fails is removed. The one writer of
    key material (Ed25519 keys here, PKCS#12 certificates in :mod:`audit.pdfsign`)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SigningError(f"{path.parent}: cannot create the folder ({exc.strerror}). Choose "
                           f"a writable folder for --out.") from exc
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, mode)
    except FileExistsError as exc:
        raise SigningError(f"{path}: exists; gan-audit never overwrites a key. Choose "
                           f"another --out, or move the old key aside.") from exc
    except OSError as exc:
        raise SigningError(f"{path}: cannot be created ({exc.strerror}). Choose a writable "
                           f"folder for --out.") from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        Path(path).unlink(missing_ok=True)
        raise


def write_key_files(*, out: Path, private: bytes, public: bytes,
                    public_suffix: str = ".pub") -> tuple[Path, Path]:
    """Write a secret ``out`` (created with mode 0600, never chmod-ed later) and its public
    part ``out + public_suffix`` (0644), refusing to overwrite either.

    Both are checked before either is written, so a refusal leaves nothing behind; each is
    written by :func:`write_new_file`.

    Returns
    -------
    (Path, Path)
        The secret file and the public file.

    Raises
    ------
    SigningError
        Either file exists (nothing is written) or cannot be created.
    """
    out = Path(out)
    public_path = out.with_name(out.name + public_suffix)
    for path in (out, public_path):
        if path.exists() or path.is_symlink():
            raise SigningError(f"{path}: exists; gan-audit keygen never overwrites a key. "
                               f"Choose another --out, or move the old key aside.")
    write_new_file(out, private, mode=0o600)
    try:
        write_new_file(public_path, public, mode=0o644)
    except SigningError:
        out.unlink()
        raise
    return out, public_path


def write_key_pair(*, out: Path, passphrase: bytes | None = None) -> KeyFiles:
    """Generate an Ed25519 key pair: private key ``out`` (PEM, PKCS#8, mode 0600, encrypted
    when ``passphrase`` is given) and public key ``out.pub`` (PEM, SubjectPublicKeyInfo).

    Raises
    ------
    SigningError
        Either file exists (nothing is written) or cannot be created.
    """
    ed25519, serialization = _crypto()
    key = ed25519.Ed25519PrivateKey.generate()
    encryption = (serialization.BestAvailableEncryption(passphrase) if passphrase
                  else serialization.NoEncryption())
    private_pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8, encryption)
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    private, public = write_key_files(out=out, private=private_pem, public=public_pem)
    return KeyFiles(private, public, fingerprint(key.public_key()))


def load_private_key(path: Path, *, passphrase: bytes | None = None) -> Any:
    """The Ed25519 private key in ``path`` (PEM, PKCS#8, encrypted or not).

    Raises
    ------
    SigningError
        Missing file, wrong or missing passphrase, or not an Ed25519 private key.
    """
    ed25519, serialization = _crypto()
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SigningError(f"{path}: cannot read the key ({exc.strerror}). Give the private key "
                           f"that gan-audit keygen wrote with --key.") from exc
    try:
        key = serialization.load_pem_private_key(data, password=passphrase or None)
    except TypeError as exc:
        need = "is encrypted: give its passphrase" if not passphrase else "is not encrypted: " \
               "drop --passphrase-env"
        raise SigningError(f"{path}: the key {need} (--passphrase-env VAR names the "
                           f"environment variable that holds it).") from exc
    except ValueError as exc:
        raise SigningError(f"{path}: cannot load the key: the passphrase is wrong, or the file "
                           f"is not a PEM private key. Check --passphrase-env and --key."
                           ) from exc
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise SigningError(f"{path}: not an Ed25519 key; make one with gan-audit keygen.")
    return key


def load_trusted_keys(folder: Path) -> dict[str, Path]:
    """Fingerprint -> file of every ``*.pub`` (PEM Ed25519 public key) in ``folder``.

    Raises
    ------
    SigningError
        ``folder`` is not a folder, holds no ``*.pub``, or one is not an Ed25519 public key.
    """
    ed25519, serialization = _crypto()
    folder = Path(folder)
    if not folder.is_dir():
        raise SigningError(f"{folder}: not a folder. --trusted-keys names a folder of the "
                           f"public keys (*.pub) you trust.")
    out = {}
    for path in sorted(folder.glob("*.pub")):
        try:
            key = serialization.load_pem_public_key(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise SigningError(f"{path}: not a PEM public key; put only the .pub files that "
                               f"gan-audit keygen wrote into {folder}.") from exc
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise SigningError(f"{path}: not an Ed25519 public key; make keys with gan-audit "
                               f"keygen.")
        out[fingerprint(key)] = path
    if not out:
        raise SigningError(f"{folder}: holds no public key (*.pub). Copy the .pub files of the "
                           f"signers you trust into it.")
    return out


def run_statement(run_dir: Path, *, name: str, role: str, key_fingerprint: str,
                  signed_at: str | None = None) -> dict[str, Any]:
    """The statement a signer signs about ``run_dir``, as it is now (see the module docstring).

    Raises
    ------
    RunFolderError
        No manifest, or a review log that cannot be read.
    """
    from audit._version import __version__
    from audit.manifest import read_manifest, valid_artifacts
    from audit.runfolder import utc_now

    manifest = read_manifest(run_dir)
    if manifest is None:
        raise RunFolderError(f"{run_dir}: no manifest.json; sign the run folder that "
                             f"gan-audit run wrote.")
    head, entries = _review_state(run_dir)
    return {
        "format": _FORMAT,
        "audit_id": manifest.get("audit_id"),
        "artifacts": {rel: rec["sha256"]
                      for rel, rec in sorted(valid_artifacts(manifest).items())},
        "config_sha256": manifest.get("config_sha256"),
        "review_head": head, "review_entries": entries,
        "tool_version": __version__,
        "signed_at": signed_at or utc_now(),
        "signer": {"name": name, "role": role, "key_fingerprint": key_fingerprint},
    }


def _review_state(run_dir: Path) -> tuple[str | None, int]:
    from audit.report.review import LOG_NAME, verify_review_log

    check = verify_review_log(Path(run_dir) / LOG_NAME)
    return check.head, check.entries


def _signed_bytes(statement: dict[str, Any]) -> bytes:
    from audit.report.review import canonical_json

    return DOMAIN + canonical_json(statement)


def sign_run(run_dir: Path, *, key: Any, name: str, role: str,
             signed_at: str | None = None) -> dict[str, Any]:
    """Sign ``run_dir`` as it is now with the private ``key`` and append the line to
    ``RUN/signatures.jsonl`` (atomically; the caller holds the folder's claim).

    Returns
    -------
    dict
        The line written: ``statement``, ``public_key``, ``signature``, ``algorithm``.

    Raises
    ------
    SigningError
        Empty name or role, or a folder that does not match its manifest (nothing signed).
    """
    from audit.io import atomic_write_bytes
    from audit.runfolder import read_run_file

    name, role = str(name or "").strip(), str(role or "").strip()
    if not name or not role:
        raise SigningError("the signer's name and role must not be empty; give them with "
                           "--name \"A. Auditor\" --role \"external auditor\".")
    run_dir = Path(run_dir)
    statement = run_statement(run_dir, name=name, role=role,
                              key_fingerprint=fingerprint(key.public_key()),
                              signed_at=signed_at)
    problems = statement_differences(run_dir, statement)
    problems += [f"review.jsonl: {p}" for p in _review_problems(run_dir)]
    if problems:
        raise SigningError(f"{run_dir}: does not match its manifest, so it was not signed: "
                           + "; ".join(problems[:5]) + ". Run gan-audit verify on it, and "
                           "sign only a folder that verifies.")
    record = {"statement": statement, "algorithm": "ed25519",
              "public_key": base64.b64encode(_raw_public(key.public_key())).decode("ascii"),
              "signature": base64.b64encode(key.sign(_signed_bytes(statement))).decode("ascii")}
    path = run_dir / SIGNATURES
    try:
        old = read_run_file(path)
    except FileNotFoundError:
        old = b""
    if old and not old.endswith(b"\n"):
        old += b"\n"
    atomic_write_bytes(path, old + json.dumps(record, ensure_ascii=True).encode("ascii") + b"\n")
    return record


def _review_problems(run_dir: Path) -> list[str]:
    from audit.report.review import LOG_NAME, verify_review_log

    return verify_review_log(Path(run_dir) / LOG_NAME).problems


def statement_differences(run_dir: Path, statement: dict[str, Any], *,
                          known: dict[str, dict[str, Any]] | None = None) -> list[str]:
    """How ``run_dir`` differs now from what ``statement`` says: one line per artifact
    changed, missing or added, for config.yaml, and for review entries edited or added.

    ``known``: artifact records (the manifest's) whose sha256 stands for a file whose size and
    modification time match; only for a caller that has checked every file against them
    (``gan-audit verify``). Without it every file is read.
    """
    import hashlib

    from audit.manifest import read_manifest, valid_artifacts
    from audit.runfolder import hash_artifacts, read_artifact

    signed = statement.get("artifacts") if isinstance(statement.get("artifacts"), dict) else {}
    manifest = read_manifest(run_dir) or {}
    names = sorted({str(rel).split("/")[0] for rel in (*signed, *valid_artifacts(manifest))})
    problems: list[str] = []
    now = hash_artifacts(Path(run_dir), names, problems, known=known)
    problems += [f"{rel}: missing (it was signed)" for rel in sorted(set(signed) - set(now))]
    problems += [f"{rel}: added after signing" for rel in sorted(set(now) - set(signed))]
    problems += [f"{rel}: changed after signing (its sha256 differs from the signed one)"
                 for rel in sorted(set(now) & set(signed)) if now[rel]["sha256"] != signed[rel]]
    try:
        config = hashlib.sha256(read_artifact(run_dir, "config.yaml")).hexdigest()
    except (FileNotFoundError, RunFolderError):
        config = None
    if config != statement.get("config_sha256"):
        problems.append("config.yaml: changed after signing (its sha256 differs from the "
                        "signed one)" if config else "config.yaml: missing (it was signed)")
    return problems + _review_differences(run_dir, statement)


def _review_differences(run_dir: Path, statement: dict[str, Any]) -> list[str]:
    """The review log against the head and entry count a statement signed."""
    from audit.report.review import LOG_NAME, verify_review_log

    path = Path(run_dir) / LOG_NAME
    head, count = statement.get("review_head"), statement.get("review_entries")
    try:
        now = verify_review_log(path)
        intact = isinstance(head, str) and verify_review_log(path, expected_head=head).ok
    except ReviewError as exc:  # the log cannot be read, or the signed head is no hash
        return [str(exc)]
    if head is None:
        return ([f"{LOG_NAME}: {now.entries} entr{'y' if now.entries == 1 else 'ies'} added "
                 f"after signing (it had none)"] if now.entries else [])
    if not intact:
        return [f"{LOG_NAME}: edited after signing (the entry signed as its head, "
                f"sha256:{str(head)[:16]}..., is no longer in an intact log: entries were "
                f"edited, removed or reordered)"]
    if now.head != head:
        added = now.entries - count if isinstance(count, int) else "some"
        return [f"{LOG_NAME}: {added} entr{'y' if added == 1 else 'ies'} added after signing"]
    return []


@dataclass(frozen=True)
class SignatureCheck:
    """One line of ``signatures.jsonl`` checked (see :func:`check_signatures`).

    Attributes
    ----------
    line
        Line number in the file (1-based).
    name, role, key_fingerprint, signed_at
        As the statement gives them (empty when the line is unreadable).
    artifacts, review_entries
        Number of artifacts and review entries the statement covers.
    problems
        One sentence per problem, each starting with the file and line; empty when valid.
    """

    line: int
    name: str = ""
    role: str = ""
    key_fingerprint: str = ""
    signed_at: str = ""
    artifacts: int = 0
    review_entries: int = 0
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems


def _parse_signature(raw: bytes) -> tuple[dict[str, Any], Any, bytes] | str:
    """A line -> (statement, public key, signature), or a sentence saying what is wrong."""
    import binascii

    ed25519, _ = _crypto()
    try:
        record = json.loads(raw.decode("utf-8"))
        statement = record["statement"]
        key = ed25519.Ed25519PublicKey.from_public_bytes(
            base64.b64decode(record["public_key"], validate=True))
        signature = base64.b64decode(record["signature"], validate=True)
        if record.get("algorithm") != "ed25519" or not isinstance(statement, dict):
            raise ValueError("not an ed25519 signature of a statement")
    except (ValueError, KeyError, TypeError, RecursionError, binascii.Error) as exc:
        return f"not a signature line ({exc}); the file was edited or damaged"
    return statement, key, signature


def _check_line(run_dir: Path, number: int, raw: bytes, *, trusted: dict[str, Path] | None,
                trusted_dir: Path | None, known: dict[str, dict[str, Any]] | None
                ) -> SignatureCheck:
    from cryptography.exceptions import InvalidSignature

    where = f"{SIGNATURES} line {number}"
    parsed = _parse_signature(raw)
    if isinstance(parsed, str):
        return SignatureCheck(number, problems=(f"{where}: {parsed}",))
    statement, key, signature = parsed
    signer = statement.get("signer") if isinstance(statement.get("signer"), dict) else {}
    name, role = str(signer.get("name", "")), str(signer.get("role", ""))
    fp = fingerprint(key)
    who = f"{where} ({name}, {role})"
    problems = []
    try:
        key.verify(signature, _signed_bytes(statement))
    except (InvalidSignature, ValueError, TypeError):
        problems.append(f"{who}: the signature does not match its statement (the line was "
                        f"edited after signing)")
    if signer.get("key_fingerprint") != fp:
        problems.append(f"{who}: the statement names key {signer.get('key_fingerprint')}, "
                        f"but the line carries key {fp}")
    if trusted is not None and fp not in trusted:
        problems.append(f"{who}: signed by {name} ({role}) with key {fp}, which is not among "
                        f"the trusted keys in {trusted_dir}")
    if not problems:
        problems += [f"{who}: {p}" for p in statement_differences(run_dir, statement,
                                                                    known=known)]
    artifacts = statement.get("artifacts")
    entries = statement.get("review_entries")
    return SignatureCheck(number, name, role, fp, str(statement.get("signed_at", "")),
                          len(artifacts) if isinstance(artifacts, dict) else 0,
                          entries if isinstance(entries, int) else 0, tuple(problems))


def check_signatures(run_dir: Path, *, trusted_keys: Path | None = None,
                     known: dict[str, dict[str, Any]] | None = None) -> list[SignatureCheck]:
    """Check every line of ``RUN/signatures.jsonl`` ([] when there is none).

    Parameters
    ----------
    trusted_keys
        A folder of trusted public keys (``*.pub``); a signature by any other key fails.
    known
        See :func:`statement_differences`.

    Raises
    ------
    SigningError
        ``trusted_keys`` is not a folder of Ed25519 public keys.
    """
    from audit.runfolder import read_run_file

    trusted = load_trusted_keys(trusted_keys) if trusted_keys is not None else None
    try:
        data = read_run_file(Path(run_dir) / SIGNATURES)
    except FileNotFoundError:
        return []
    except RunFolderError as exc:
        return [SignatureCheck(0, problems=(str(exc),))]
    return [_check_line(Path(run_dir), number, raw, trusted=trusted, trusted_dir=trusted_keys,
                        known=known)
            for number, raw in enumerate(data.split(b"\n"), start=1) if raw.strip()]
