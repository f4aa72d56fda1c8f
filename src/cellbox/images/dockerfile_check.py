"""Refuse, before anything runs, the Dockerfile features buildah 1.28 cannot run safely.

Why: Debian 12's buildah (1.28.2) resolves a ``RUN --mount=type=bind,from=STAGE,source=``
path on the *host* (CVE-2024-1753, fixed in 1.35.1): a stage holding ``/hostroot -> /``
mounts the host's root read-write into the step. The same family of ``RUN`` flags has
more doors: ``type=cache`` mounts live in one host directory shared by every build (and
``id=../..`` walks out of it), ``type=secret``/``ssh`` read host files, ``--network``,
``--security`` and ``--device`` ask for the host's. ``ADD <url>`` is fetched by buildah
itself in the host's network namespace (not the build's), so it reaches loopback
services such as this server's own API. None of these is needed to build an image, so
the check is a short allow-list, not a list of known exploits:

* a ``RUN`` takes no flag except ``--mount=type=tmpfs`` (scratch space, nothing shared);
* ``COPY`` takes ``--from``, ``--chown``, ``--chmod``; ``ADD`` ``--chown``, ``--chmod``;
  ``FROM`` ``--platform``; ``HEALTHCHECK`` its timing flags; nothing else takes one;
* ``ADD`` sources are never URLs, ``git@`` remotes or variables (which could hold one);
* no parser directive (``# syntax=`` names a frontend we do not run, ``# escape=``
  changes how lines continue), no heredoc (1.28 does not know them: their bodies would
  be read as instructions);
* ``ONBUILD X`` is checked as ``X``; so is every ``OnBuild`` trigger in a base image's
  config (``check_triggers``), since buildah runs those in the child's build;
* ``FROM`` names no containers/image transport (``docker-archive:/host/path``...);
* no Dockerfile named ``*.in`` (``check_name``): buildah runs those through ``cpp`` on
  the host, whose ``#include`` reads host files.

Lines are read the way buildah's parser (moby's, via openshift/imagebuilder) reads them:
a trailing ``\\`` continues a line, comment and blank lines inside a continuation are
dropped, instruction names are case-insensitive, a flag is a word that starts with
``--`` with quotes and escapes inside it removed. As a backstop that does not depend on
reading lines exactly alike, any ``--mount=``/``--network=``/``--security=``/
``--device=`` anywhere in the text (quotes and escapes removed) is refused too.
Hand-written because no maintained Python Dockerfile parser follows buildah 1.28's rules
(dockerfile-parse, for one, reads heredocs, which 1.28 does not): a mismatch between
this check's reading and buildah's is exactly the hole, so the rules are few and stated.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from ..errors import InvalidRequest

_CONTINUATION = re.compile(r"\\[ \t]*$")
_DIRECTIVE = re.compile(r"^\s*#\s*([A-Za-z][A-Za-z0-9_-]*)\s*=")
_HEREDOC = re.compile(r"(?<!<)<<-?(?!<)\s*[\"']?[A-Za-z_]")  # not the shell's here-string <<<
# containers/image transports: "FROM docker-archive:/host/file.tar" reads a host path.
_TRANSPORT = re.compile(r"(docker-archive|oci-archive|oci|dir|containers-storage|docker-daemon|docker|tarball|"
                        r"sif|ostree):", re.IGNORECASE)
_BACKSTOP = re.compile(r"(?:^|[\s\[,])--(mount|network|security|device)\s*=", re.IGNORECASE)

# Flags an instruction may carry (lower-case names). RUN's one allowed form is checked
# separately (_check_mount).
_FLAGS: dict[str, frozenset[str]] = {
    "from": frozenset({"platform"}),
    "copy": frozenset({"from", "chown", "chmod"}),
    "add": frozenset({"chown", "chmod"}),
    "healthcheck": frozenset({"interval", "timeout", "start-period", "start-interval", "retries"}),
}
# buildah's tmpfs mount options (buildah internal/parse GetTmpfsMount).
_TMPFS_KEYS = frozenset({"type", "target", "dst", "destination", "ro", "readonly", "tmpfs-size", "tmpfs-mode",
                         "size", "mode", "notmpcopyup"})


class DockerfileRefused(InvalidRequest):
    """The Dockerfile asks for something the builder refuses; names the line and why."""

    status = 400
    code = "DOCKERFILE_REFUSED"


@dataclass(frozen=True)
class _Line:
    number: int  # first physical line (1-based)
    text: str  # the logical line, continuations joined


def check(text: str, *, where: str = "Dockerfile") -> None:
    """Raise :class:`DockerfileRefused` for the first refused line of ``text``."""
    text = text.removeprefix("\ufeff")
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    _check_directives(lines, where)
    for line in _logical_lines(lines):
        _check_instruction(line.text, line.number, where)
    _backstop(lines, where)


def check_name(dockerfile: str) -> None:
    """buildah runs a Dockerfile whose name ends in ``.in`` through the host's C
    preprocessor: ``#include "/etc/shadow"`` reads any host file into the build, and
    ``#define`` can assemble lines this check never sees. Such names are refused."""
    if dockerfile.lower().endswith(".in"):
        raise DockerfileRefused(f"dockerfile: {dockerfile!r}: a name ending in .in is run through the C "
                                "preprocessor by this builder (#include reads host files); rename it")


def triggers_of(config: Mapping[str, object]) -> list[str]:
    """Every ONBUILD trigger in an image config, looked up the way Go's JSON decoder
    (buildah's) finds fields: keys match case-insensitively (``Config``/``onbuild``)."""
    out: list[str] = []
    for key, inner in config.items():
        if key.lower() == "config" and isinstance(inner, Mapping):
            for k, v in inner.items():
                if k.lower() == "onbuild" and isinstance(v, list):
                    out += [str(t) for t in v]
    return out


def check_triggers(triggers: Sequence[str], image: str) -> None:
    """A base image's ``OnBuild`` triggers: buildah runs them as the first steps of a
    build ``FROM`` that image, so they pass the same check."""
    for trigger in triggers:
        try:
            check(str(trigger), where=f"ONBUILD trigger of base image {image}")
        except DockerfileRefused as exc:
            raise DockerfileRefused(str(exc).replace("line 1: ", "", 1)) from None


def _refuse(where: str, number: int, reason: str) -> DockerfileRefused:
    return DockerfileRefused(f"{where} line {number}: {reason}")


def _check_directives(lines: list[str], where: str) -> None:
    """Parser directives are comments before the first instruction; refuse them all."""
    for number, raw in enumerate(lines, 1):
        stripped = raw.strip()
        if stripped and not stripped.startswith("#"):
            return
        m = _DIRECTIVE.match(raw)
        if m:
            raise _refuse(where, number, f"parser directive '{m.group(1)}' is not supported by this builder "
                                         "(it could change how the lines below are read)")


def _logical_lines(lines: list[str]) -> Iterator[_Line]:
    """Join continuations the way moby's parser does: a line ending in ``\\`` (spaces
    after it allowed) goes on; comment and blank lines inside a continuation are skipped."""
    current: list[str] = []
    start = 0
    for number, raw in enumerate(lines, 1):
        if current and (not raw.strip() or raw.lstrip().startswith("#")):
            continue  # dropped inside a continuation, as buildah does
        if not current:
            if not raw.strip() or raw.lstrip().startswith("#"):
                continue
            start = number
        if _CONTINUATION.search(raw):
            current.append(_CONTINUATION.sub("", raw))
            continue
        current.append(raw)
        yield _Line(start, "".join(current))
        current = []
    if current:
        yield _Line(start, "".join(current))


def logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """(first line number, logical line) of a Dockerfile, read as :func:`check` reads
    it; ``build.base_images`` uses the same reading."""
    lines = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    for line in _logical_lines(lines):
        yield line.number, line.text


def _words(args: str) -> Iterator[tuple[str, str]]:
    """(raw, unquoted) words of ``args``, split on whitespace outside quotes; ``\\``
    escapes the next character (moby's extractBuilderFlags)."""
    i, n = 0, len(args)
    while i < n:
        while i < n and args[i].isspace():
            i += 1
        if i >= n:
            return
        start, out, quote = i, [], ""
        while i < n and (quote or not args[i].isspace()):
            ch = args[i]
            if ch == "\\" and i + 1 < n and quote != "'":
                out.append(args[i + 1])
                i += 2
                continue
            if quote and ch == quote:
                quote = ""
            elif not quote and ch in "'\"":
                quote = ch
            else:
                out.append(ch)
            i += 1
        yield args[start:i], "".join(out)


def _flags(args: str) -> tuple[list[str], str]:
    """The leading flags of an instruction's arguments (unquoted), and the rest."""
    flags: list[str] = []
    rest = args.lstrip()
    for raw, word in _words(args):
        if not word.startswith("--"):
            break
        flags.append(word)
        rest = rest[rest.index(raw) + len(raw):].lstrip()
    return flags, rest


def _check_instruction(text: str, number: int, where: str, onbuild: bool = False) -> None:
    m = re.match(r"\s*(\S+)(.*)", text, re.S)
    if not m:
        return
    word, args = m.group(1), m.group(2)
    if not word.isascii():
        raise _refuse(where, number, f"{word!r} is not an instruction")
    name = word.lower()
    label = f"ONBUILD {name.upper()}" if onbuild else name.upper()
    if name == "onbuild":
        if onbuild:
            raise _refuse(where, number, "ONBUILD ONBUILD is not allowed")
        _check_instruction(args, number, where, onbuild=True)
        return
    flags, rest = _flags(args)
    if name == "from" and _TRANSPORT.match(rest.strip().strip("\"'")):
        raise _refuse(where, number, f"{label} {rest.split()[0]!r}: a transport prefix would make buildah read "
                                     "an image from a host path or daemon; name a local or registry image")
    for flag in flags:
        key, _, value = flag[2:].partition("=")
        key = key.lower()
        if name == "run" and key == "mount":
            _check_mount(value, number, where, label)
        elif key not in _FLAGS.get(name, frozenset()):
            raise _refuse(where, number, f"{label} --{key} is not allowed: "
                                         + _WHY.get(key, "this builder does not take that flag"))
    if name in ("run", "copy", "add") and _HEREDOC.search(rest):
        raise _refuse(where, number, f"{label}: heredocs (<<WORD) are not supported by this builder (buildah 1.28 "
                                     "would read their lines as instructions); put the script in a file and COPY it")
    if name == "add":
        _check_add_sources(rest, number, where, label)


_WHY = {
    "mount": "only --mount=type=tmpfs is allowed",
    "network": "RUN steps always use the build's own network",
    "security": "RUN steps always run confined",
    "device": "builds get no host devices",
}


def _check_mount(value: str, number: int, where: str, label: str) -> None:
    """``RUN --mount``: only ``type=tmpfs`` (bind, cache, secret and ssh mounts reach
    host paths or a cache shared by every build; bind ``from=`` is CVE-2024-1753)."""
    opts: dict[str, str] = {}
    for part in value.split(","):
        k, _, v = part.partition("=")
        opts[k.strip().lower()] = v.strip()
    kind = opts.get("type", "bind").lower()
    if kind != "tmpfs":
        raise _refuse(where, number, f"{label} --mount=type={kind} is not allowed: only --mount=type=tmpfs "
                                     "(bind, cache, secret and ssh mounts reach the host's files; bind mounts "
                                     "from= another stage are CVE-2024-1753 in this buildah)")
    if "$" in value:
        raise _refuse(where, number, f"{label} --mount: variables are not allowed in mount options")
    unknown = sorted(set(opts) - _TMPFS_KEYS)
    if unknown:
        raise _refuse(where, number, f"{label} --mount=type=tmpfs: unknown option(s) {', '.join(unknown)}")


def _check_add_sources(rest: str, number: int, where: str, label: str) -> None:
    """ADD fetches URLs (and git remotes, in newer builders) from the host's network,
    not the build's: refuse them, and variables that could hold one."""
    stripped = rest.strip()
    if stripped.startswith("["):
        sources = re.findall(r'"((?:[^"\\]|\\.)*)"', stripped)[:-1]
    else:
        sources = [w for _, w in _words(stripped)][:-1]
    for src in sources:
        low = src.lower()
        if "://" in low or low.startswith(("git@", "github.com/")):
            raise _refuse(where, number, f"{label} from a URL or git remote ({src!r}) is not allowed: it would be "
                                         "fetched from the host's network; download it in a RUN step instead")
        if "$" in src:
            raise _refuse(where, number, f"{label}: variables are not allowed in ADD sources ({src!r}); "
                                         "use COPY for files of the context")


def _backstop(lines: list[str], where: str) -> None:
    """Independent of line joining: a flag of the refused kinds anywhere in the text,
    with quotes and escapes removed and continuations joined, is refused."""
    joined: list[tuple[int, str]] = []
    carry, start = "", 0
    for number, raw in enumerate(lines, 1):
        if not carry:
            start = number
        if _CONTINUATION.search(raw):
            carry += _CONTINUATION.sub("", raw)
            continue
        joined.append((start, carry + raw))
        carry = ""
    if carry:
        joined.append((start, carry))
    for number, text in joined:
        if text.lstrip().startswith("#"):
            continue
        plain = re.sub(r"[\"'\\]", "", text)
        m = _BACKSTOP.search(plain)
        if m and not _is_tmpfs_mount(plain, m):
            raise _refuse(where, number, f"--{m.group(1).lower()}= is not allowed anywhere in a Dockerfile "
                                         "(if it is text inside a command, write it another way)")


def _is_tmpfs_mount(plain: str, m: re.Match[str]) -> bool:
    """The one allowed form, ``--mount=type=tmpfs...`` (already checked in full)."""
    return m.group(1).lower() == "mount" and re.match(r"\s*type\s*=\s*tmpfs\b", plain[m.end():], re.I) is not None
