"""The envd protos we generate from say exactly what the pinned e2b SDK speaks.

``proto/envd/*.proto`` are printed from the descriptors embedded in the SDK
(scripts/e2b_protos.py) and our stubs generated from them (scripts/gen_envd.sh); if the
printer dropped or changed anything, the descriptor protoc built from our text would
differ from the SDK's. Compared field by field (names, numbers, types, labels,
oneofs, proto3 optional) and method by method (types, streaming).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2 as d

e2b_envd = pytest.importorskip("e2b.envd")
ROOT = Path(__file__).resolve().parents[2]


def _embedded(path: Path) -> d.FileDescriptorProto:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "file_desc":
            return d.FileDescriptorProto.FromString(node.args[0].value)  # type: ignore[attr-defined]
    raise AssertionError(f"no descriptor in {path}")


def _shape(fd: d.FileDescriptorProto) -> dict:
    def msg(m: d.DescriptorProto, prefix: str) -> dict:
        out = {f"{prefix}{m.name}": sorted(
            (f.name, f.number, f.type, f.label, f.type_name, f.proto3_optional,
             m.oneof_decl[f.oneof_index].name if f.HasField("oneof_index") else None) for f in m.field)}
        for n in m.nested_type:
            out.update(msg(n, f"{prefix}{m.name}."))
        return out

    shape: dict = {}
    for m in fd.message_type:
        shape.update(msg(m, ""))
    shape["enums"] = sorted((e.name, tuple((v.name, v.number) for v in e.value)) for e in fd.enum_type)
    shape["services"] = sorted((s.name, r.name, r.input_type, r.output_type, r.client_streaming, r.server_streaming)
                               for s in fd.service for r in s.method)
    return shape


@pytest.mark.parametrize("rel", ["process/process_pb.py", "filesystem/filesystem_pb.py"])
def test_generated_descriptors_match_the_sdks(rel):
    sdk = _embedded(Path(e2b_envd.__file__).parent / rel)
    ours = _embedded(ROOT / "src/cellbox/e2b/gen" / rel)
    assert _shape(ours) == _shape(sdk)
