"""Images beyond the default one: Dockerfile builds, registry pulls, the catalog.

* ``refs.py``     what an image reference is (a local name, or HOST[:PORT]/NAME[:TAG|@DIGEST])
* ``tools.py``    buildah and skopeo with cellbox's own storage, policy and credentials
* ``build.py``    ``buildah build`` of a Dockerfile into the OCI layout, with progress
* ``pull.py``     ``skopeo copy`` from a registry into the OCI layout, digest checked
* ``catalog.py``  what cellbox knows about each named image beyond the OCI index

The OCI layout (``storage/images.py``) stays the one store of image content: builds and
pulls write into it, so layers are stored once by digest and shared between images,
and sandboxes start from its unpacked subvolumes as they do from the default image.
"""
