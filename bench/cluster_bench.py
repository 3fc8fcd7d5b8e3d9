#!/usr/bin/env python3
"""One shipper into one node, and into a cluster of three: documents/s of `smtp-shipper backfill`.

    deploy/opensearch-local/cluster start                               # :9320-9322
    OPENSEARCH_PORT=9260 OPENSEARCH_HEAP=512m deploy/opensearch-local/start
    .venv/bin/python bench/cluster_bench.py --single http://127.0.0.1:9260 \\
        --cluster http://127.0.0.1:9320,http://127.0.0.1:9321,http://127.0.0.1:9322

Generates the Xeams log of ``bench/ingest_bench.py`` (``--docs`` sessions, one document each),
then, for ``--rounds`` rounds, runs ``smtp-shipper backfill --no-refresh`` on it against:

1. the single node (``replicas: auto`` → 0);
2. the cluster, all three URLs in ``opensearch.hosts`` (``auto`` → 1 replica: each document
   is indexed twice, on two nodes);
3. the cluster without replicas (``replicas: 0``), to tell the cost of the second copy from
   the spreading over three nodes.

Each run starts from empty indices, must index every document, and is timed from the start of
the process to its exit. Prints every run and the best of each target. On a machine with few
cores, every node and the shipper share them: the figures say what one machine does, not what
three machines would.
"""

from __future__ import annotations

import argparse
import secrets
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from ingest_bench import OUT, cleanup, count, generate, install  # noqa: E402

from shipper.config import load  # noqa: E402
from shipper.opensearch import make_client  # noqa: E402


def run_backfill(log_path: Path, hosts: list[str], prefix: str, replicas: str) -> float:
    cfg = OUT / f"cluster-bench-{prefix}.yml"
    host_lines = "".join(f"    - {h}\n" for h in hosts)
    cfg.write_text(f"opensearch:\n  hosts:\n{host_lines}  index_prefix: {prefix}\n  replicas: {replicas}\n"
                   f"state_dir: {OUT / 'state'}\n", encoding="utf-8")
    command = [sys.executable, "-m", "shipper", "backfill", "--no-progress", "--no-refresh", "--timezone", "UTC",
               "--host-name", "bench", "--config", str(cfg), str(log_path)]
    started = time.monotonic()
    subprocess.run(command, check=True, capture_output=True, text=True, cwd=str(ROOT))
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--single", default="http://127.0.0.1:9260", help="URL of a single-node OpenSearch")
    parser.add_argument("--cluster", default="http://127.0.0.1:9320,http://127.0.0.1:9321,http://127.0.0.1:9322",
                        help="comma-separated URLs of the cluster's nodes")
    parser.add_argument("--docs", type=int, default=100_000, help="sessions (= documents) to generate (default 100000)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds over the targets (default 2)")
    args = parser.parse_args()

    cluster = [u.strip() for u in args.cluster.split(",") if u.strip()]
    targets = [("1 node", [args.single], "auto"), (f"{len(cluster)} nodes, 1 replica", cluster, "auto"),
               (f"{len(cluster)} nodes, 0 replicas", cluster, "0")]
    log_path = OUT / f"SMTPOutboundConversation-{args.docs}.log"
    if not log_path.exists():
        print(f"generating {args.docs} sessions into {log_path} ...", file=sys.stderr)
        generate(log_path, args.docs)

    best: dict[str, float] = {}
    for rnd in range(1, args.rounds + 1):
        for label, hosts, replicas in targets:
            prefix = f"bench-cl-{secrets.token_hex(3)}"
            settings = load(None, overrides={"opensearch.hosts": hosts, "opensearch.index_prefix": prefix,
                                             "opensearch.replicas": replicas if replicas == "auto" else int(replicas)},
                            env={}, log_warnings=False)
            client = make_client(settings.opensearch, timeout=120)
            try:
                install(settings, client)
                wall = run_backfill(log_path, hosts, prefix, replicas)
                indexed = count(client, prefix)
                if indexed != args.docs:
                    raise SystemExit(f"{label}: {indexed} of {args.docs} documents indexed")
            finally:
                cleanup(client, prefix)
                client.close()
            rate = args.docs / wall
            best[label] = max(best.get(label, 0.0), rate)
            print(f"round {rnd}: {label:<22} {wall:6.1f} s  {rate:7,.0f} documents/s", flush=True)
            time.sleep(3)  # let merges of the run before settle
    print("best:")
    for label, rate in best.items():
        print(f"  {label:<22} {rate:7,.0f} documents/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
