"""Reading a config file as XML (``xmlfile``): the size bound, no DOCTYPE and no entity,
errors that name the file and the line, the XSD's complaints in words, and the
helpers the loader reads elements with."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from lxml import etree

from edgerq.config.xmlfile import (
    MAX_CONFIG_BYTES,
    line_of,
    missing_children,
    parse,
    text_of,
    validate,
    yes,
)
from edgerq.errors import ConfigError

BAD = Path(__file__).resolve().parents[1] / "data" / "bad"
UUID = "11111111-2222-3333-4444-555555555555"


def write(tmp_path: Path, text: str | bytes, name: str = "consumer.xml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


# --- not XML, and what XML may not hold ------------------------------------------------

BAD_FILES = [
    # file, line, words the message must contain
    ("not_xml.xml", 1, ["not well-formed XML"]),
    ("empty.xml", 1, ["not well-formed XML", "empty"]),
    ("mismatched_tag.xml", 5, ["not well-formed XML", "listenr"]),
    ("entity.xml", 2, ["DOCTYPE", "not allowed"]),
    ("doctype_parameter_entity.xml", 4, ["DOCTYPE", "not allowed"]),
]


@pytest.mark.parametrize(("name", "line", "words"), BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_file_names_file_line_and_problem(name: str, line: int, words: list[str]) -> None:
    path = BAD / name
    with pytest.raises(ConfigError) as info:
        parse(path)
    message = str(info.value)
    assert f"{path}:{line}:" in message
    for word in words:
        assert word.lower() in message.lower()


def test_not_xml_says_what_the_parser_found(tmp_path: Path) -> None:
    path = write(tmp_path, "<a>\n<b>\n</a>")
    with pytest.raises(ConfigError) as info:
        parse(path)
    assert str(info.value) == (
        f"{path}:3: not well-formed XML: Opening and ending tag mismatch: b line 2 and a, "
        "line 3, column 5"
    )


def test_entity_is_never_expanded() -> None:
    with pytest.raises(ConfigError) as info:
        parse(BAD / "entity.xml")
    hostname = Path("/etc/hostname")
    if hostname.exists():
        content = hostname.read_text(encoding="utf-8").strip()
        if content:
            assert content not in str(info.value).split("entity reference")[0]


def test_any_doctype_is_refused_even_without_a_subset(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '<?xml version="1.0"?>\n<!-- why -->\n<!DOCTYPE service_consumer>\n<service_consumer/>',
    )
    with pytest.raises(ConfigError) as info:
        parse(path)
    assert str(info.value) == (
        f"{path}:3: a DOCTYPE is not allowed in a config file "
        "(edgerq reads no DTD and expands no entities)"
    )


def test_oversized_file_is_refused_before_parsing(tmp_path: Path) -> None:
    """A valid but huge config (40 MiB cost 750 MB of memory to parse) is refused
    by its size, with a message that says so."""
    services = "".join(
        f"<service><uuid>{UUID}</uuid><port>{1000 + i % 60000}</port></service>"
        for i in range(20000)
    )
    path = write(
        tmp_path,
        "<service_consumer><listener><port>12345</port></listener>"
        f"<services>{services}</services></service_consumer>",
        "huge.xml",
    )
    assert path.stat().st_size > MAX_CONFIG_BYTES
    with pytest.raises(ConfigError) as info:
        parse(path)
    assert str(info.value) == (
        f"{path}: larger than {MAX_CONFIG_BYTES} bytes, the most a config file may be; not parsed"
    )


def test_a_file_of_exactly_the_bound_is_parsed(tmp_path: Path) -> None:
    head, tail = b"<service_consumer><!-- ", b" --></service_consumer>"
    exact = head + b"x" * (MAX_CONFIG_BYTES - len(head) - len(tail)) + tail
    assert len(exact) == MAX_CONFIG_BYTES
    assert parse(write(tmp_path, exact)).getroot().tag == "service_consumer"
    with pytest.raises(ConfigError, match="larger than 1048576 bytes"):
        parse(write(tmp_path, exact + b"\n"))


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.xml"
    with pytest.raises(ConfigError) as info:
        parse(path)
    assert str(path) in str(info.value)
    assert "cannot read" in str(info.value)
    assert str(info.value) == f"{path}: cannot read: No such file or directory"


def test_directory_instead_of_a_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        parse(tmp_path)


def test_binary_garbage_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.xml"
    path.write_bytes(bytes(range(256)))
    with pytest.raises(ConfigError, match=r"garbage\.xml:1:"):
        parse(path)


def test_comments_are_dropped_and_lines_kept(tmp_path: Path) -> None:
    path = write(tmp_path, "<service_consumer>\n<!-- a note -->\n<listener/>\n</service_consumer>")
    root = parse(path).getroot()
    assert [child.tag for child in root] == ["listener"]
    assert line_of(root, "listener") == 3


# --- the schema -------------------------------------------------------------------------


def check(path: Path, kind: str = "consumer") -> None:
    validate(path, parse(path), kind)


def test_a_valid_file_passes(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "<service_consumer><listener><port>1</port></listener><services><service>"
        f"<uuid>{UUID}</uuid><port>2</port></service></services></service_consumer>",
    )
    check(path)  # no ConfigError
    assert parse(path).getroot().findtext("services/service/port") == "2"


def test_a_missing_element_is_named_not_every_optional_one(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "<service_consumer>\n<listener><port>1</port></listener>\n<services><service>\n"
        f"<uuid>{UUID}</uuid>\n</service></services></service_consumer>",
    )
    with pytest.raises(ConfigError) as info:
        check(path)
    assert str(info.value) == f"{path}:3: Element 'service': missing required element(s) <port>"


def test_an_unknown_element_is_named_with_its_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "<service_consumer>\n<listener><port>1</port></listener>\n<colour/>\n</service_consumer>",
    )
    with pytest.raises(ConfigError) as info:
        check(path)
    assert str(info.value) == f"{path}:3: Element 'colour': This element is not expected."


def test_every_problem_is_reported_one_per_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "<service_provider>\n<pipes>\n<pipe><port>70000</port><services><service>\n"
        f"<uuid>{UUID}</uuid><hostname>h</hostname><port>0</port></service></services>"
        "</pipe>\n</pipes>\n</service_provider>",
        "provider.xml",
    )
    with pytest.raises(ConfigError) as info:
        check(path, "provider")
    lines = str(info.value).split("\n")
    assert len(lines) >= 2
    assert all(line.startswith(f"{path}:") for line in lines)
    assert any("70000" in line for line in lines) and any("'0'" in line for line in lines)


def test_an_entity_left_in_the_tree_is_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path, "<service_consumer><listener><port>1</port></listener></service_consumer>"
    )
    tree = parse(path)
    tree.getroot().append(etree.Entity("secret"))
    with pytest.raises(ConfigError) as info:
        validate(path, tree, "consumer")
    # Built here, it has no line of its own in the file: the one lxml gives it.
    assert re.fullmatch(
        rf"{re.escape(str(path))}:\d+: entity reference &secret; is not allowed", str(info.value)
    )


def test_missing_children_names_only_the_required_ones(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "<service_consumer><services><service><name>x</name></service></services></service_consumer>",
    )
    tree = parse(path)
    assert missing_children(tree, "consumer", "/service_consumer/services/service") == [
        "uuid",
        "port",
    ]
    assert missing_children(tree, "consumer", None) == []
    assert missing_children(tree, "consumer", "/service_consumer/nothing") == []


# --- the loader's helpers ------------------------------------------------------------------


def element(text: str) -> etree._Element:
    return etree.fromstring(text)


def test_text_of_is_the_stripped_text_or_none() -> None:
    root = element("<service><name>  web \n</name><empty/><port>80</port></service>")
    assert text_of(root, "name") == "web"
    assert text_of(root, "empty") == ""
    assert text_of(root, "port") == "80"
    assert text_of(root, "absent") is None


def test_line_of_a_child_or_of_the_element_itself() -> None:
    root = element("<service>\n<name>web</name>\n\n<port>80</port>\n</service>")
    assert line_of(root, "name") == 2
    assert line_of(root, "port") == 4
    assert line_of(root, "absent") == 1


@pytest.mark.parametrize(
    ("value", "truth"),
    [
        ("yes", True),
        ("true", True),
        ("1", True),
        ("no", False),
        ("false", False),
        ("0", False),
        ("", False),
        (None, False),
    ],
)
def test_yes(value: str | None, truth: bool) -> None:
    assert yes(value) is truth
