"""The comparison report: ``report.json`` (for tools), ``report.md`` (for people), ``report.png`` (the trade-off).

``report.json``::

    {"dataset", "split", "queries", "hits", "serve_hits", "machine": {...},
     "systems": [{"name", "kind": "bm25"|"sparse"|"dense", "metrics": {"nDCG@10", "R@100", "R@1000"},
                  "index_bytes", "serving_rss_bytes", "encode_docs_per_s",
                  "query_latency_ms": {"encode_p50", "search_p50", "total_p50", "encode_p95", "search_p95",
                                       "total_p95", "search_hits", "serve_hits", "serve_search_p50",
                                       "serve_search_p95"}, ...}],   # search_*: at hits; serve_*: at serve_hits
     "comparisons": [{"sparse", "dense", "same_backbone", "index_bytes_ratio", "index_bytes_saved_pct",
                      "serving_rss_ratio"}]}

``serving_rss_bytes`` is the resident set of a process that loaded only that index (and its query encoder) and
answered every query; ``index_bytes`` is the index folder on disk.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

from .outputs import atomic_path

MB = 1024 * 1024


def machine() -> dict:
    import psutil

    return {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "memory_bytes": int(psutil.virtual_memory().total), "processor": platform.processor() or None}


def _backbone(encoder: dict | None) -> str | None:
    if not encoder:
        return None
    return encoder.get("base_model") or encoder.get("model")


def sparse_dense_ratios(rows: list[dict]) -> list[dict]:
    """Every (sparse, dense) pair: how much smaller the sparse index is (the LACONIC paper's "71% less")."""
    out = []
    for sparse in (r for r in rows if r["kind"] == "sparse"):
        for dense in (r for r in rows if r["kind"] == "dense"):
            ratio = sparse["index_bytes"] / dense["index_bytes"] if dense["index_bytes"] else None
            out.append({
                "sparse": sparse["name"], "dense": dense["name"],
                "same_backbone": _backbone(sparse.get("encoder")) == _backbone(dense.get("encoder")),
                "index_bytes_ratio": round(ratio, 4) if ratio is not None else None,
                "index_bytes_saved_pct": round(100 * (1 - ratio), 1) if ratio is not None else None,
                "serving_rss_ratio": round(sparse["serving_rss_bytes"] / dense["serving_rss_bytes"], 4)
                if dense["serving_rss_bytes"] else None,
            })
    return out


def _mb(n: int | None) -> str:
    return "–" if n is None else f"{n / MB:,.1f}"


def _num(x, digits: int = 1) -> str:
    return "–" if x is None else f"{x:,.{digits}f}"


def render_markdown(result: dict) -> str:
    hits, serve = result.get("hits", 1000), result.get("serve_hits", 10)
    lines = [f"### {Path(result['dataset']).name} ({result['split']}, {result['queries']} queries)", "",
             "| System | nDCG@10 | R@100 | R@1000 | Index MB | Serving RSS MB | Docs/s (encode) "
             f"| Query enc. p50 ms | Search p50 ms (k={serve}, served) | Search p50 ms (k={hits}, evaluated) "
             "| Total p95 ms |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in result["systems"]:
        m, lat = row["metrics"], row["query_latency_ms"]
        lines.append(f"| {row['name']} | {m['nDCG@10']:.4f} | {m['R@100']:.4f} | {m['R@1000']:.4f} "
                     f"| {_mb(row['index_bytes'])} | {_mb(row['serving_rss_bytes'])} "
                     f"| {_num(row['encode_docs_per_s'])} | {_num(lat['encode_p50'], 2)} "
                     f"| {_num(lat.get('serve_search_p50'), 2)} "
                     f"| {_num(lat['search_p50'], 2)} | {_num(lat['total_p95'], 2)} |")
    lines.append("")
    sparse_rows = [r for r in result["systems"] if r["kind"] == "sparse"]
    for row in sparse_rows:
        lines.append(f"- {row['name']}: {_num(row.get('avg_doc_terms'))} terms per document, "
                     f"{_num(row.get('avg_query_terms'))} per query.")
    for c in result.get("comparisons", []):
        backbone = "same backbone" if c["same_backbone"] else "different backbones"
        lines.append(f"- {c['sparse']} vs {c['dense']} ({backbone}): sparse index is {c['index_bytes_ratio']:.2f}× "
                     f"the dense one on disk ({c['index_bytes_saved_pct']:+.1f}% saved); serving RSS "
                     f"{c['serving_rss_ratio']:.2f}×.")
    mach = result.get("machine", {})
    threads = {r.get("search_threads") for r in result["systems"]}
    lines += ["", f"Queries answered one at a time with {', '.join(map(str, sorted(threads)))} thread(s), each system "
              f"served alone in a fresh process; BM25 \"encode\" is Anserini indexing; Lucene indexes are "
              f"memory-mapped, so their RSS counts the pages the queries touched. "
              f"Machine: {mach.get('cpus')} CPUs, {_mb(mach.get('memory_bytes'))} MB RAM, {mach.get('platform')}.", ""]
    return "\n".join(lines)


def plot(result: dict, path: str | os.PathLike) -> None:
    """nDCG@10 against index size, serving memory and query latency: one point per system, per panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"bm25": "tab:gray", "sparse": "tab:blue", "dense": "tab:orange"}
    panels = [("index_bytes", "index size on disk (MB)", lambda r: r["index_bytes"] / MB),
              ("serving_rss_bytes", "resident memory to serve (MB)", lambda r: r["serving_rss_bytes"] / MB),
              ("latency", "query latency p50, encode + search (ms)",
               lambda r: r["query_latency_ms"]["encode_p50"] + r["query_latency_ms"]["search_p50"])]
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig, axes = plt.subplots(1, len(panels), figsize=(15, 4.6))
    for ax, (_, label, value) in zip(axes, panels):
        for i, row in enumerate(result["systems"]):
            x, y = value(row), row["metrics"]["nDCG@10"]
            ax.scatter([x], [y], s=90, color=colors.get(row["kind"], "black"), edgecolor="black", zorder=3,
                       label=row["kind"])
            # Alternate label sides: systems of one family often sit on top of each other.
            ax.annotate(row["name"], (x, y), textcoords="offset points", xytext=(7, 7 if i % 2 == 0 else -14),
                        fontsize=8)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(label + " — log scale")
        ax.set_ylabel("nDCG@10")
        ax.grid(True, which="both", alpha=0.3)
        ys = [r["metrics"]["nDCG@10"] for r in result["systems"]]
        ax.set_ylim(max(0.0, min(ys) - 0.08), min(1.0, max(ys) + 0.08))
        xs = [value(r) for r in result["systems"]]
        ax.set_xlim(min(xs) / 2.5, max(xs) * 4)
    handles, labels = axes[0].get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    axes[0].legend(unique.values(), unique.keys(), loc="lower right", fontsize=8)
    fig.suptitle(f"{Path(result['dataset']).name} ({result['split']}): effectiveness vs cost "
                 "(up and to the left is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_reports(result: dict, output: str | os.PathLike) -> Path:
    """Write ``report.{json,md,png}`` into ``output``, each atomically (the caller has claimed the folder)."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    for name, write in (("report.json", lambda p: p.write_text(json.dumps(result, indent=2) + "\n", "utf-8")),
                        ("report.md", lambda p: p.write_text(render_markdown(result), "utf-8")),
                        ("report.png", lambda p: plot(result, p))):
        with atomic_path(output / name) as tmp:  # the temporary name keeps the suffix savefig reads
            write(tmp)
    return output
