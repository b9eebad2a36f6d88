"""Sessions in system mode: records, life cycle, promote, running commands, listings.

Callers import the package (``from core import session as session_ops``)
and call the names below; each lives in the module of its responsibility:

* :mod:`.records` – reading (checked), writing and naming records;
* :mod:`.lifecycle` – begin, end and the steps they share with recover;
* :mod:`.promote` – the promote transaction (:class:`PromoteTx`) and its steps;
* :mod:`.running` – the run protocol (launch, hold, start or exec);
* :mod:`.query` – listings and one session's details.
"""

from __future__ import annotations

from .lifecycle import begin, bring_up, end, end_locked, finish, mark_failed, tear_down
from .promote import PromoteTx, abandon_promote, complete_promote, generation_of_tx, promote, stage_and_commit
from .query import display_state, info, list_sessions
from .records import check_record, exists, new_id, read, read_all, session_target, stack_of, write
from .running import exec_in, hold_for_run, launch, run_auto, run_in, start

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
