"""A standard digital signature in the report PDF (PAdES baseline B-B, issue #21 item 2).

Any PDF reader (Acrobat, Okular, Evince, ``pdfsig``) shows who signed the PDF and whether a
byte of it changed since. The key and certificate come from a PKCS#12 file: one the user's
organisation issued, or a self-signed one made by :func:`self_signed_certificate` (readers
then call the signature valid and the certificate untrusted until the reader trusts it).

What it proves, and what not: that the holder of the key signed these exact bytes; the
signing time is the signer's clock (no time-stamp authority is asked, so nothing leaves the
machine). pyHanko and ``cryptography`` are imported here only (``pip install
'gan-audit[sign]'``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from audit.errors import DependencyError, SigningError
from audit.signing import write_new_file

__all__ = ["self_signed_certificate", "sign_pdf", "DEFAULT_DAYS"]

#: Validity of a self-signed certificate made by :func:`self_signed_certificate`, in days.
DEFAULT_DAYS = 3 * 365
_RSA_BITS = 3072  # NIST SP 800-57: RSA-3072 for signatures meant to hold beyond 2030
_INSTALL = "Install the signing extra: pip install 'gan-audit[sign]' (pyHanko, cryptography)."


def _require(module: str) -> Any:
    """Import ``module`` (pyhanko or cryptography) or raise :class:`DependencyError`."""
    import importlib
    import warnings

    try:
        with warnings.catch_warnings():  # pyHanko imports cryptography's deprecated DSA
            warnings.filterwarnings("ignore", message="DSA is deprecated")
            return importlib.import_module(module)
    except ImportError as exc:
        raise DependencyError(f"signing PDFs needs the package {module.split('.')[0]!r}, "
                              f"which is not installed. {_INSTALL}") from exc


def _certificate(key: Any, *, name: str, days: int) -> Any:
    """A self-signed X.509 certificate of ``key`` for the common name ``name``, valid from now
    for ``days`` days, usable for document signatures (digitalSignature, nonRepudiation)."""
    import datetime

    x509 = _require("cryptography.x509")
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    usage = x509.KeyUsage(digital_signature=True, content_commitment=True,  # = nonRepudiation
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          key_cert_sign=False, crl_sign=False, encipher_only=False,
                          decipher_only=False)
    return (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))  # clocks a little behind
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(usage, critical=True)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))


def self_signed_certificate(*, name: str, out_p12: Path, passphrase: bytes | None = None,
                            days: int = DEFAULT_DAYS) -> Path:
    """Make an RSA-3072 key and a self-signed certificate for ``name``; write both as PKCS#12.

    Parameters
    ----------
    name
        The signer's name: the certificate's common name, which PDF readers show as the
        signer (e.g. ``"A. Auditor, Example Corp"``).
    out_p12
        The PKCS#12 file to create (``.p12``); created with permissions 0600 and never
        overwritten.
    passphrase
        Encrypts the key (PBES2, AES-256); None writes it unencrypted (the file's
        permissions are then its only protection).
    days
        How long the certificate is valid, in days from now (>= 1).

    Returns
    -------
    ``out_p12``.

    Raises
    ------
    SigningError
        ``name`` is empty, ``days`` < 1, ``out_p12`` exists or cannot be created.

    Examples
    --------
    >>> p12 = self_signed_certificate(name="A. Auditor", out_p12=tmp / "me.p12",
    ...                               passphrase=b"s3cret")  # doctest: +SKIP
    """
    out_p12 = Path(out_p12)
    if not name.strip():
        raise SigningError("the signer's name is empty; give the name PDF readers should "
                              "show as the signer (--name \"A. Auditor\").")
    if days < 1:
        raise SigningError(f"the certificate must be valid for at least 1 day, got {days}.")
    _require("cryptography")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import pkcs12

    key = rsa.generate_private_key(public_exponent=65537, key_size=_RSA_BITS)
    cert = _certificate(key, name=name.strip(), days=days)
    encryption = (serialization.BestAvailableEncryption(passphrase) if passphrase
                  else serialization.NoEncryption())
    data = pkcs12.serialize_key_and_certificates(name.strip().encode("utf-8"), key, cert, None,
                                                 encryption)
    write_new_file(out_p12, data, mode=0o600)
    return out_p12


def _load_signer(p12: Path, passphrase: bytes | None) -> Any:
    """A pyHanko signer from the PKCS#12 file ``p12``; one clear :class:`SigningError`
    for a missing file, a file that is not PKCS#12, a wrong or missing passphrase, or a
    PKCS#12 without a key and certificate."""
    _require("pyhanko.sign.signers")
    from asn1crypto import pkcs12 as asn1_pkcs12
    from cryptography.hazmat.primitives.serialization import pkcs12
    from pyhanko.sign import signers

    p12 = Path(p12)
    try:
        data = p12.read_bytes()
    except OSError as exc:
        raise SigningError(f"{p12}: cannot read the PKCS#12 file ({exc.strerror}). Give "
                              f"the .p12/.pfx file of your certificate with --p12.") from exc
    try:
        asn1_pkcs12.Pfx.load(data, strict=True).native  # noqa: B018 (parses every field)
    except (ValueError, TypeError) as exc:
        raise SigningError(f"{p12}: not a PKCS#12 file (.p12/.pfx). Export your "
                              f"certificate with its private key as PKCS#12, or make one "
                              f"with `gan-audit keygen --x509`.") from exc
    try:
        key, cert, _others = pkcs12.load_key_and_certificates(data, passphrase)
    except ValueError as exc:
        given = "the passphrase given" if passphrase else "no passphrase"
        raise SigningError(f"{p12}: cannot be opened with {given}: the passphrase is "
                              f"wrong or missing. Put the right one in the environment "
                              f"variable named by --passphrase-env.") from exc
    if key is None or cert is None:
        raise SigningError(f"{p12}: holds no private key and certificate to sign with. "
                              f"Export the certificate together with its private key.")
    return signers.SimpleSigner.load_pkcs12_data(data, other_certs=[], passphrase=passphrase)


def sign_pdf(pdf_in: Path, pdf_out: Path, *, p12: Path, passphrase: bytes | None = None,
             name: str | None = None, reason: str | None = None,
             location: str | None = None) -> Path:
    """Write ``pdf_out``: ``pdf_in`` with a PAdES B-B signature (an incremental update, so
    the original bytes are kept and covered), written atomically.

    Parameters
    ----------
    pdf_in, pdf_out
        The PDF to sign and the signed copy to write (may not be the same file).
    p12, passphrase
        The PKCS#12 file holding the signer's key and certificate, and its passphrase.
    name
        The signer's name as the signature dictionary records it (/Name); readers show the
        certificate's common name in any case. None: the certificate's common name.
    reason, location
        Shown by readers next to the signature (e.g. "audit approved", "Berlin").

    Returns
    -------
    ``pdf_out``.

    Raises
    ------
    SigningError
        The PDF is missing or not a PDF; the PKCS#12 file is missing, not PKCS#12, or
        does not open with ``passphrase``; ``pdf_out`` is ``pdf_in``.
    """
    from io import BytesIO

    from audit.io import atomic_write_bytes

    pdf_in, pdf_out = Path(pdf_in), Path(pdf_out)
    if pdf_out.absolute() == pdf_in.absolute():
        raise SigningError(f"{pdf_out}: the signed copy must be a new file, not the PDF "
                              f"being signed.")
    data = _read_pdf(pdf_in)
    signer = _load_signer(p12, passphrase)
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.pdf_utils.misc import PdfError
    from pyhanko.sign.fields import SigSeedSubFilter
    from pyhanko.sign.signers import PdfSignatureMetadata, PdfSigner

    meta = PdfSignatureMetadata(field_name="gan-audit", md_algorithm="sha256",
                                subfilter=SigSeedSubFilter.PADES, name=name, reason=reason,
                                location=location)
    try:
        writer = IncrementalPdfFileWriter(BytesIO(data), strict=False)
        signed = PdfSigner(meta, signer=signer).sign_pdf(writer, output=BytesIO())
    except PdfError as exc:
        raise SigningError(f"{pdf_in}: cannot be signed: {exc}. Render the PDF again "
                              f"(gan-audit report RUN).") from exc
    atomic_write_bytes(pdf_out, signed.getvalue())
    return pdf_out


def _read_pdf(path: Path) -> bytes:
    """The bytes of the PDF ``path``; :class:`SigningError` when missing or not a PDF."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SigningError(f"{path}: cannot read the PDF to sign ({exc.strerror}). Render "
                              f"it first (gan-audit report RUN, without --no-pdf).") from exc
    if not data.startswith(b"%PDF-"):
        raise SigningError(f"{path}: not a PDF (it does not start with %PDF-). Render it "
                              f"again (gan-audit report RUN).")
    return data
