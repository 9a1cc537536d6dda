"""bench.report renders every bench tool's tables, Markdown and results files: the exact
text for small inputs, and what happens without matplotlib."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from bench import report
from bench.report import (
    BarPanel,
    Bars,
    fixed_width,
    markdown_report,
    markdown_table,
    measured_on,
    number,
    provenance_line,
    text_table,
    write_results,
    wrote_line,
)

ROWS = [
    ["small", "direct", "9913", "1.00"],
    ["small", "edgerq tcp", "6120", "0.62"],
    ["large", "direct", "310", "1.00"],
]
HEADER = ["scenario", "path", "req/s", "ratio"]


def test_a_markdown_table_shows_the_first_column_where_it_changes() -> None:
    assert markdown_table(HEADER, ROWS) == [
        "| scenario | path | req/s | ratio |",
        "|---|---|---:|---:|",
        "| small | direct | 9913 | 1.00 |",
        "|  | edgerq tcp | 6120 | 0.62 |",
        "| large | direct | 310 | 1.00 |",
    ]


def test_a_markdown_table_aligns_left_as_many_columns_as_asked() -> None:
    assert markdown_table(["loss", "up"], [["2 %", "9.7 MiB/s"]], left=1) == [
        "| loss | up |",
        "|---|---:|",
        "| 2 % | 9.7 MiB/s |",
    ]


def test_an_empty_heading_is_one_space_as_in_a_two_way_table() -> None:
    assert markdown_table(["", "tcp SC", "tcp SP"], [["RSS", "1.2", ""]], left=3) == [
        "| | tcp SC | tcp SP |",
        "|---|---|---|",
        "| RSS | 1.2 |  |",
    ]


def test_a_text_table_pads_columns_and_leaves_a_line_between_groups() -> None:
    assert text_table(HEADER, ROWS) == (
        "scenario  path        req/s  ratio\n"
        "small     direct       9913   1.00\n"
        "          edgerq tcp   6120   0.62\n"
        "\n"
        "large     direct        310   1.00"
    )


def test_an_ungrouped_text_table_repeats_the_first_column_and_strips_lines() -> None:
    rows = [["rtt40", "tcp", "120"], ["rtt40", "udp (QUIC)", ""]]
    assert text_table(["profile", "carrier", "req/s"], rows, grouped=False) == (
        "profile  carrier     req/s\nrtt40    tcp           120\nrtt40    udp (QUIC)"
    )


def test_fixed_width_columns_are_right_aligned_one_space_apart() -> None:
    assert fixed_width(["tree", "SC"], [["now", "12.5"], ["before", "101.0"]], [6, 5]) == (
        "  tree    SC\n   now  12.5\nbefore 101.0"
    )


@pytest.mark.parametrize(
    ("value", "digits", "text"),
    [
        (1234.56, 1, "1,234.6"),
        (7, 0, "7"),
        (None, 1, "-"),
        (float("nan"), 2, "-"),
        ("n/a", 0, "n/a"),
    ],
)
def test_numbers_have_thousands_separators_and_nothing_is_a_dash(
    value: object, digits: int, text: str
) -> None:
    assert number(value, digits) == text


PROV: dict[str, Any] = {
    "commit": "1234567890abcdef" + "0" * 24,
    "revision": "1234567",
    "date": "2026-12-02 06:00 UTC",
    "dirty": False,
    "build": "pure Python",
}


def test_the_provenance_line_names_commit_date_and_build() -> None:
    assert provenance_line(PROV) == "edgerq 1234567890 (1234567), 2026-12-02 06:00 UTC, pure Python"
    dirty = {**PROV, "revision": "1234567-dirty", "dirty": True, "build": None}
    assert provenance_line(dirty) == (
        "edgerq 1234567890 (1234567-dirty), 2026-12-02 06:00 UTC; DIRTY TREE: uncommitted "
        "changes were measured, no commit has this code"
    )


def test_a_markdown_report_has_its_paragraphs_the_table_and_a_list() -> None:
    meta = {
        "date": "2026-12-02 06:00 UTC",
        "machine": {"cores": 2, "cpu_model": "EPYC", "kernel": "6.1"},
    }
    text = markdown_report(
        ["**Dirty tree**.", measured_on(meta) + "wrk."],
        ["path", "ratio"],
        [["socat", "0.42"]],
        ["ssh -R: skipped (no sshd)"],
    )
    assert text == (
        "**Dirty tree**.\n"
        "\n"
        "Measured 2026-12-02 06:00 UTC on 2 cores (EPYC), Linux 6.1, wrk.\n"
        "\n"
        "| path | ratio |\n"
        "|---|---|\n"
        "| socat | 0.42 |\n"
        "\n"
        "- ssh -R: skipped (no sshd)\n"
    )
    assert markdown_report(["One."], ["a"], [["1"]]) == "One.\n\n| a |\n|---|\n| 1 |\n"


def test_results_are_written_as_json_and_markdown_and_the_chart_is_left_out_with_its_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wrote = write_results(tmp_path / "run", {"a": [1]}, "# table\n", lambda png: "no chart")
    assert wrote == [tmp_path / "run.json", tmp_path / "run.md"]
    assert (tmp_path / "run.json").read_text() == '{\n  "a": [\n    1\n  ]\n}\n'
    assert (tmp_path / "run.md").read_text() == "# table\n"
    assert capsys.readouterr().err == "no chart\n"
    assert not list(tmp_path.glob("*.tmp"))


def test_a_drawn_chart_is_listed_and_paths_are_shown_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def draw(png: Path) -> None:
        png.write_bytes(b"\x89PNG")

    wrote = write_results(tmp_path / "results" / "wan", [], "", draw)
    assert wrote[-1] == tmp_path / "results" / "wan.png"
    monkeypatch.chdir(tmp_path)
    assert wrote_line(wrote) == "wrote results/wan.json, results/wan.md, results/wan.png"
    assert wrote_line([Path("/elsewhere/x.json")]) == "wrote /elsewhere/x.json"


def test_without_matplotlib_a_chart_says_so_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report, "_pyplot", lambda: None)
    panel = BarPanel([Bars("socat", "C1", [0.4, None])], "ratio", "%.2f")
    assert report.bar_chart(tmp_path / "a.png", ["x", "y"], [panel]) == report.NO_MATPLOTLIB
    grid = [[report.CdfPanel("rtt40", [report.Curve("tcp", "C0", [1.0, 2.0], [0.5, 0.9])])]]
    assert report.cdf_chart(tmp_path / "b.png", grid, "t", xlabel="ms", ylabel="share") == (
        "matplotlib is not installed (pip install -e '.[bench]'): no chart"
    )
    assert list(tmp_path.iterdir()) == []


def test_charts_are_drawn_as_png_files(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    bars = [BarPanel([Bars("socat", "C1", [0.4, None])], "ratio", "%.2f", reference=1.0)]
    assert report.bar_chart(tmp_path / "a.png", ["x", "y"], bars) is None
    grid = [[report.CdfPanel("rtt40", [report.Curve("tcp", "C0", [1.0, 2.0], [0.5, 0.9])])]]
    assert report.cdf_chart(tmp_path / "b.png", grid, "t", xlabel="ms", ylabel="share") is None
    for name in ("a.png", "b.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]
