"""Command-line pieces for per-session network, resource limits and architectures (core.isolation)."""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at start-up
    from typing import Any

    from .handlers import Context


def options(args: Any) -> dict[str, Any]:
    """``network=`` and ``limits=`` for Engine.begin / run_auto from ``--network`` and ``--limit``.

    Both the full command line (roost.cli) and the fast one (roost.fastpath) set them.
    """
    out: dict[str, Any] = {}
    network = getattr(args, "network", None)
    if network is not None:
        out["network"] = network
    wanted = getattr(args, "limit", None)
    if wanted:
        from core.limits import parse_options

        out["limits"] = parse_options(wanted)
    return out


def cmd_session_network(ctx: Context) -> int:
    a = ctx.args
    old, running = ctx.engine.set_network(a.id, a.network)
    if not ctx.quiet:
        if old == a.network:
            print(f"session {a.id} already has network {a.network}", file=sys.stderr)
        else:
            print(f"session {a.id}: network {old} -> {a.network} for the commands it runs next", file=sys.stderr)
            if running:
                print(
                    f"roost: {running} process(es) already running in {a.id} keep the network they started with "
                    "until they exit",
                    file=sys.stderr,
                )
    return 0


def info_rows(info: Any) -> list[tuple[str, Any]]:
    """Extra ``session info`` lines: network, limits, architecture, live usage."""
    from core.limits import describe
    from core.units import human_size

    s = info.session
    rows: list[tuple[str, Any]] = [
        ("Network", s.network),
        ("Limits", describe(s.limits)),
        ("Architecture", s.architecture),
    ]
    usage = info.usage
    if usage is not None:
        memory = human_size(usage.get("memory"))
        if usage.get("memory_peak") is not None:
            memory += f" (peak {human_size(usage['memory_peak'])})"
        rows.append(("Memory", memory))
        cpu = usage.get("cpu_usec")
        rows.append(("CPU time", None if cpu is None else f"{cpu / 1e6:.2f} s"))
        if usage.get("oom_kills"):
            rows.append(("OOM kills", usage["oom_kills"]))
    return rows


def doctor_table(ctx: Context) -> list[dict[str, str]]:
    """Rows of ``roost doctor``'s isolation report: network modes, limits, architectures."""
    from core import isolation_upkeep

    return [{"feature": f, "available": a, "how": h} for f, a, h in isolation_upkeep.doctor_lines(ctx.engine)]
