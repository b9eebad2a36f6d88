"""Sessions in system mode: records, life cycle, promote, running commands, listings.

Callers import the package (``from core import session as session_ops``)
and call the names below; each lives in the module of its responsibility:

* :mod:`.records` – reading (checked), writing and naming records;
* :mod:`.lifecycle` – begin, end and the steps they share with recover;
* :mod:`.promotion` – the promote transaction (:class:`PromoteTx`) and its steps;
* :mod:`.running` – the run protocol (launch, hold, start or exec);
* :mod:`.query` – listings and one session's details.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .lifecycle import begin, bring_up, end, end_locked, finish, mark_failed, tear_down
    from .promotion import PromoteTx, abandon_promote, complete_promote, generation_of_tx, promote, stage_and_commit
    from .query import display_state, info, list_sessions
    from .records import check_record, exists, new_id, read, read_all, session_target, stack_of, write
    from .running import exec_in, hold_for_run, launch, run_auto, run_in, start

#: Where each name lives. The modules are imported on first use, not with the
#: package: ``session end`` needs records and lifecycle only, and every module
#: more is a fraction of a millisecond on each of the thousands of commands a
#: build host runs a day (BENCHMARKS.md, "Start-up"). No module here may share a
#: name with a function it exports: importing ``.promote`` would have made
#: ``session_ops.promote`` that module, hence ``.promotion``.
_HOME = {
    **dict.fromkeys(("begin", "bring_up", "end", "end_locked", "finish", "mark_failed", "tear_down"), "lifecycle"),
    **dict.fromkeys(
        ("PromoteTx", "abandon_promote", "complete_promote", "generation_of_tx", "promote", "stage_and_commit"),
        "promotion",
    ),
    **dict.fromkeys(("display_state", "info", "list_sessions"), "query"),
    **dict.fromkeys(
        ("check_record", "exists", "new_id", "read", "read_all", "session_target", "stack_of", "write"), "records"
    ),
    **dict.fromkeys(("exec_in", "hold_for_run", "launch", "run_auto", "run_in", "start"), "running"),
}


def __getattr__(name: str) -> object:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(__import__(f"{__name__}.{home}", fromlist=[name]), name)
    globals()[name] = value
    return value


__all__ = [
    "PromoteTx",
    "abandon_promote",
    "begin",
    "bring_up",
    "check_record",
    "complete_promote",
    "display_state",
    "end",
    "end_locked",
    "exec_in",
    "exists",
    "finish",
    "generation_of_tx",
    "hold_for_run",
    "info",
    "launch",
    "list_sessions",
    "mark_failed",
    "new_id",
    "promote",
    "read",
    "read_all",
    "run_auto",
    "run_in",
    "session_target",
    "stack_of",
    "stage_and_commit",
    "start",
    "tear_down",
    "write",
]
