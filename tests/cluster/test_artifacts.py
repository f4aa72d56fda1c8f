"""Snapshot artifacts in a real S3-compatible server (moto on loopback): content
addressing, the cache, and refusal of every kind of tampering - a tampered CRIU image
restored would run the attacker's code as root."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from cellbox.cluster.artifacts import ArtifactStore, Tampered

from .s3 import S3Server

_buckets = itertools.count()


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    server = S3Server().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def store(s3: S3Server, tmp_path: Path) -> ArtifactStore:
    bucket = f"cellbox-test-{next(_buckets)}"
    st = ArtifactStore.connect(s3.endpoint, bucket, secrets.token_bytes(32), tmp_path / "cache")
    st.s3.create_bucket(Bucket=bucket)
    return st


def _snapshot(store: ArtifactStore, tmp_path: Path) -> tuple[str, dict]:
    mem = tmp_path / "mem.tar"
    mem.write_bytes(b"criu pages " * 1000)
    root = tmp_path / "rootfs.btrfs"
    root.write_bytes(secrets.token_bytes(4096))
    blobs = [store.put_blob("mem.tar", mem).__dict__, store.put_blob("rootfs.btrfs", root).__dict__]
    manifest = {"snapshot_id": "s1", "blobs": blobs}
    return store.put_manifest(manifest), manifest


def test_round_trip_and_cache(store: ArtifactStore, tmp_path: Path) -> None:
    digest, manifest = _snapshot(store, tmp_path)
    assert store.get_manifest(digest) == manifest
    for blob in manifest["blobs"]:
        path = store.fetch_blob(blob)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == blob["digest"]
        assert store.fetch_blob(blob) == path  # second time: the cache
    # Content addressing: the same bytes again are the same object, not a second copy.
    again = tmp_path / "again"
    again.write_bytes((tmp_path / "mem.tar").read_bytes())
    assert store.put_blob("x", again).digest == manifest["blobs"][0]["digest"]
    keys = [o["Key"] for o in store.s3.list_objects_v2(Bucket=store.bucket)["Contents"]]
    assert len([k for k in keys if k.startswith("blobs/")]) == 2


def test_a_tampered_blob_is_refused_and_never_cached(store: ArtifactStore, tmp_path: Path) -> None:
    digest, manifest = _snapshot(store, tmp_path)
    mem = manifest["blobs"][0]
    # The attacker can write the bucket: they replace the CRIU images' bytes.
    store.s3.put_object(Bucket=store.bucket, Key=f"blobs/sha256/{mem['digest']}", Body=b"evil payload")
    with pytest.raises(Tampered, match="checksum"):
        store.fetch_blob(store.get_manifest(digest)["blobs"][0])
    assert list(store.cache.iterdir()) == []  # no partial or bad file left to be used later


def test_a_tampered_manifest_is_refused(store: ArtifactStore, tmp_path: Path) -> None:
    digest, manifest = _snapshot(store, tmp_path)
    key = f"manifests/{digest}.json"
    doc = json.loads(store.s3.get_object(Bucket=store.bucket, Key=key)["Body"].read())
    evil_blob = store.put_blob("mem.tar", tmp_path / "rootfs.btrfs")  # a blob the attacker chose

    def put(d: dict) -> None:
        store.s3.put_object(Bucket=store.bucket, Key=key, Body=json.dumps(d).encode())
    # 1. point the manifest at the attacker's blob, keep the old HMAC
    put({"manifest": {**manifest, "blobs": [evil_blob.__dict__]}, "hmac": doc["hmac"]})
    with pytest.raises(Tampered, match="authentication"):
        store.get_manifest(digest)
    # 2. the same, with an HMAC under a key of their own
    raw = json.dumps({**manifest, "blobs": [evil_blob.__dict__]}, sort_keys=True, separators=(",", ":")).encode()
    put({"manifest": json.loads(raw), "hmac": hmac.new(b"k" * 32, raw, hashlib.sha256).hexdigest()})
    with pytest.raises(Tampered, match="authentication"):
        store.get_manifest(digest)
    # 3. not even a manifest
    store.s3.put_object(Bucket=store.bucket, Key=key, Body=b"\x00garbage")
    with pytest.raises(Tampered):
        store.get_manifest(digest)


def test_a_valid_manifest_moved_to_another_address_is_refused(store: ArtifactStore, tmp_path: Path) -> None:
    """Replaying snapshot A's (genuine) manifest under snapshot B's address."""
    a, _ = _snapshot(store, tmp_path)
    b = "0" * 64
    store.s3.copy_object(Bucket=store.bucket, Key=f"manifests/{b}.json",
                         CopySource={"Bucket": store.bucket, "Key": f"manifests/{a}.json"})
    with pytest.raises(Tampered, match="address"):
        store.get_manifest(b)


@pytest.mark.parametrize("digest", ["../../etc/passwd", "A" * 64, "", "0" * 63, "g" * 64])
def test_digests_that_are_not_digests_are_refused(store: ArtifactStore, digest: str) -> None:
    with pytest.raises(Tampered, match="not a sha256"):
        store.get_manifest(digest)
    with pytest.raises(Tampered, match="not a sha256"):
        store.fetch_blob({"name": "x", "digest": digest})
