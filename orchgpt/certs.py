"""The mesh's certificate authority: create it, issue certificates, read identities.

Identity lives in the certificate subject: the common name (CN) is the name
(an agent id, a user), the organisational unit (OU) is the role: ``server``,
``agent`` or ``client``. The orchestrator takes both from the verified peer
certificate, never from what a peer says about itself.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .errors import CertError

Role = Literal["server", "agent", "client"]
ROLES: tuple[Role, ...] = ("server", "agent", "client")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")
CA_DAYS = 3650
LEAF_DAYS = 825
AGENT_DAYS = 90  # agent certificates go to remote hosts: shorter-lived (renew with `orchgpt certs renew`)
ADMIN_OU = "admin"
# Names no user-issued certificate may carry: the daemon's own sender name (orchgpt.authz.DAEMON)
# and its server certificate; "local-*" names belong to agents orchgpt spawns itself.
RESERVED_NAMES = ("orchgpt", "server")
RESERVED_PREFIXES = ("local-",)


@dataclass(frozen=True)
class Identity:
    """Who is on the other end of a TLS connection."""

    name: str
    role: Role
    serial: int = 0  # the certificate's serial number (revocation is by serial)
    admin: bool = False  # a client certificate with the extra OU "admin": sees every user's work


@dataclass(frozen=True)
class CertPaths:
    """The three files a TLS peer needs."""

    ca: Path
    cert: Path
    key: Path

    def read(self) -> tuple[bytes, bytes, bytes]:
        """Return (ca, cert, key) PEM bytes, with a clear error when one is missing."""
        out = []
        for label, p in (("CA certificate", self.ca), ("certificate", self.cert), ("key", self.key)):
            try:
                out.append(p.read_bytes())
            except FileNotFoundError:
                raise CertError(f"{label} not found: {p} (create certificates with `orchgpt certs init`)") from None
            except OSError as exc:
                raise CertError(f"cannot read {label} {p}: {exc.strerror}") from None
        return out[0], out[1], out[2]


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise CertError(
            f"invalid certificate name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def check_issuable_name(name: str) -> str:
    """check_name, plus the reserved names: for certificates a user issues (`certs issue`)."""
    check_name(name)
    if name.lower() in RESERVED_NAMES:
        raise CertError(f"the name {name!r} is reserved for the orchestrator; choose another name")
    for prefix in RESERVED_PREFIXES:
        if name.lower().startswith(prefix):
            raise CertError(f"names starting with {prefix!r} are reserved for agents orchgpt spawns itself")
    return name


def write_private(path: Path, data: bytes) -> None:
    """Write a file readable by its owner only (0600), replacing it atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass
class CA:
    """A loaded certificate authority."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls, common_name: str = "orchgpt mesh CA") -> CA:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "orchgpt"),
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            ]
        )
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def load(cls, directory: Path) -> CA:
        cert_p, key_p = directory / "ca.pem", directory / "ca-key.pem"
        try:
            cert = x509.load_pem_x509_certificate(cert_p.read_bytes())
            key = serialization.load_pem_private_key(key_p.read_bytes(), password=None)
        except FileNotFoundError as exc:
            raise CertError(
                f"no CA in {directory}: {exc.filename} is missing (run `orchgpt certs init --dir {directory}`)"
            ) from None
        except ValueError as exc:
            raise CertError(f"cannot parse the CA in {directory}: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CertError(f"{key_p}: expected an EC private key")
        return cls(cert, key)

    def save(self, directory: Path) -> None:
        write_public(directory / "ca.pem", self.cert_pem)
        write_private(directory / "ca-key.pem", _key_pem(self.key))

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(
        self,
        name: str,
        role: Role,
        hosts: tuple[str, ...] | list[str] = (),
        admin: bool = False,
        days: int | None = None,
    ) -> tuple[bytes, bytes]:
        """Issue a leaf certificate; returns (cert PEM, key PEM).

        ``admin`` (clients only) adds a second OU, ``admin``, to the subject.
        """
        check_name(name)
        if role not in ROLES:
            raise CertError(f"invalid role {role!r}: expected one of {', '.join(ROLES)}")
        if admin and role != "client":
            raise CertError("only a client certificate can be an admin certificate")
        days = days if days is not None else (AGENT_DAYS if role == "agent" else LEAF_DAYS)
        if days < 1:
            raise CertError(f"invalid lifetime of {days} days: at least 1")
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "orchgpt"),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
                *([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ADMIN_OU)] if admin else []),
                x509.NameAttribute(NameOID.COMMON_NAME, name),
            ]
        )
        sans: list[x509.GeneralName] = []
        for h in dict.fromkeys(hosts):
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(h)))
            except ValueError:
                sans.append(x509.DNSName(h))
        if not sans:
            sans.append(x509.DNSName(name))
        usage = [ExtendedKeyUsageOID.SERVER_AUTH] if role == "server" else []
        usage.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False)
        )
        cert = builder.sign(self.key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)

    def issue_to(
        self,
        directory: Path,
        name: str,
        role: Role,
        hosts: tuple[str, ...] | list[str] = (),
        admin: bool = False,
        days: int | None = None,
    ) -> CertPaths:
        cert_pem, key_pem = self.issue(name, role, hosts, admin=admin, days=days)
        paths = CertPaths(directory / "ca.pem", directory / f"{name}.pem", directory / f"{name}-key.pem")
        write_private(paths.key, key_pem)
        write_public(paths.cert, cert_pem)
        if not paths.ca.exists():
            write_public(paths.ca, self.cert_pem)
        return paths


@dataclass
class InitReport:
    created: list[Path]
    kept: list[Path]


def init_dir(directory: Path, hosts: list[str] | None = None, force_leaves: bool = False) -> InitReport:
    """Create the CA, server and CLI certificates in ``directory``.

    An existing CA is never replaced: it is loaded and used to issue whatever is
    missing. Existing server and CLI certificates are kept unless
    ``force_leaves`` is set.
    """
    directory.mkdir(parents=True, exist_ok=True)
    report = InitReport([], [])
    if (directory / "ca.pem").exists() or (directory / "ca-key.pem").exists():
        ca = CA.load(directory)
        report.kept.append(directory / "ca.pem")
    else:
        ca = CA.create()
        ca.save(directory)
        report.created.append(directory / "ca.pem")
    server_hosts = [*DEFAULT_HOSTS, *(hosts or [])]
    leaves: tuple[tuple[str, Role, list[str]], ...] = (
        ("server", "server", server_hosts),
        ("cli", "client", []),
    )
    for name, role, h in leaves:
        target = directory / f"{name}.pem"
        if target.exists() and (directory / f"{name}-key.pem").exists() and not force_leaves:
            report.kept.append(target)
            continue
        ca.issue_to(directory, name, role, h)
        report.created.append(target)
    return report


def identity_from_pem(pem: bytes) -> Identity:
    """Read (name, role) from a certificate's subject."""
    cert = x509.load_pem_x509_certificate(pem)
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    ous = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    if not cns:
        raise CertError("certificate has no common name")
    role = str(ous[0].value) if ous else ""
    if role not in ROLES:
        raise CertError(f"certificate of {cns[0].value!r} has no valid role (OU={role!r})")
    admin = role == "client" and any(str(o.value) == ADMIN_OU for o in ous[1:])
    return Identity(str(cns[0].value), role, cert.serial_number, admin)


def paths_for(directory: Path, name: str) -> CertPaths:
    return CertPaths(directory / "ca.pem", directory / f"{name}.pem", directory / f"{name}-key.pem")
