"""Concurrency: 32 processes at once beginning, running, ending, promoting and rolling back
the same image. Every clone matches exactly one generation, nothing fails except with the
documented conflict code, and nothing deadlocks (every lock wait is bounded)."""

from __future__ import annotations

import json
import os
import random
import threading

from tests.support import stats
from tests.support.checks import consistent
from tests.support.env import Env

WORKERS = int(os.environ.get("ROOST_CONCURRENCY_WORKERS", "32"))
ROUNDS = int(os.environ.get("ROOST_CONCURRENCY_ROUNDS", "8"))
READ = "cat /etc/token /etc/token2 2>/dev/null || true"


def test_32_processes_on_one_image(bb: Env) -> None:
    for n in (2, 3):
        sid = bb.begin("bb", "--maintenance")
        bb.sh(sid, f"echo g{n} > /etc/token; echo g{n} > /etc/token2")
        bb.ok("session", "promote", sid, "-m", f"g{n}")
    observed: list[tuple[int, str]] = []
    failures: list[str] = []
    codes: dict[str, dict[int, int]] = {}
    lock = threading.Lock()
    barrier = threading.Barrier(WORKERS)

    def note(op: str, code: int, allowed: tuple[int, ...], err: str) -> bool:
        with lock:
            codes.setdefault(op, {}).setdefault(code, 0)
            codes[op][code] += 1
            if code not in allowed or "Traceback" in err:
                failures.append(f"{op}: exit {code}: {err.strip()}")
        stats.bump("concurrent operations")
        return code == 0

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        barrier.wait()
        for round_ in range(ROUNDS):
            choice = rng.random()
            if choice < 0.5:
                r = bb.roost("session", "begin", "bb", "--json")
                if not note("begin", r.code, (0,), r.err):
                    continue
                begun = json.loads(r.out)
                seen = bb.sh(begun["id"], READ)
                note("run", seen.code, (0,), seen.err)
                with lock:
                    observed.append((begun["generation"], seen.out))
                r = bb.roost("session", "end", begun["id"])
                note("end", r.code, (0,), r.err)
            elif choice < 0.7:
                r = bb.roost("session", "begin", "bb", "--maintenance")
                if not note("begin maintenance", r.code, (0, 3), r.err):
                    continue
                sid = r.out.strip()
                token = f"w{seed}r{round_}"
                bb.sh(sid, f"echo {token} > /etc/token; echo {token} > /etc/token2")
                r = bb.roost("session", "promote", sid, "-m", token)
                if not note("promote maintenance", r.code, (0, 3), r.err):
                    note("end", bb.roost("session", "end", sid).code, (0,), "")
            elif choice < 0.8:
                history = bb.roost("image", "history", "bb", "--json")
                gens = [g["generation"] for g in history.json() if not g["current"]]
                # the target may have become current meanwhile: rollback is idempotent
                r = bb.roost("image", "rollback", "bb", str(rng.choice(gens)))
                note("rollback", r.code, (0, 3), r.err)
            elif choice < 0.9:
                r = bb.roost("run", "bb", "--", "/bin/sh", "-c", f"echo $ROOST_SESSION_ID; {READ}")
                note("automatic", r.code, (0,), r.err)
            else:
                r = bb.roost("session", "begin", "bb", "--json")
                if not note("begin", r.code, (0,), r.err):
                    continue
                sid = json.loads(r.out)["id"]
                token = f"o{seed}r{round_}"
                bb.sh(sid, f"echo {token} > /etc/token; echo {token} > /etc/token2")
                r = bb.roost("session", "promote", sid, "-m", token)
                if not note("promote ordinary", r.code, (0, 3), r.err):
                    note("end", bb.roost("session", "end", sid).code, (0,), "")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=900)
    assert not any(t.is_alive() for t in threads), "a worker hung: a lock wait was not bounded"
    assert not failures, failures[:5]
    tokens = {g["generation"]: g["message"] for g in bb.roost("image", "history", "bb", "--json").json()}
    for generation, seen in observed:
        if generation == 1:
            assert seen == "", seen
        else:
            assert seen == f"{tokens[generation]}\n{tokens[generation]}\n", (generation, seen)
    assert sum(codes.get("begin", {}).values()) >= WORKERS
    assert sum(codes.get("promote maintenance", {}).values()) + sum(codes.get("promote ordinary", {}).values()) > 0
    assert bb.roost("session", "list", "--json").json() == []
    consistent(bb)
