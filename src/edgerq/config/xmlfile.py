"""Reading an edgerq config file as XML: size bound, no DOCTYPE, no entities, the
shipped XSDs, and the small helpers the loader reads elements with.

Every error names the file and the line (``ConfigError``).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, cast

from lxml import etree

from edgerq.errors import ConfigError

XS = {"xs": "http://www.w3.org/2001/XMLSchema"}


@cache
def schema_doc(kind: str) -> etree._Element:
    text = resources.files("edgerq.config").joinpath(f"{kind}.xsd").read_bytes()
    return etree.fromstring(text)


@cache
def compiled_schema(kind: str) -> etree.XMLSchema:
    return etree.XMLSchema(schema_doc(kind))


def missing_children(tree: etree._ElementTree, kind: str, xpath: str | None) -> list[str]:
    """Required children absent from the element at ``xpath``.

    libxml2 reports a missing child of an ``xs:all`` group by listing every
    child not seen yet, optional ones included; this names the required ones.
    """
    if not xpath:
        return []
    nodes = tree.xpath(xpath)
    if not isinstance(nodes, list) or len(nodes) != 1:
        return []
    node = nodes[0]
    if not isinstance(node, etree._Element):
        return []
    required = schema_doc(kind).xpath(
        "//xs:element[@name=$tag]/xs:complexType/*/xs:element[not(@minOccurs='0')]/@name",
        namespaces=XS,
        tag=str(node.tag),
    )
    if not isinstance(required, list):
        return []
    return [str(name) for name in required if node.find(str(name)) is None]


MAX_CONFIG_BYTES = 1024 * 1024
"""A config file larger than this is refused before it is parsed. The largest
real configs are a few KiB; a 1 MiB file still holds thousands of services."""


def parse(path: Path) -> etree._ElementTree:
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{path}: larger than {MAX_CONFIG_BYTES} bytes, the most a config file may be; "
            "not parsed"
        )
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, remove_comments=True
    )
    try:
        root = etree.fromstring(data, parser, base_url=str(path))
    except etree.XMLSyntaxError as exc:
        line = exc.lineno or 1
        raise ConfigError(f"{path}:{line}: not well-formed XML: {exc.msg}") from exc
    tree = etree.ElementTree(root)
    if tree.docinfo.internalDTD is not None:  # any <!DOCTYPE>, with or without a subset
        line = data.count(b"\n", 0, max(data.find(b"<!DOCTYPE"), 0)) + 1
        raise ConfigError(
            f"{path}:{line}: a DOCTYPE is not allowed in a config file "
            "(edgerq reads no DTD and expands no entities)"
        )
    return tree


def validate(path: Path, tree: etree._ElementTree, kind: str) -> None:
    # Entities are not expanded (no external files are read); an entity left in
    # the tree would make libxml2's validator fail with an internal error.
    for entity in tree.iter(etree.Entity):
        line = int(cast(int | None, entity.sourceline) or 0)
        raise ConfigError(f"{path}:{line}: entity reference {entity.text} is not allowed")
    schema = compiled_schema(kind)
    try:
        valid = schema.validate(tree)
    except etree.Error as exc:
        raise ConfigError(f"{path}: cannot validate: {exc}") from exc
    if valid:
        return
    problems = []
    for err in cast(Iterable[Any], schema.error_log):
        message = err.message
        if "Missing child element" in message:
            missing = missing_children(tree, kind, err.path)
            if missing:
                names = ", ".join(f"<{name}>" for name in missing)
                tag = message.split("'")[1] if message.count("'") >= 2 else "element"
                message = f"Element '{tag}': missing required element(s) {names}"
        problems.append(f"{path}:{err.line}: {message}")
    raise ConfigError("\n".join(problems))


def text_of(elem: etree._Element, name: str) -> str | None:
    child = elem.find(name)
    if child is None:
        return None
    return (child.text or "").strip()


def line_of(elem: etree._Element, name: str) -> int:
    """Line of ``elem``'s child ``name`` (of ``elem`` itself when absent)."""
    child = elem.find(name)
    line = (child if child is not None else elem).sourceline
    return int(cast(int | None, line) or 0)


def yes(value: str | None) -> bool:
    return value in ("yes", "true", "1")
