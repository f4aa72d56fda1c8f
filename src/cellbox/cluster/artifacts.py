"""Snapshot artifacts in S3-compatible object storage: content-addressed, checksummed,
authenticated with the cluster key.

Layout in the bucket::

    blobs/sha256/<digest>        a file (btrfs send stream, tar of CRIU images), by content
    manifests/<digest>.json      {"manifest": {...}, "hmac": "<hex>"}: which blobs make a
                                 snapshot, HMAC-SHA256(cluster key, manifest bytes)

Why authenticated, not only checksummed: restoring a CRIU image runs whatever code it
holds as root on the node. Whoever can write to the bucket must not be able to make a
node do that: the manifest's HMAC proves a cluster member wrote it, and the manifest
pins every blob by SHA-256, so changing one byte of any blob, or pointing the manifest
at another blob, is refused before anything is unpacked. (The blobs are not encrypted:
a manifest's bundle config holds the sandbox agent's secret, so the bucket must be
private to the cluster; AES-GCM with the same key is the next step.)

A node keeps fetched blobs in its cache directory by digest, so resuming on the node
that already has a snapshot costs no download (placement prefers it).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHUNK = 1 << 20


class Tampered(Exception):
    """An artifact failed its checksum or its authentication: it must not be used."""


@dataclass(frozen=True)
class Blob:
    name: str  # its role in the snapshot: "rootfs.btrfs", "mem.tar"
    digest: str
    size: int


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _canonical(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()


class ArtifactStore:
    def __init__(self, s3: Any, bucket: str, key: bytes, cache_dir: Path) -> None:
        self.s3 = s3  # a boto3 S3 client (any S3: AWS, MinIO, Ceph, moto in the tests)
        self.bucket = bucket
        self.key = key
        self.cache = cache_dir
        self.cache.mkdir(parents=True, exist_ok=True, mode=0o700)

    @classmethod
    def connect(cls, endpoint: str, bucket: str, key: bytes, cache_dir: Path) -> "ArtifactStore":
        import boto3

        # Credentials come from the usual AWS variables/files; the region is required
        # by the client even where the store has none.
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name=os.environ.get("AWS_REGION", "us-east-1"))
        return cls(s3, bucket, key, cache_dir)

    # -- write -------------------------------------------------------------------------

    def put_blob(self, name: str, path: Path) -> Blob:
        """Upload ``path`` under its digest, unless the store already has that content."""
        digest = file_digest(path)
        key = f"blobs/sha256/{digest}"
        try:
            self.s3.head_object(Bucket=self.bucket, Key=key)
        except self.s3.exceptions.ClientError:
            self.s3.upload_file(str(path), self.bucket, key)
        return Blob(name, digest, path.stat().st_size)

    def put_manifest(self, manifest: dict[str, Any]) -> str:
        """Store a manifest with its HMAC; its digest is the snapshot's artifact address."""
        raw = _canonical(manifest)
        digest = hashlib.sha256(raw).hexdigest()
        mac = hmac.new(self.key, raw, hashlib.sha256).hexdigest()
        body = json.dumps({"manifest": manifest, "hmac": mac}).encode()
        self.s3.put_object(Bucket=self.bucket, Key=f"manifests/{digest}.json", Body=body)
        return digest

    # -- read --------------------------------------------------------------------------

    def get_manifest(self, digest: str) -> dict[str, Any]:
        """The manifest at ``digest``, after its HMAC and checksum hold; else ``Tampered``."""
        if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
            raise Tampered(f"{digest!r} is not a sha256 digest")
        body = self.s3.get_object(Bucket=self.bucket, Key=f"manifests/{digest}.json")["Body"].read(1 << 20)
        try:
            doc = json.loads(body)
            manifest, mac = doc["manifest"], doc["hmac"]
            raw = _canonical(manifest)
        except (ValueError, KeyError, TypeError):
            raise Tampered(f"manifest {digest[:12]}: not a manifest") from None
        want = hmac.new(self.key, raw, hashlib.sha256).hexdigest()
        if not isinstance(mac, str) or not hmac.compare_digest(mac, want):
            raise Tampered(f"manifest {digest[:12]}: authentication failed (not written with this cluster key)")
        if hashlib.sha256(raw).hexdigest() != digest:
            raise Tampered(f"manifest {digest[:12]}: content does not match its address")
        return manifest

    def fetch_blob(self, blob: dict[str, Any]) -> Path:
        """The blob's file in the local cache, downloaded and checked if not there yet."""
        digest = blob["digest"]
        if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
            raise Tampered(f"{digest!r} is not a sha256 digest")
        cached = self.cache / digest
        if cached.exists():
            return cached  # only verified files are ever renamed into the cache
        fd, tmp = tempfile.mkstemp(dir=self.cache, prefix=".part-")
        os.close(fd)
        try:
            self.s3.download_file(self.bucket, f"blobs/sha256/{digest}", tmp)
            if file_digest(Path(tmp)) != digest:
                raise Tampered(f"blob {blob.get('name')} ({digest[:12]}): checksum mismatch")
            os.replace(tmp, cached)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return cached

    def drop_cached(self, digest: str) -> None:
        (self.cache / digest).unlink(missing_ok=True)
