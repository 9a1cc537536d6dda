"""The WAN bench's results as a table, Markdown and a chart (CDFs of the small requests'
latency, one row per profile, alone and beside a bulk download)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.report import CdfPanel, Curve, cdf_chart, markdown_report, measured_on, number
from bench.wan.load import CONNECTIONS, SMALL
from bench.wan.settings import CARRIER_TITLES, CARRIERS, LINK_RATE_MBIT, PROFILE_TITLES

HEADER = [
    "profile",
    "carrier",
    "req/s",
    "p50 ms",
    "p99 ms",
    "p99.9 ms",
    "+bulk req/s",
    "+bulk p50",
    "+bulk p99",
    "+bulk p99.9",
    "bulk Mbit/s",
    "20 MiB Mbit/s",
    "first byte ms",
    "recovery s",
]


def table_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for r in results:
        if "error" in r or "skipped" in r:
            why = r.get("error") or r.get("skipped")
            rows.append(
                [PROFILE_TITLES[r["profile"]], CARRIER_TITLES[r["carrier"]], f"({why})"]
                + [""] * (len(HEADER) - 3)
            )
            continue
        s, b, t = r["small"], r["small_with_bulk"], r["transfer"]
        rec = r["recovery"]["seconds"]
        rows.append(
            [
                PROFILE_TITLES[r["profile"]],
                CARRIER_TITLES[r["carrier"]],
                number(s["req_s"]),
                number(s["p50_ms"], 1),
                number(s["p99_ms"], 1),
                number(s["p999_ms"], 1),
                number(b["req_s"]),
                number(b["p50_ms"], 1),
                number(b["p99_ms"], 1),
                number(b["p999_ms"], 1),
                number(b["bulk_mbit_s"], 1),
                number(t["mbit_s"], 1) + ("" if t["complete"] else "*"),
                number(r["first_byte_ms"]["median"], 0),
                "none" if rec is None else number(rec, 2),
            ]
        )
    return rows


def markdown(rows: list[list[str]], meta: dict[str, Any]) -> str:
    plan = meta["plan"]
    lowat = meta["tcp_notsent_lowat"]
    return markdown_report(
        [
            f"{measured_on(meta)}"
            f"edgerq {meta['commit'][:10]}{' (dirty)' if meta['dirty'] else ''}; "
            f"link {LINK_RATE_MBIT:g} Mbit/s each way, the RTT split evenly, loss each way; "
            f"TCP congestion control {meta['tcp_congestion_control']}"
            + (f", tcp_notsent_lowat {lowat}" if lowat else "")
            + "; "
            f"{CONNECTIONS} connections of {SMALL}-byte request/response for "
            f"{plan['small_s']:g} s; * = transfer stopped at {plan['transfer_limit_s']:g} s.",
        ],
        HEADER,
        rows,
    )


def chart(results: list[dict[str, Any]], path: Path, title: str) -> str | None:
    profiles = list(dict.fromkeys(r["profile"] for r in results))

    def panel(profile: str, key: str, what: str) -> CdfPanel:
        curves = []
        for i, carrier in enumerate(CARRIERS):
            cell = next(
                (r for r in results if r["profile"] == profile and r["carrier"] == carrier),
                None,
            )
            if cell is None or key not in cell or not cell[key]["cdf"]:
                continue
            points = [(q, v) for q, v in cell[key]["cdf"] if q < 1.0]
            curves.append(
                Curve(
                    CARRIER_TITLES[carrier],
                    f"C{i}",
                    [v for _, v in points],
                    [q for q, _ in points],
                )
            )
        return CdfPanel(f"{PROFILE_TITLES[profile]}: small requests {what}", curves)

    grid = [
        [panel(p, "small", "alone"), panel(p, "small_with_bulk", "with a bulk download")]
        for p in profiles
    ]
    return cdf_chart(
        path,
        grid,
        title,
        xlabel="latency, ms (log)",
        ylabel="share of requests at most",
    )


def chart_title(meta: dict[str, Any]) -> str:
    return (
        f"edgerq carriers over an emulated WAN ({LINK_RATE_MBIT:g} Mbit/s, TCP "
        f"{meta.get('tcp_congestion_control', '?')}), {meta['date']}, {meta['commit'][:10]}"
    )
