"""Live migration's credentials without a cluster: the per-migration CA both nodes
derive, the leaf certificates it signs, and the node-to-node token."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from cellbox.cluster import livemigrate, pagetls

KEY = bytes(range(32))


def _verifies(ca_pem: bytes, leaf_pem: bytes) -> bool:
    ca, leaf = x509.load_pem_x509_certificate(ca_pem), x509.load_pem_x509_certificate(leaf_pem)
    try:
        leaf.verify_directly_issued_by(ca)
        return True
    except Exception:  # noqa: BLE001 - InvalidSignature, a wrong key type: not issued by it
        return False


def test_both_nodes_derive_the_same_ca_and_trust_each_others_leaf(tmp_path: Path) -> None:
    src = pagetls.write(tmp_path / "src", KEY, "m1", "10.0.0.1", "server")
    dst = pagetls.write(tmp_path / "dst", KEY, "m1", "10.0.0.1", "client")
    # Made independently, yet each CA certificate verifies the other side's leaf.
    assert _verifies(src.cacert.read_bytes(), dst.cert.read_bytes())
    assert _verifies(dst.cacert.read_bytes(), src.cert.read_bytes())
    leaf = x509.load_pem_x509_certificate(src.cert.read_bytes())
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.1"]
    assert oct(src.key.stat().st_mode & 0o777) == "0o600"
    assert isinstance(pagetls._ca_key(KEY, "m1"), ec.EllipticCurvePrivateKey)


def test_another_migration_or_cluster_is_not_trusted(tmp_path: Path) -> None:
    mine = pagetls.write(tmp_path / "a", KEY, "m1", "10.0.0.1", "server")
    other_mig = pagetls.write(tmp_path / "b", KEY, "m2", "10.0.0.1", "client")
    other_key = pagetls.write(tmp_path / "c", bytes(32), "m1", "10.0.0.1", "client")
    assert not _verifies(mine.cacert.read_bytes(), other_mig.cert.read_bytes())
    assert not _verifies(mine.cacert.read_bytes(), other_key.cert.read_bytes())


def test_the_migration_token_names_the_migration_and_the_node() -> None:
    mid = "a" * 21
    tok = livemigrate.token(KEY, mid, "node-2")
    assert livemigrate.verify(KEY, f"Bearer {tok}", mid, "node-2")
    assert not livemigrate.verify(KEY, f"Bearer {tok}", mid, "node-1")  # misrouted
    assert not livemigrate.verify(KEY, f"Bearer {tok}", "b" * 21, "node-2")  # another migration
    assert not livemigrate.verify(bytes(32), f"Bearer {tok}", mid, "node-2")  # another cluster
    assert not livemigrate.verify(KEY, f"Bearer {livemigrate.token(KEY, mid, 'node-2', now=1)}", mid, "node-2")
    assert not livemigrate.verify(KEY, None, mid, "node-2")
    assert not livemigrate.verify(KEY, "Bearer cbx_mig_x_y", mid, "node-2")
