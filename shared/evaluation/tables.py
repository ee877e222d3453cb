"""Markdown tables for the reports the entry points print (evaluation, ablation, demo summary)."""
from __future__ import annotations


def markdown_table(header: list[str], rows: list[list]) -> str:
    def cell(v):
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def paired_lines(summary: dict) -> list[str]:
    """The paired comparisons of an evaluation's summary.json, a line each: NRMSE (whole image and
    body) over the same samples, then CRC and BV over the same lesions."""
    def line(name, label, d, unit):
        return (f"{name}: {label} difference {d['mean_diff']:+.4f} (95 % CI {d['ci95'][0]:+.4f} … "
                f"{d['ci95'][1]:+.4f}, paired t p = {d['p_t']:.2g}, Wilcoxon p = {d['p_wilcoxon']:.2g}; over {unit})")

    names = summary.get("method_names", {})

    def shown(pair):  # "student - recon1" → "student - vendor OSEM"
        return " - ".join(names.get(m, m) for m in pair.split(" - "))

    lines = [line(shown(name), label, by_metric[key], "samples")
             for name, by_metric in summary.get("paired", {}).items()
             for key, label in (("nrmse", "NRMSE"), ("masked_nrmse", "body NRMSE")) if key in by_metric]
    labels = {"crc_hot": "hot CRC", "crc_cold": "cold CRC", "bv": "BV"}
    lines += [line(shown(name), labels.get(key, key), d, "lesions")
              for name, by_metric in (summary.get("lesions") or {}).get("paired", {}).items()
              for key, d in by_metric.items()]
    return lines
