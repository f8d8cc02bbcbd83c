"""What CI systems read from a gate record (:func:`ladabert.bench.gate.gate`): a table for the log, JUnit
XML for test reporters, and markdown for a pull-request comment or a job summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

COLUMNS = ("check", "reference ms", "candidate ms", "cand/ref", "interval", "limit", "rounds", "result")


def _name(spec: str) -> str:
    return Path(spec).name or spec


def check_name(c: dict[str, Any]) -> str:
    return f"{_name(c['candidate'])} {c['backend']} b{c['batch']} s{c['seq']}"


def _cells(c: dict[str, Any]) -> list[str]:
    result = c["outcome"].upper()
    if c["outcome"] == "inconclusive":
        more = c["rounds_to_decide"]
        result += f" (about {more} rounds would decide)" if more else " (ratio at the limit)"
    return [
        check_name(c),
        f"{c['reference_ms']:.2f}",
        f"{c['candidate_ms']:.2f}",
        f"{c['ratio']:.3f}",
        f"[{c['low']:.3f}, {c['high']:.3f}]",
        f"<= {c['limit']:.3f}",
        str(c["rounds"]),
        result,
    ]


def summary_line(res: dict[str, Any]) -> str:
    s = res["settings"]
    counts = {
        k: sum(c["outcome"] == k for c in res["checks"]) for k in ("pass", "regression", "inconclusive")
    }
    ref = _name(s["reference"] or f"baseline {s['baseline']}")
    return (
        f"gate {res['outcome'].upper()}: {counts['pass']} passed, {counts['regression']} regressed, "
        f"{counts['inconclusive']} inconclusive against {ref} at {s['confidence']:.0%} confidence; "
        f"{res['rounds']} rounds in {res['timing_s']:.0f} s (+{res['setup_s']:.0f} s setup), "
        f"{res['fingerprint']['cpu']}, {s['threads']} threads"
    )


def table(res: dict[str, Any]) -> str:
    """Fixed-width columns, one row per check, and the summary line."""
    rows = [list(COLUMNS)] + [_cells(c) for c in res["checks"]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS) - 1)]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows]
    return "\n".join(lines + [summary_line(res)])


def markdown(res: dict[str, Any]) -> str:
    """A summary line and a table, for a pull-request comment or ``$GITHUB_STEP_SUMMARY``."""
    out = [f"**{summary_line(res)}**", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    out += ["| " + " | ".join(_cells(c)) + " |" for c in res["checks"]]
    f = res["fingerprint"]
    out += [
        "",
        f"cand/ref is the ratio of median latencies; the interval is at {res['settings']['confidence']:.0%} "
        f"confidence over all looks. Machine: {f['cpu']}, {f['cores']} cores, flags "
        f"{' '.join(f['flags']) or 'none'}; onnxruntime {f['onnxruntime']}, openvino {f['openvino']}.",
    ]
    return "\n".join(out) + "\n"


def junit(res: dict[str, Any]) -> str:
    """One test case per check: a regression is a failure, an inconclusive check an error (no decision)."""
    checks = res["checks"]
    suite = ET.Element(
        "testsuite",
        name="ladabert-gate",
        tests=str(len(checks)),
        failures=str(sum(c["outcome"] == "regression" for c in checks)),
        errors=str(sum(c["outcome"] == "inconclusive" for c in checks)),
        time=f"{res['timing_s']:.1f}",
    )
    for c in checks:
        case = ET.SubElement(
            suite, "testcase", classname="ladabert.gate", name=check_name(c), time=f"{res['timing_s']:.1f}"
        )
        text = (
            f"candidate/reference {c['ratio']:.3f} in [{c['low']:.3f}, {c['high']:.3f}], limit {c['limit']:.3f}, "
            f"{c['rounds']} rounds"
        )
        if c["outcome"] == "regression":
            ET.SubElement(case, "failure", type="regression", message=text)
        elif c["outcome"] == "inconclusive":
            ET.SubElement(case, "error", type="inconclusive", message=text)
    suites = ET.Element("testsuites")
    suites.append(suite)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"
