"""Per-migration TLS credentials for CRIU's page server, derived from the cluster key.

During a live migration the source's ``criu dump --lazy-pages`` serves the sandbox's
memory over TCP and the target's ``criu lazy-pages`` fetches it: that stream is a
tenant's whole memory, and whoever connects first gets it. CRIU speaks TLS (GnuTLS)
with *mutual* certificate checks (its server requires a client certificate), so each
migration gets its own certificate authority, and both ends trust only it.

The CA's key is derived from the cluster key and the migration's ID (HMAC-SHA256 →
a P-256 scalar), so both nodes make the same CA independently: no key crosses the
network or lands in PostgreSQL. Each end then makes a fresh key of its own and
signs its leaf certificate with that CA. A peer without the cluster key cannot make
a certificate this migration accepts; a certificate of another migration names
another CA and is refused too (a misrouted connection). Both leaves name the
source's address: CRIU checks the peer's certificate against ``--address`` on both
sides (the client's is the server's address, the server's is its own listen address).
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

# P-256's group order: a derived scalar is reduced into [1, n-1].
_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
VALID = datetime.timedelta(hours=1)


@dataclass(frozen=True)
class TlsFiles:
    """What CRIU's ``--tls-cacert/--tls-cert/--tls-key`` name."""

    cacert: Path
    cert: Path
    key: Path

    def criu_args(self) -> list[str]:
        return ["--tls", "--tls-cacert", str(self.cacert), "--tls-cert", str(self.cert), "--tls-key", str(self.key)]

    def criu_config(self) -> str:
        """The same options as lines of a CRIU config file (the dump runs through runc's
        RPC, where only the bundle's config file can add options)."""
        return f"tls\ntls-cacert {self.cacert}\ntls-cert {self.cert}\ntls-key {self.key}\n"


def _ca_key(cluster_key: bytes, migration_id: str) -> ec.EllipticCurvePrivateKey:
    seed = hmac.new(cluster_key, f"cellbox page-server CA\n{migration_id}".encode(), hashlib.sha512).digest()
    return ec.derive_private_key(int.from_bytes(seed, "big") % (_N - 1) + 1, ec.SECP256R1())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def ca_cert(cluster_key: bytes, migration_id: str, now: datetime.datetime | None = None) -> x509.Certificate:
    """The migration's CA (same subject and key on every node; serial and validity may
    differ between nodes, which chain checks do not compare)."""
    key = _ca_key(cluster_key, migration_id)
    now = now or datetime.datetime.now(datetime.timezone.utc)
    subject = _name(f"cellbox migration {migration_id}")
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALID)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .sign(key, hashes.SHA256()))


def write(dir_: Path, cluster_key: bytes, migration_id: str, source_address: str, role: str) -> TlsFiles:
    """The CA certificate and a fresh leaf (``role``: "server" on the source, "client"
    on the target) in ``dir_`` (0700, key 0600)."""
    dir_.mkdir(parents=True, exist_ok=True, mode=0o700)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca = ca_cert(cluster_key, migration_id, now)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    usage = x509.ExtendedKeyUsageOID.SERVER_AUTH if role == "server" else x509.ExtendedKeyUsageOID.CLIENT_AUTH
    leaf = (x509.CertificateBuilder().subject_name(_name(source_address)).issuer_name(ca.subject)
            .public_key(leaf_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALID)
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(source_address))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .sign(_ca_key(cluster_key, migration_id), hashes.SHA256()))
    files = TlsFiles(dir_ / "ca.pem", dir_ / f"{role}.pem", dir_ / f"{role}-key.pem")
    files.cacert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    fd = os.open(files.key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return files
