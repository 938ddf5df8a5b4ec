"""What checking an encoder's identity costs a search: hashing its files once, then reading the digest cache.

    python benchmarks/bench_fingerprint.py [--encoders splade-tiny minilm smollm2-135m ...] [--rounds 5]
        [--output results.json]

For each encoder (spec names whose files are local): the bytes fingerprinted, the cold time (an empty digest
cache: every file is read and hashed, sha256), and the warm time (the cache written by the cold run, read by a new
cache object as a new process would: a stat per file, no file read), each the median over ``--rounds``; the
baseline is the cold time, so ``warm_over_cold`` is the share a search pays once the cache exists. The cold run
reads from the page cache after the first round (the files were just read), so it measures hashing, not the disk.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path


def _time(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoders", nargs="+", default=["splade-tiny", "minilm", "smollm2-135m"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--output", default=None, help="JSON file for the results")
    args = parser.parse_args()

    from laconic_pyserini.fingerprint import DigestCache, encoder_fingerprint
    from laconic_pyserini.spec import load_spec

    results = {"machine": {"processor": platform.processor(), "python": platform.python_version()},
               "rounds": args.rounds, "encoders": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.encoders:
            spec = load_spec(name)
            cache_file = Path(tmp) / f"{name}.json"

            def cold(cache_file: Path = cache_file, spec=spec) -> dict:
                cache_file.unlink(missing_ok=True)
                cache = DigestCache(cache_file)
                found = encoder_fingerprint(spec, cache=cache)
                cache.save()
                return found

            fingerprint = cold()
            if fingerprint is None or fingerprint["basis"] != "files":
                print(f"{name}: no local files to fingerprint; skipped")
                continue
            location = Path(fingerprint["locations"]["model"])
            size = sum((location / key.split("/", 1)[1]).stat().st_size
                       for key in fingerprint["files"] if key.startswith("model/"))
            cold_s = _time(cold, args.rounds)
            warm_s = _time(lambda spec=spec, cache_file=cache_file: encoder_fingerprint(spec, cache=DigestCache(cache_file)),
                           args.rounds)
            results["encoders"][name] = {
                "files": len(fingerprint["files"]), "model_bytes": size, "cold_s": round(cold_s, 4),
                "warm_s": round(warm_s, 6), "cold_mb_per_s": round(size / cold_s / 1e6, 1),
                "warm_over_cold": round(warm_s / cold_s, 5)}
            print(f"{name}\t{size / 1e6:.1f} MB\tcold {cold_s:.3f} s ({size / cold_s / 1e6:.0f} MB/s)\t"
                  f"warm {warm_s * 1000:.2f} ms\t(warm/cold {warm_s / cold_s:.4f})")
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
