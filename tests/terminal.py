"""Helpers for tests that run a CLI the way a person at a terminal sees it, on a small real SciFact subset."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

from conftest import REPO


def scifact_subset(scifact: Path, target: Path, *, docs: int = 60, queries: int = 8) -> None:
    """``docs`` SciFact documents (the judged ones of ``queries`` test queries, the longest document, then the
    first others) with those queries and their qrels, in BEIR layout."""
    lines = (scifact / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()[1:]
    qrels = [line.split("\t") for line in lines]
    qids = list(dict.fromkeys(q for q, _, _ in qrels))[:queries]
    judged = {d for q, d, _ in qrels if q in qids}
    corpus = (scifact / "corpus.jsonl").read_text(encoding="utf-8").splitlines()
    longest = max(corpus, key=len)  # longer than the tokenizer's 512: the false warning's trigger
    chosen = [line for line in corpus if json.loads(line)["_id"] in judged or line == longest]
    chosen += [line for line in corpus if line not in chosen][:docs - len(chosen)]
    (target / "qrels").mkdir(parents=True)
    (target / "corpus.jsonl").write_text("\n".join(chosen) + "\n", encoding="utf-8")
    wanted = [line for line in (scifact / "queries.jsonl").read_text(encoding="utf-8").splitlines()
               if json.loads(line)["_id"] in qids]
    (target / "queries.jsonl").write_text("\n".join(wanted) + "\n", encoding="utf-8")
    (target / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{s}\n" for q, d, s in qrels if q in qids),
        encoding="utf-8")


def run_in_terminal(args: list[str], env: dict, timeout_s: float = 300) -> tuple[int, str]:
    """Run ``python -m ARGS`` with a 100x30 pseudo-terminal as stdout and stderr; returns (exit code, output)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    process = subprocess.Popen([sys.executable, "-m", *args], stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                               env=env, cwd=REPO)
    os.close(slave)
    output = bytearray()
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not chunk:
                break
            output += chunk
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
    return process.wait(timeout=60), output.decode("utf-8", errors="replace")
