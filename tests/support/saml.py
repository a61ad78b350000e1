"""Session fixtures for the SAML tests: keys made at start-up and a real pysaml2 IdP process.

The IdP (`saml_idp.py` beside this file) runs on a free 127.0.0.1 port and is stopped by its PID.
Without xmlsec1 the tests skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

IDP_SCRIPT = Path(__file__).with_name("saml_idp.py")
START_TIMEOUT_S = 15.0


@dataclass(frozen=True, slots=True)
class KeyPair:
    key_file: Path
    cert_file: Path


@dataclass(frozen=True, slots=True)
class SamlIdp:
    """The running identity provider: where it answers, and its process id."""

    base_url: str
    pid: int

    @property
    def metadata_url(self) -> str:
        return f"{self.base_url}/metadata"

    @property
    def entity_id(self) -> str:
        return self.metadata_url

    def register_sp(self, metadata_xml: str) -> None:
        """Load a service provider's metadata into the IdP, as its administrator would."""
        response = httpx2.post(f"{self.base_url}/sp", content=metadata_xml.encode("utf-8"), timeout=10)
        response.raise_for_status()


def make_key_pair(directory: Path, name: str) -> KeyPair:
    """A fresh RSA-2048 key and a self-signed certificate valid for a day, as PEM files."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"nexus-test-{name}")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    pair = KeyPair(directory / f"{name}.key", directory / f"{name}.crt")
    pair.key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    pair.key_file.chmod(0o600)
    pair.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return pair


def xmlsec_binary() -> str:
    """The xmlsec1 program; skips the test without it (fails under CI=true)."""
    found = shutil.which("xmlsec1")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("xmlsec1 must be installed when CI=true", pytrace=False)
        pytest.skip("no xmlsec1 on PATH")
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for_metadata(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the SAML IdP exited with {process.returncode}:\n{log.read_text()}", pytrace=False)
        try:
            if httpx2.get(url, timeout=1.0).status_code == 200:
                return
        except httpx2.TransportError:
            pass
        time.sleep(0.05)
    pytest.fail(f"the SAML IdP did not answer within {START_TIMEOUT_S}s:\n{log.read_text()}", pytrace=False)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


def idp_command(port: int, idp: KeyPair, rogue: KeyPair, xmlsec: str, *options: str) -> list[str]:
    """The command starting `saml_idp.py` on `port` with these keys (and any further `options`)."""
    return [
        sys.executable,
        str(IDP_SCRIPT),
        f"--port={port}",
        f"--key={idp.key_file}",
        f"--cert={idp.cert_file}",
        f"--rogue-key={rogue.key_file}",
        f"--rogue-cert={rogue.cert_file}",
        f"--xmlsec={xmlsec}",
        *options,
    ]


@pytest.fixture(scope="session")
def saml_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, KeyPair]:
    """Key pairs made for this session: "idp" (in its metadata), "rogue" (not), and "sp"."""
    directory = tmp_path_factory.mktemp("saml-keys")
    return {name: make_key_pair(directory, name) for name in ("idp", "rogue", "sp")}


@pytest.fixture(scope="session")
def saml_sp_keys(saml_keys: dict[str, KeyPair]) -> KeyPair:
    return saml_keys["sp"]


@pytest.fixture(scope="session")
def saml_idp(saml_keys: dict[str, KeyPair], tmp_path_factory: pytest.TempPathFactory) -> Iterator[SamlIdp]:
    """A pysaml2 identity provider in its own process on a free loopback port."""
    xmlsec = xmlsec_binary()
    port = _free_port()
    log = tmp_path_factory.mktemp("saml-idp") / "idp.log"
    idp, rogue = saml_keys["idp"], saml_keys["rogue"]
    command = idp_command(port, idp, rogue, xmlsec)
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)  # noqa: S603
    try:
        running = SamlIdp(base_url=f"http://127.0.0.1:{port}", pid=process.pid)
        _wait_for_metadata(process, running.metadata_url, log)
        yield running
    finally:
        _stop(process)


@dataclass(frozen=True, slots=True)
class TlsSite:
    """A certificate authority and a server certificate it signed for one host name."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def make_tls_site(directory: Path, host: str) -> TlsSite:
    """A fresh P-256 CA and a server certificate for `host`, valid for a day, as PEM files
    (clients trust the site through `SSL_CERT_FILE=ca_file`)."""
    from cryptography.hazmat.primitives.asymmetric import ec

    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Nexus test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    site = TlsSite(directory / "ca.pem", directory / f"{host}.crt", directory / f"{host}.key")
    site.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    site.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    site.key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    site.key_file.chmod(0o600)
    return site
