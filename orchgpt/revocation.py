"""Certificate revocation: the CRL the CA signs, and the daemon's view of it.

`orchgpt certs revoke NAME` adds the certificate's serial to ``crl.pem`` in the certs
directory (an X.509 CRL signed by the mesh CA, replaced atomically, mode 0644). The
daemon loads it at start, reloads it when the file changes (its mtime is polled) and
on SIGHUP. A revoked certificate is refused at its next call; its open streams are
closed at once with a reason (see ``Revocations.track``).
"""

from __future__ import annotations

import datetime as dt
import os
import weakref
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from . import logs
from .certs import CA, Identity, write_public
from .errors import CertError

log = logs.get("orchgpt.revocation")

CRL_FILE = "crl.pem"
CRL_DAYS = 3650  # the list itself: it is re-signed at every revocation
REVOKED_DETAIL = "certificate revoked"
_PRUNE_FLOOR = 1024  # tracked serials before the first sweep of dead ones


def crl_path(certs_dir: Path) -> Path:
    return certs_dir / CRL_FILE


def read_crl(path: Path) -> x509.CertificateRevocationList | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return x509.load_pem_x509_crl(data)
    except ValueError as exc:
        raise CertError(f"{path} is not a PEM certificate revocation list: {exc}") from None


def revoked_serials(crl: x509.CertificateRevocationList | None) -> set[int]:
    return {r.serial_number for r in crl} if crl is not None else set()


def revoke(certs_dir: Path, serials: Iterable[int], ca: CA | None = None) -> Path:
    """Add ``serials`` to the CA's revocation list (created when missing); returns its path."""
    ca = ca or CA.load(certs_dir)
    path = crl_path(certs_dir)
    old = read_crl(path)
    now = dt.datetime.now(dt.UTC)
    entries: dict[int, dt.datetime] = {}
    if old is not None:
        for r in old:
            entries[r.serial_number] = r.revocation_date_utc
    for s in serials:
        entries.setdefault(int(s), now)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(now - dt.timedelta(minutes=5))
        .next_update(now + dt.timedelta(days=CRL_DAYS))
    )
    for serial, when in sorted(entries.items()):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
        )
    crl = builder.sign(ca.key, hashes.SHA256())
    write_public(path, crl.public_bytes(serialization.Encoding.PEM))
    return path


def certificate_serial(cert_file: Path) -> int:
    try:
        return x509.load_pem_x509_certificate(cert_file.read_bytes()).serial_number
    except FileNotFoundError:
        raise CertError(f"no certificate {cert_file}") from None
    except ValueError as exc:
        raise CertError(f"cannot parse the certificate {cert_file}: {exc}") from None


def parse_serial(text: str) -> int:
    """A serial as printed by ``openssl x509 -serial`` (hex) or ``0d<decimal>``."""
    t = text.strip().lower().replace(":", "")
    try:
        return int(t[2:], 10) if t.startswith("0d") else int(t.removeprefix("0x"), 16)
    except ValueError:
        raise CertError(f"invalid serial {text!r}: expected hex digits (or 0d<decimal>)") from None


def renew(certs_dir: Path, name: str, out: Path | None = None, days: int | None = None) -> tuple[Path, int, int]:
    """Re-issue NAME (same role, admin flag and hosts; a new key), then revoke the old serial.

    Returns (certificate path, old serial, new serial).
    """
    from .certs import identity_from_pem

    out = out or certs_dir
    cert_file = out / f"{name}.pem"
    try:
        pem = cert_file.read_bytes()
    except FileNotFoundError:
        raise CertError(f"no certificate {cert_file} to renew (issue one with `orchgpt certs issue`)") from None
    ident = identity_from_pem(pem)
    old = x509.load_pem_x509_certificate(pem)
    hosts: list[str] = []
    try:
        san = old.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        hosts = [*san.get_values_for_type(x509.DNSName), *(str(ip) for ip in san.get_values_for_type(x509.IPAddress))]
    except x509.ExtensionNotFound:
        pass
    ca = CA.load(certs_dir)
    paths = ca.issue_to(out, ident.name, ident.role, hosts, admin=ident.admin, days=days)
    revoke(certs_dir, [old.serial_number], ca)
    return paths.cert, old.serial_number, certificate_serial(paths.cert)


def cli(args: Any) -> int:
    """`orchgpt certs revoke` and `orchgpt certs renew`."""
    d = Path(args.dir)
    if args.certs_cmd == "renew":
        cert, old, new = renew(d, args.name, Path(args.out) if args.out else None, args.days)
        print(f"renewed {cert} (serial {new:x}); revoked the old serial {old:x} in {crl_path(d)}")
        return 0
    if args.serial:
        serial = parse_serial(args.serial)
    elif args.name:
        serial = certificate_serial(d / f"{args.name}.pem")
    else:
        raise CertError("name the certificate to revoke (NAME) or give --serial")
    if args.name in ("ca", "server") and not args.serial:
        raise CertError(f"{args.name!r} is the mesh's own certificate; revoking it would stop the mesh")
    path = revoke(d, [serial])
    print(f"revoked serial {serial:x}" + (f" ({args.name})" if args.name else "") + f"; list: {path}")
    print("a running orchgpt refuses it within seconds (or at once: kill -HUP the daemon)")
    return 0


class Revocations:
    """The daemon's revocation list: serials refused, and the open streams to close.

    Without a path (tests, embedded use) nothing is revoked.
    """

    def __init__(self, path: Path | None = None, ca_file: Path | None = None) -> None:
        self.path = path
        self.ca_file = ca_file
        self.serials: frozenset[int] = frozenset()
        self._stamp: tuple[int, int, int] | None = None
        # serial -> its open streams, held weakly (a tuple of references: most serials have one
        # stream, and a WeakSet per agent cost ~0.8 KiB of the daemon's memory; issue 17)
        self._streams: dict[int, tuple[weakref.ref[Any], ...]] = {}
        self._prune_at = _PRUNE_FLOOR  # the next size at which dead serials are swept out
        self.reload(force=True)

    # -- loading
    def _file_stamp(self) -> tuple[int, int, int] | None:
        if self.path is None:
            return None
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def reload(self, force: bool = False) -> bool:
        """Re-read the list when the file changed (or ``force``); True when it was re-read."""
        stamp = self._file_stamp()
        if not force and stamp == self._stamp:
            return False
        self._stamp = stamp
        if self.path is None:
            return False
        try:
            crl = read_crl(self.path)
            if crl is not None and self.ca_file is not None and self.ca_file.exists():
                ca = x509.load_pem_x509_certificate(self.ca_file.read_bytes())
                if not crl.is_signature_valid(ca.public_key()):  # type: ignore[arg-type]
                    raise CertError(f"{self.path} is not signed by the mesh CA")
        except (CertError, ValueError, OSError) as exc:
            # keep what was loaded before: a broken file must not un-revoke anyone
            log.error("crl_not_loaded", path=str(self.path), error=str(exc))
            return False
        new = frozenset(revoked_serials(crl))
        added = new - self.serials
        self.serials = new
        log.info("crl_loaded", path=str(self.path), revoked=len(new), newly_revoked=len(added))
        for serial in added:
            for ref in self._streams.get(serial, ()):
                stream = ref()
                if stream is None:
                    continue
                try:
                    if stream.on_revoked is not None:
                        stream.on_revoked()
                except Exception as exc:  # one stream's failure must not stop the others
                    log.exception("revoked_stream_close_failed", serial=serial, error=str(exc))
        return True

    # -- checks
    def is_revoked(self, serial: int) -> bool:
        return bool(self.serials) and serial in self.serials

    def check_on_call(self, ident: Identity) -> str:
        """'' when ``ident`` may call; else the refusal detail. Notices a changed file at once."""
        self.reload()
        if self.is_revoked(ident.serial):
            return (
                f"{REVOKED_DETAIL}: the certificate of {ident.name!r} (serial {ident.serial:x}) "
                "is on the mesh's revocation list"
            )
        return ""

    # -- open streams
    def track(self, serial: int, stream: Any) -> None:
        """Call ``stream.on_revoked()`` when ``serial`` gets revoked, for as long as ``stream``
        lives (held weakly: a finished stream needs no untracking)."""
        refs = self._streams.get(serial)
        if refs is None:
            if len(self._streams) >= self._prune_at:
                # Swept when the map doubles, not at every new serial past a fixed size: one
                # scan per doubling keeps registering N agents O(N), not O(N^2) (issue 17).
                for k in [k for k, v in self._streams.items() if not _alive(v)]:
                    del self._streams[k]
                self._prune_at = max(_PRUNE_FLOOR, 2 * len(self._streams))
            self._streams[serial] = (weakref.ref(stream),)
        else:  # the same certificate again (a reconnect, a CLI's second stream): keep the live ones
            self._streams[serial] = (*(r for r in refs if r() is not None), weakref.ref(stream))

    def streams(self, serial: int) -> list[Any]:
        """The live streams tracked for ``serial``."""
        return [s for s in (r() for r in self._streams.get(serial, ())) if s is not None]


def _alive(refs: tuple[weakref.ref[Any], ...]) -> bool:
    return any(r() is not None for r in refs)
