"""Keys and signatures (#21 item 1): keygen, sign, and verify's signature checks.

A run folder is built cheaply (the fixture results.json, a config, a table, a real
manifest); each tamper test changes one thing after signing and checks that verify fails
naming it, and passes on the untouched copy (the test can fail).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from audit.cli import cli

FIXTURE = Path(__file__).parent / "fixtures" / "results_digits.json"
IDS = [f["id"] for f in json.loads(FIXTURE.read_text())["findings"]]
PASS = "correct horse battery staple"


def make_run(path: Path) -> Path:
    """A run folder that verifies: marker, config.yaml, results.json, tables/, manifest."""
    from audit.manifest import new_manifest, record_artifacts, write_manifest
    from audit.runfolder import claim

    path.mkdir(parents=True, exist_ok=True)
    with claim(path):
        config = b"name: tiny\nout: .\n"
        (path / "config.yaml").write_bytes(config)
        shutil.copy(FIXTURE, path / "results.json")
        (path / "tables").mkdir()
        (path / "tables" / "groups.csv").write_text("group,n\nlight,50\ndark,50\n")
        manifest = new_manifest(audit_id="digits-test", device="cpu",
                                config_sha256=hashlib.sha256(config).hexdigest())
        record_artifacts(path, ["results.json", "tables"], manifest)
        write_manifest(path, manifest)
    return path


def invoke(*args, env: dict | None = None):
    return CliRunner().invoke(cli, [str(a) for a in args], env=env)


def keygen(folder: Path, name: str = "auditor", passphrase: str | None = None) -> Path:
    """A key pair made through the CLI; returns the private key's path."""
    out = folder / name
    env = {"GA_PASS": passphrase} if passphrase else None
    extra = ["--passphrase-env", "GA_PASS"] if passphrase else []
    result = invoke("keygen", "--out", out, *extra, env=env)
    assert result.exit_code == 0, result.output
    return out


def sign(run: Path, key: Path, name: str = "A. Auditor", role: str = "external auditor",
         passphrase: str | None = None):
    env = {"GA_PASS": passphrase} if passphrase else None
    extra = ["--passphrase-env", "GA_PASS"] if passphrase else []
    return invoke("sign", run, "--key", key, "--name", name, "--role", role, *extra, env=env)


def review(run: Path, finding: str, status: str = "accepted") -> None:
    from audit.report import append_review

    append_review(run, finding, status=status, reviewer="R. Eviewer", note="checked",
                  now=datetime(2026, 1, 2, tzinfo=UTC))


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return make_run(tmp_path / "run")


@pytest.fixture
def key(tmp_path: Path) -> Path:
    return keygen(tmp_path / "keys")


# ---------------------------------------------------------------- keygen


def test_keygen_writes_a_0600_private_key_and_a_public_key(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = keygen(tmp_path)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    public = serialization.load_pem_public_key((tmp_path / "auditor.pub").read_bytes())
    assert isinstance(private, ed25519.Ed25519PrivateKey)
    assert public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw) == \
        private.public_key().public_bytes(serialization.Encoding.Raw,
                                          serialization.PublicFormat.Raw)
    assert b"PRIVATE KEY" in key.read_bytes() and b"ENCRYPTED" not in key.read_bytes()


def test_keygen_is_0600_from_creation_whatever_the_umask(tmp_path, monkeypatch):
    """Created with mode 0600 by os.open, not chmod later: a permissive umask changes nothing."""
    import os

    old = os.umask(0)
    try:
        key = keygen(tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_keygen_with_a_passphrase_encrypts_and_only_the_passphrase_opens(tmp_path):
    from cryptography.hazmat.primitives import serialization

    key = keygen(tmp_path, passphrase=PASS)
    assert b"ENCRYPTED PRIVATE KEY" in key.read_bytes()
    with pytest.raises(TypeError):
        serialization.load_pem_private_key(key.read_bytes(), password=None)
    serialization.load_pem_private_key(key.read_bytes(), password=PASS.encode())
    assert PASS.encode() not in key.read_bytes()


def test_keygen_refuses_to_overwrite(tmp_path):
    key = keygen(tmp_path)
    before = key.read_bytes(), (tmp_path / "auditor.pub").read_bytes()
    result = invoke("keygen", "--out", key)
    assert result.exit_code == 2 and "never overwrites a key" in result.output
    assert (key.read_bytes(), (tmp_path / "auditor.pub").read_bytes()) == before
    (tmp_path / "other.pub").write_text("mine")
    result = invoke("keygen", "--out", tmp_path / "other")
    assert result.exit_code == 2 and "other.pub: exists" in result.output
    assert not (tmp_path / "other").exists() and (tmp_path / "other.pub").read_text() == "mine"


# ---------------------------------------------------------------- sign -> verify


def test_sign_then_verify_passes_and_says_who_signed_what_and_when(run, key):
    assert invoke("verify", run).exit_code == 0
    result = sign(run, key)
    assert result.exit_code == 0, result.output
    lines = (run / "signatures.jsonl").read_text().splitlines()
    assert len(lines) == 1
    statement = json.loads(lines[0])["statement"]
    manifest = json.loads((run / "manifest.json").read_text())
    assert statement["artifacts"] == {k: v["sha256"] for k, v in manifest["artifacts"].items()}
    assert set(statement["artifacts"]) == {"results.json", "tables/groups.csv"}
    assert statement["config_sha256"] == hashlib.sha256(
        (run / "config.yaml").read_bytes()).hexdigest()
    assert statement["signer"]["name"] == "A. Auditor"
    result = invoke("verify", run)
    assert result.exit_code == 0, result.output
    assert "signed by A. Auditor (external auditor) on 20" in result.output
    assert "2 artifacts, config, review log of 0 entries: valid" in result.output
    assert statement["signer"]["key_fingerprint"] in result.output


def test_the_signature_verifies_with_the_public_key_alone(run, key):
    """An independent check: the signed bytes are the documented prefix + canonical JSON."""
    import base64

    from cryptography.hazmat.primitives import serialization

    assert sign(run, key).exit_code == 0
    record = json.loads((run / "signatures.jsonl").read_text())
    public = serialization.load_pem_public_key(key.with_name("auditor.pub").read_bytes())
    body = json.dumps(record["statement"], sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode()
    public.verify(base64.b64decode(record["signature"]),
                  b"gan-audit signed statement v1\n" + body)


def test_sign_with_an_encrypted_key_needs_its_passphrase(run, tmp_path):
    key = keygen(tmp_path / "keys", passphrase=PASS)
    result = sign(run, key)
    assert result.exit_code == 2 and "is encrypted: give its passphrase" in result.output
    result = sign(run, key, passphrase="wrong")
    assert result.exit_code == 2 and "the passphrase is wrong" in result.output
    assert not (run / "signatures.jsonl").exists()
    assert sign(run, key, passphrase=PASS).exit_code == 0
    assert invoke("verify", run).exit_code == 0


def _tamper_and_verify(run: Path, key: Path, tamper, *fragments: str) -> None:
    assert sign(run, key).exit_code == 0
    assert invoke("verify", run).exit_code == 0
    tamper(run)
    result = invoke("verify", run)
    assert result.exit_code == 1, result.output
    for fragment in fragments:
        assert fragment in result.output, result.output
    assert "Traceback" not in result.output


def _flip_byte(path: Path, at: int = 10) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def _rehash_manifest(run: Path) -> None:
    """What a forger does after editing: record the new hashes, so the manifest check passes."""
    from audit.manifest import read_manifest, record_artifacts, write_manifest

    manifest = read_manifest(run)
    manifest["config_sha256"] = hashlib.sha256((run / "config.yaml").read_bytes()).hexdigest()
    manifest["artifacts"] = {}
    record_artifacts(run, ["results.json", "tables"], manifest)
    write_manifest(run, manifest)


@pytest.mark.parametrize("rehash", [False, True], ids=["manifest-as-signed", "manifest-rehashed"])
@pytest.mark.parametrize(("target", "fragment"), [
    ("results.json", "results.json: changed after signing"),
    ("tables/groups.csv", "tables/groups.csv: changed after signing"),
    ("config.yaml", "config.yaml: changed after signing"),
])
def test_one_byte_changed_after_signing_fails_naming_the_file(run, key, target, fragment,
                                                              rehash):
    def tamper(run: Path) -> None:
        _flip_byte(run / target)
        if rehash:
            _rehash_manifest(run)

    _tamper_and_verify(run, key, tamper, fragment, "signatures.jsonl line 1 (A. Auditor")


def test_a_file_added_to_the_manifest_after_signing_fails(run, key):
    def tamper(run: Path) -> None:
        (run / "tables" / "extra.csv").write_text("x\n")
        _rehash_manifest(run)

    _tamper_and_verify(run, key, tamper, "tables/extra.csv: added after signing")


def test_an_edited_review_entry_fails_naming_the_review_log(run, key):
    review(run, IDS[0], "disputed")

    def tamper(run: Path) -> None:  # the status changed, its hash recomputed: a forger's edit
        from audit.report.review import entry_hash, entry_to_line

        entry = json.loads((run / "review.jsonl").read_text())
        entry["status"] = "accepted"
        entry["hash"] = entry_hash(entry)
        (run / "review.jsonl").write_bytes(entry_to_line(entry))

    _tamper_and_verify(run, key, tamper, "review.jsonl: edited after signing")


def test_a_review_entry_added_after_signing_fails(run, key):
    review(run, IDS[0], "disputed")
    _tamper_and_verify(run, key, lambda run: review(run, IDS[1]),
                       "review.jsonl: 1 entry added after signing")


def test_a_review_entry_added_to_an_empty_log_after_signing_fails(run, key):
    _tamper_and_verify(run, key, lambda run: review(run, IDS[1]),
                       "review.jsonl: 1 entry added after signing (it had none)")


def test_an_edited_signature_line_fails(run, key):
    def tamper(run: Path) -> None:
        record = json.loads((run / "signatures.jsonl").read_text())
        record["statement"]["signer"]["role"] = "chief compliance officer"
        (run / "signatures.jsonl").write_text(json.dumps(record) + "\n")

    _tamper_and_verify(run, key, tamper, "the signature does not match its statement")


def test_an_untrusted_key_fails_naming_the_signer_and_fingerprint(run, tmp_path):
    trusted = keygen(tmp_path / "trusted", "alice")
    stranger = keygen(tmp_path / "stranger", "mallory")
    assert sign(run, trusted, name="Alice", role="auditor").exit_code == 0
    assert invoke("verify", run, "--trusted-keys", tmp_path / "trusted").exit_code == 0
    assert sign(run, stranger, name="Mallory", role="auditor").exit_code == 0
    record = json.loads((run / "signatures.jsonl").read_text().splitlines()[1])
    result = invoke("verify", run, "--trusted-keys", tmp_path / "trusted")
    assert result.exit_code == 1, result.output
    fp = record["statement"]["signer"]["key_fingerprint"]
    assert f"signed by Mallory (auditor) with key {fp}, which is not among the trusted keys" \
        in result.output
    assert "Alice" not in result.output.split("differs")[1]  # Alice's signature is fine
    assert invoke("verify", run).exit_code == 0  # without a trust list, both are valid


def test_two_signers_both_listed_and_both_checked(run, tmp_path):
    a, b = keygen(tmp_path / "k", "a"), keygen(tmp_path / "k", "b")
    assert sign(run, a, name="A. Auditor", role="auditor").exit_code == 0
    review(run, IDS[0])
    assert sign(run, b, name="B. Officer", role="compliance officer").exit_code == 0
    result = invoke("verify", run, "--trusted-keys", tmp_path / "k")
    # A signed before the review: the entry added since makes A's statement out of date
    assert result.exit_code == 1
    assert "signatures.jsonl line 1 (A. Auditor, auditor): review.jsonl: 1 entry added" \
        in result.output
    assert "signed by B. Officer (compliance officer)" in result.output
    assert "review log of 1 entries: valid" in result.output
    assert "line 2" not in result.output


def test_sign_refuses_a_folder_that_does_not_match_its_manifest(run, key):
    _flip_byte(run / "results.json")
    result = sign(run, key)
    assert result.exit_code == 2, result.output
    assert "does not match its manifest, so it was not signed" in result.output
    assert "results.json: changed after signing" in result.output
    assert not (run / "signatures.jsonl").exists()


def test_signatures_file_is_bookkeeping_not_an_artifact(run, key):
    """verify accepts signatures.jsonl next to the artifacts (like review.jsonl), and sign
    writes it through the run folder's journal."""
    from audit.runfolder import created_files

    assert sign(run, key).exit_code == 0
    assert "signatures.jsonl" in created_files(run)
    result = invoke("verify", run)
    assert result.exit_code == 0 and "not written by this run" not in result.output


def test_a_damaged_signature_line_fails_and_the_others_are_still_checked(run, key):
    def tamper(run: Path) -> None:
        with open(run / "signatures.jsonl", "ab") as fh:
            fh.write(b'{"statement": [1, 2]}\n')

    _tamper_and_verify(run, key, tamper, "signatures.jsonl line 2: not a signature line",
                       "signed by A. Auditor")


def test_a_signature_copied_from_another_run_folder_fails(run, key, tmp_path):
    other = make_run(tmp_path / "other")
    (other / "tables" / "groups.csv").write_text("group,n\nlight,1\ndark,99\n")
    _rehash_manifest(other)
    assert sign(run, key).exit_code == 0
    shutil.copy(run / "signatures.jsonl", other / "signatures.jsonl")
    result = invoke("verify", other)
    assert result.exit_code == 1
    assert "tables/groups.csv: changed after signing" in result.output
