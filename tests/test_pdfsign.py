"""The signed report PDF (#21 item 2): a PAdES signature that Poppler's ``pdfsig`` (an
independent implementation, on NSS or GPGME) calls valid, and invalid once a signed byte
changes; the key file's protections; one clear message for each unusable input."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from audit.cli import cli
from audit.errors import SigningError

pytest.importorskip("pyhanko", reason="pyHanko (the 'sign' extra) signs PDFs")
pytest.importorskip("weasyprint", reason="WeasyPrint makes the PDF to sign")

NAME = "A. Auditor, Example Corp"
PASS = "correct horse"
NEEDS_PDFSIG = pytest.mark.skipif(
    shutil.which("pdfsig") is None,
    reason="Poppler's pdfsig is not installed (apt-get install poppler-utils; .ci/run has it)")


@pytest.fixture(scope="module")
def p12(tmp_path_factory) -> Path:
    """A self-signed certificate for :data:`NAME`, encrypted with :data:`PASS`."""
    from audit.pdfsign import self_signed_certificate

    return self_signed_certificate(name=NAME, out_p12=tmp_path_factory.mktemp("key") / "me.p12",
                                   passphrase=PASS.encode())


def tiny_pdf(path: Path) -> Path:
    from audit.report.pdf import html_to_pdf

    return html_to_pdf("<!doctype html><html><body><h1>Audit</h1><p>impact ratio 0.71</p>"
                       "</body></html>", path)


def run_with_pdf(path: Path) -> Path:
    """A run folder as `gan-audit verify` checks it: marker, manifest, config.yaml and a
    report.pdf the manifest records (no models, no audit: the signature is what is tested)."""
    from audit.manifest import new_manifest, record_artifacts, write_manifest
    from audit.runfolder import claim

    with claim(path):
        config = b"name: tiny\n"
        (path / "config.yaml").write_bytes(config)
        write_manifest(path, new_manifest(audit_id="tiny", device="cpu",
                                          config_sha256=hashlib.sha256(config).hexdigest()))
        tiny_pdf(path / "report.pdf")
        record_artifacts(path, ["report.pdf"])
    return path


def pdfsig(path: Path) -> str:
    out = subprocess.run(["pdfsig", str(path)], capture_output=True, text=True, timeout=60)
    return out.stdout + out.stderr


def field(report: str, name: str) -> list[str]:
    """The values of ``  - <name>: <value>`` lines in pdfsig's output."""
    return re.findall(rf"^\s*- {re.escape(name)}: (.*)$", report, flags=re.M)


@NEEDS_PDFSIG
def test_pdfsig_lists_one_valid_signature_by_the_named_signer(tmp_path, p12):
    from audit.pdfsign import sign_pdf

    original = tiny_pdf(tmp_path / "report.pdf").read_bytes()
    signed = sign_pdf(tmp_path / "report.pdf", tmp_path / "signed.pdf", p12=p12,
                      passphrase=PASS.encode(), reason="audit approved", location="Berlin")
    report = pdfsig(signed)
    assert report.count("Signature #") == 1, report
    assert field(report, "Signer Certificate Common Name") == [NAME], report
    assert field(report, "Signature Validation") == ["Signature is Valid."], report
    assert field(report, "Signing Hash Algorithm") == ["SHA-256"], report
    assert field(report, "Signature Type") == ["ETSI.CAdES.detached"], report  # PAdES
    assert "Total document signed" in report, report
    # a self-signed certificate: valid signature, certificate not trusted by the reader
    assert field(report, "Certificate Validation") != ["Certificate is Trusted."], report
    assert signed.read_bytes().startswith(original)  # an incremental update: bytes kept


@NEEDS_PDFSIG
def test_one_changed_byte_in_the_signed_range_makes_pdfsig_call_it_invalid(tmp_path, p12):
    from audit.pdfsign import sign_pdf

    tiny_pdf(tmp_path / "report.pdf")
    signed = sign_pdf(tmp_path / "report.pdf", tmp_path / "signed.pdf", p12=p12,
                      passphrase=PASS.encode())
    data = bytearray(signed.read_bytes())
    at = data.index(b"/MediaBox") + 2  # in the original PDF: the first signed range
    data[at] ^= 0x01  # /MediaBox -> /MdiaBox
    tampered = tmp_path / "tampered.pdf"
    tampered.write_bytes(bytes(data))
    report = pdfsig(tampered)
    assert field(report, "Signer Certificate Common Name") == [NAME], report  # still found
    assert field(report, "Signature Validation") == ["Digest Mismatch."], report
    assert field(pdfsig(signed), "Signature Validation") == ["Signature is Valid."]


def test_key_file_is_private_new_and_opens_only_with_its_passphrase(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import pkcs12

    from audit.pdfsign import self_signed_certificate

    out = self_signed_certificate(name=NAME, out_p12=tmp_path / "k.p12", passphrase=b"pw",
                                  days=30)
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    with pytest.raises(ValueError):
        pkcs12.load_key_and_certificates(out.read_bytes(), b"wrong")
    key, cert, _ = pkcs12.load_key_and_certificates(out.read_bytes(), b"pw")
    assert key.key_size == 3072
    assert cert.subject.rfc4514_string() == f"CN={NAME.replace(',', chr(92) + ',')}"
    assert cert.issuer == cert.subject
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.content_commitment  # nonRepudiation
    days = (cert.not_valid_after_utc - cert.not_valid_before_utc).total_seconds() / 86400
    assert 30 < days < 30.01  # 30 days and the 5 minutes of clock slack
    before = out.read_bytes()
    with pytest.raises(SigningError, match="exists; gan-audit never overwrites a key"):
        self_signed_certificate(name=NAME, out_p12=out)
    assert out.read_bytes() == before


def test_unusable_inputs_raise_one_clear_error(tmp_path, p12):
    from audit.pdfsign import sign_pdf

    pdf = tiny_pdf(tmp_path / "report.pdf")
    (tmp_path / "not.p12").write_bytes(b"-----BEGIN CERTIFICATE-----\nMIIB\n")
    cases = [
        (dict(p12=p12, passphrase=b"wrong"), "cannot be opened with the passphrase given"),
        (dict(p12=p12), "cannot be opened with no passphrase"),
        (dict(p12=tmp_path / "not.p12"), "not.p12: not a PKCS#12 file"),
        (dict(p12=tmp_path / "absent.p12"), "absent.p12: cannot read the PKCS#12 file"),
    ]
    for kwargs, message in [*cases, (dict(p12=_certificate_only(p12, tmp_path)),
                                     "cert.p12: holds no private key and certificate")]:
        with pytest.raises(SigningError, match=re.escape(message)):
            sign_pdf(pdf, tmp_path / "out.pdf", **kwargs)
    (tmp_path / "fake.pdf").write_text("hello")
    for src, message in [(tmp_path / "absent.pdf", "cannot read the PDF to sign"),
                         (tmp_path / "fake.pdf", "not a PDF")]:
        with pytest.raises(SigningError, match=message):
            sign_pdf(src, tmp_path / "out.pdf", p12=p12, passphrase=PASS.encode())
    assert not (tmp_path / "out.pdf").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def _certificate_only(p12: Path, folder: Path) -> Path:
    """A PKCS#12 file holding the certificate of ``p12`` without its key (unencrypted)."""
    from cryptography.hazmat.primitives.serialization import NoEncryption, pkcs12

    _key, cert, _ = pkcs12.load_key_and_certificates(p12.read_bytes(), PASS.encode())
    out = folder / "cert.p12"
    out.write_bytes(pkcs12.serialize_key_and_certificates(None, None, None, [cert],
                                                          NoEncryption()))
    return out


def test_a_missing_pyhanko_names_the_extra_to_install(tmp_path, p12, monkeypatch):
    import sys

    from audit.errors import DependencyError
    from audit.pdfsign import sign_pdf

    monkeypatch.setitem(sys.modules, "pyhanko.sign.signers", None)  # import fails
    with pytest.raises(DependencyError, match=re.escape("pip install 'gan-audit[sign]'")):
        sign_pdf(tiny_pdf(tmp_path / "a.pdf"), tmp_path / "b.pdf", p12=p12,
                 passphrase=PASS.encode())


@NEEDS_PDFSIG
def test_cli_signs_the_run_report_and_verify_accepts_the_folder(tmp_path, monkeypatch):
    run = run_with_pdf(tmp_path / "run")
    monkeypatch.setenv("P12_PASS", PASS)
    runner = CliRunner()
    made = runner.invoke(cli, ["keygen", "--x509", "--name", NAME, "--out",
                               str(tmp_path / "me.p12"), "--passphrase-env", "P12_PASS",
                               "--days", "7"])
    assert made.exit_code == 0, made.output
    signed = runner.invoke(cli, ["sign-pdf", str(run), "--p12", str(tmp_path / "me.p12"),
                                 "--passphrase-env", "P12_PASS", "--reason", "approved"])
    assert signed.exit_code == 0, signed.output
    assert field(pdfsig(run / "report.signed.pdf"), "Signature Validation") == [
        "Signature is Valid."]
    verified = runner.invoke(cli, ["verify", str(run)])
    assert verified.exit_code == 0, verified.output
    (run / "report.signed.pdf").write_bytes(b"%PDF-1.7 forged")
    verified = runner.invoke(cli, ["verify", str(run)])
    assert verified.exit_code == 1 and "report.signed.pdf" in verified.output


def test_cli_refuses_to_sign_a_report_pdf_changed_since_the_run(tmp_path, p12, monkeypatch):
    run = run_with_pdf(tmp_path / "run")
    with open(run / "report.pdf", "ab") as fh:
        fh.write(b"\n% appended by someone\n")
    monkeypatch.setenv("P12_PASS", PASS)
    result = CliRunner().invoke(cli, ["sign-pdf", str(run), "--p12", str(p12),
                                      "--passphrase-env", "P12_PASS"])
    assert result.exit_code == 2, result.output
    assert "will not sign a report.pdf that differs from the manifest" in result.output
    assert not (run / "report.signed.pdf").exists()


def test_cli_names_an_unset_passphrase_variable(tmp_path, p12, monkeypatch):
    monkeypatch.delenv("NO_SUCH_PASS_VAR", raising=False)
    result = CliRunner().invoke(cli, ["keygen", "--x509", "--name", NAME, "--out",
                                      str(tmp_path / "k.p12"), "--passphrase-env",
                                      "NO_SUCH_PASS_VAR"])
    assert result.exit_code == 2
    assert ("--passphrase-env NO_SUCH_PASS_VAR: the environment variable NO_SUCH_PASS_VAR "
            "is not set") in result.output
    assert not (tmp_path / "k.p12").exists()


def test_keygen_x509_needs_a_name_and_an_ed25519_key_takes_none(tmp_path) -> None:
    """One command, two key kinds: --name and --days belong to --x509 only."""
    from click.testing import CliRunner

    from audit.cli import cli

    no_name = CliRunner().invoke(cli, ["keygen", "--x509", "--out", str(tmp_path / "a.p12")])
    assert no_name.exit_code == 2 and "--x509 needs --name" in no_name.output
    stray = CliRunner().invoke(cli, ["keygen", "--name", "A", "--out", str(tmp_path / "k")])
    assert stray.exit_code == 2 and "go with --x509" in stray.output
    assert not list(tmp_path.iterdir())  # nothing written
