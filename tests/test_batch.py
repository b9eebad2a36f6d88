"""Batch plans: parsing and checking (pure), then real runs through the command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.errors import BadInput
from roost import plans
from tests.support.env import REPO, Env
from tests.support.images import snapshot

EXAMPLES = sorted((REPO / "examples" / "plans").glob("*.yaml"))


def parse(text: str | bytes) -> plans.Plan:
    return plans.parse(text.encode() if isinstance(text, str) else text, "plan.yaml")


# --- parsing -------------------------------------------------------------------------


def test_every_example_plan_is_valid() -> None:
    assert len(EXAMPLES) >= 3
    for path in EXAMPLES:
        plan = plans.parse(path.read_bytes(), str(path))
        assert plan.steps and plan.description, path


def test_the_nightly_example_has_the_documented_shape() -> None:
    plan = plans.parse((REPO / "examples" / "plans" / "nightly.yaml").read_bytes(), "nightly.yaml")
    (loop,) = plan.steps
    assert loop.kind == "for-each-image" and loop.every_image and loop.on_failure == "continue"
    assert [s.kind for s in loop.steps] == ["begin", "run", "promote", "gc"]
    begin, run, promote, gc = loop.steps
    assert begin.image is None and begin.session == "upgrade" and begin.maintenance
    assert run.command[:2] == ("/bin/sh", "-c") and "dist-upgrade" in run.command[2]
    assert dict(run.environment) == {"DEBIAN_FRONTEND": "noninteractive"}
    assert promote.session == "upgrade" and promote.message == "nightly dist-upgrade"
    assert gc.images is None and not gc.every_image
    assert [s.index for s in loop.steps] == ["1.1", "1.2", "1.3", "1.4"]


def test_short_forms_and_a_bare_list_of_steps() -> None:
    plan = parse(
        """
- begin: {image: bb, as: s}
- run: {session: s, command: [echo, hi]}
- end: s
- gc: all
- rollback: bb
"""
    )
    kinds = [(s.kind, s.session, s.image, s.images, s.every_image) for s in plan.steps]
    assert kinds == [
        ("begin", "s", "bb", None, False),
        ("run", "s", None, None, False),
        ("end", "s", None, None, False),
        ("gc", None, None, None, True),
        ("rollback", None, "bb", None, False),
    ]
    assert plan.steps[1].command == ("echo", "hi")


BEGIN = "steps:\n  - begin: {image: bb, as: s}\n"
LOOP = "steps:\n  - for-each-image:\n      images: all\n      steps:\n"

INVALID = [
    # (plan text, what the one line must say after "plan.yaml: ")
    ("steps:\n  - bogus: {}\n", "step 1: unknown step 'bogus'"),
    (BEGIN + "  - run: {session: s, comand: x}\n", "step 2 (run): unknown field 'comand'"),
    (BEGIN + "  - run: {session: s}\n", "step 2 (run): command is missing"),
    ("steps:\n  - begin: {image: bb}\n", "step 1 (begin): as is missing"),
    ("steps:\n  - begin: {as: s}\n", "step 1 (begin): image is missing"),
    ("steps:\n  - begin: {image: ../x, as: s}\n", "step 1 (begin): image: invalid image name '../x'"),
    ("steps:\n  - begin: {image: bb, as: 'a b'}\n", "step 1 (begin): as: invalid session name 'a b'"),
    (
        "steps:\n  - begin: {image: bb, as: s, maintenance: 'yes'}\n",
        "step 1 (begin): maintenance must be true or false",
    ),
    ("steps:\n  - gc: {images: bb, keep: 0}\n", "step 1 (gc): keep must be a positive number"),
    ("steps:\n  - gc: {images: bb, keep: true}\n", "step 1 (gc): keep must be a positive number"),
    ("steps:\n  - gc: {images: [bb, bb]}\n", "step 1 (gc): images: image bb is named twice"),
    ("steps:\n  - gc: {images: 7}\n", "step 1 (gc): images must be all, an image name or a list"),
    ("steps:\n  - gc:\n", "step 1 (gc): images is missing"),
    ("steps:\n  - rollback: {image: bb, generation: 0}\n", "step 1 (rollback): invalid generation 0"),
    (BEGIN + "  - run: {session: s, command: 5}\n", "step 2 (run): command must be"),
    (BEGIN + "  - run: {session: s, command: []}\n", "step 2 (run): command must be"),
    (
        BEGIN + "  - run: {session: s, command: x, directory: tmp}\n",
        "step 2 (run): directory must be an absolute path",
    ),
    (
        BEGIN + "  - run: {session: s, command: x, environment: {A-B: x}}\n",
        "step 2 (run): environment: invalid variable name 'A-B'",
    ),
    (
        BEGIN + "  - run: {session: s, command: x, environment: {A: yes}}\n",
        "step 2 (run): environment: A must be text",
    ),
    ("steps:\n  - run: {session: s, command: x}\n", "step 1 (run): no open session s"),
    (BEGIN + "  - end: s\n  - end: s\n", "step 3 (end): no open session s"),
    (BEGIN + "  - begin: {image: bb, as: s}\n", "step 2 (begin): session s is already open"),
    ("steps:\n  - begin: {image: bb, as: s, on-failure: continue}\n", "step 1 (begin): on-failure: continue is not"),
    ("steps:\n  - end: {session: s, on-failure: later}\n", "step 1 (end): on-failure must be stop or continue"),
    (
        LOOP + "        - begin: {as: m}\n",
        "step 1.1 (begin): session m is never ended or promoted in its for-each-image",
    ),
    (
        LOOP + "        - begin: {as: m, name: fixed}\n        - end: m\n",
        "step 1.1 (begin): name is not allowed inside for-each-image",
    ),
    (
        LOOP + "        - for-each-image: {images: all, steps: [gc]}\n",
        "step 1.1 (for-each-image): for-each-image cannot be nested",
    ),
    (
        BEGIN + "  - for-each-image:\n      images: all\n      steps:\n        - end: s\n",
        "step 2.1 (end): session s was begun outside this for-each-image",
    ),
    ("steps:\n  - for-each-image: {images: all}\n", "step 1 (for-each-image): steps is missing"),
    ("steps:\n  - for-each-image: {images: all, steps: []}\n", "step 1 (for-each-image): steps is empty"),
    ("steps:\n  - for-each-image: all\n    steps: [gc]\n", "step 1: has for-each-image, steps; a step is one kind"),
    ("steps:\n  - run: s\n    command: x\n", "step 1: has run, command; a step is one kind"),
    ("steps:\n  - 42\n", "step 1: expected one of"),
    ("steps: []\n", "steps is empty"),
    ("steps: {begin: x}\n", "steps must be a list of steps"),
    ("description: no steps\n", "no steps"),
    ("stepz: []\n", "unknown key 'stepz'"),
    ("version: 2\nsteps: [gc]\n", "version must be 1"),
    ("just words\n", "a plan is a mapping with 'steps'"),
    ("", "a plan is a mapping with 'steps'"),
    ("steps:\n  - end: s\n  - end: s\n  bad indent\n", "line 5: could not find expected ':'"),
    ("steps: [\n", "line 2"),
    ("steps:\n  - gc: {images: bb, images: bb}\n", "line 2: duplicate key 'images'"),
    ("steps:\n  - &a gc: {images: bb}\n  - *a\n", "line 3: aliases (*name) are not allowed"),
]


@pytest.mark.parametrize(("text", "expected"), INVALID)
def test_an_invalid_plan_is_one_line_naming_the_file_and_the_step(text: str, expected: str) -> None:
    with pytest.raises(BadInput) as e:
        parse(text)
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("plan.yaml:"), message
    assert expected in message, message


def test_non_utf8_and_oversized_plans_are_refused() -> None:
    with pytest.raises(BadInput, match=r"^plan.yaml: not valid UTF-8 \(byte 8\)$"):
        parse(b"steps:\n-\xff\xfe")
    big = b"steps:\n" + b"  - gc: all\n" * (plans.MAX_PLAN_BYTES // 11 + 1)
    with pytest.raises(BadInput, match=r"^plan.yaml: larger than 1 MiB$"):
        parse(big)


# --- running -------------------------------------------------------------------------


def write_plan(env: Env, text: str, name: str = "plan.yaml") -> str:
    path = env.base / name
    path.write_text(text)
    return str(path)


def sessions(env: Env) -> list[dict[str, object]]:
    result: list[dict[str, object]] = env.roost("session", "list", "--json").json()
    return result


def test_invalid_plans_through_the_cli_exit_2_and_change_nothing(bb: Env) -> None:
    before = snapshot(bb.state)
    bad = [
        BEGIN + "  - run: {session: s, command: true, user: [x]}\n",
        BEGIN + "  - promote: t\n",
        "steps: [\n",
    ]
    for text in bad:
        path = write_plan(bb, text)
        r = bb.roost("--headless", "batch", path)
        assert r.code == 2, (text, r)
        lines = r.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"roost: {path}:"), r.err
        assert r.out == ""
    raw = bb.base / "latin1.yaml"
    raw.write_bytes(b"steps:\n  - gc: caf\xe9\n")
    r = bb.roost("batch", str(raw))
    assert r.code == 2 and r.err == f"roost: {raw}: not valid UTF-8 (byte 18)\n"
    r = bb.roost("batch", str(bb.base / "missing.yaml"))
    assert r.code == 2 and r.err == f"roost: {bb.base / 'missing.yaml'}: no such file\n"
    r = bb.roost("batch", str(bb.base))
    assert r.code == 2 and "Is a directory" in r.err
    # a valid plan naming an image that does not exist: exit 4 before anything runs
    path = write_plan(bb, BEGIN + "  - end: s\n  - gc: {images: [bb, nope]}\n")
    r = bb.roost("batch", path)
    assert r.code == 4 and r.err == f"roost: {path}: step 3 (gc): no image 'nope'\n"
    assert snapshot(bb.state) == before
    assert sessions(bb) == []


def test_check_only_validates(bb: Env) -> None:
    path = write_plan(bb, BEGIN + "  - end: s\n")
    before = snapshot(bb.state)
    r = bb.roost("batch", "--check", path)
    assert r.code == 0 and r.err == f"{path}: a valid plan of 2 step(s)\n" and r.out == ""
    assert bb.roost("batch", "--check", "--json", path).json() == {"file": path, "ok": True, "steps": 2}
    assert snapshot(bb.state) == before


def test_a_plan_runs_in_order_and_reports_each_step(bb: Env) -> None:
    path = write_plan(
        bb,
        """
description: upgrade bb
steps:
  - begin: {image: bb, as: m, maintenance: true}
  - run:
      session: m
      command: echo "$GREETING from $ROOST_IMAGE in $(pwd)" && echo new > /etc/upgraded
      environment: {GREETING: hello}
  - run: {session: m, command: [cat, /etc/upgraded], directory: /etc}
  - promote: {session: m, message: upgraded by a plan}
  - gc: {images: bb, keep: 1}
""",
    )
    r = bb.roost("--headless", "batch", path)
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0].startswith("step 1 begin bb: ok: session bb-") and "(generation 1, maintenance)" in lines[0]
    assert lines[1] == "hello from bb in /"
    assert lines[2] == "step 2 run bb: ok: the command exited with 0"
    assert lines[3] == "new"
    assert lines[5] == "step 4 promote bb: ok: generation 2"
    assert lines[6] == "step 5 gc: ok: removed 0 generations"  # generation 2 is a layer on 1
    assert lines[7] == f"plan {path}: ok (5 steps)"
    history = bb.roost("image", "history", "bb", "--json").json()
    assert [(g["generation"], g["current"]) for g in history] == [(1, False), (2, True)]
    assert history[1]["message"] == "upgraded by a plan"
    assert bb.roost("run", "bb", "--", "cat", "/etc/upgraded").out == "new\n"
    assert sessions(bb) == []
    entries = [json.loads(line) for line in (bb.state / "journal.jsonl").read_text().splitlines()]
    (logged,) = [e for e in entries if e["operation"] == "batch"]
    assert logged["result"] == "ok" and logged["steps"] == 5 and logged["plan"] == path


def test_the_first_failure_stops_the_plan_and_ends_what_it_began(bb: Env) -> None:
    path = write_plan(
        bb,
        """
steps:
  - begin: {image: bb, as: a}
  - begin: {image: bb, as: m, maintenance: true}
  - run: {session: m, command: "touch /etc/half-done; exit 7"}
  - promote: m
  - end: a
""",
    )
    r = bb.roost("--headless", "batch", "--json", path)
    assert r.code == 1, r.err
    report = r.json()
    assert report["ok"] is False and report["exit_code"] == 1 and report["failed_step"] == "3"
    steps = [(s["step"], s["kind"], s["status"], s["cleanup"]) for s in report["steps"]]
    assert steps == [
        ("1", "begin", "ok", False),
        ("2", "begin", "ok", False),
        ("3", "run", "failed", False),
        ("cleanup", "end", "ok", True),
        ("cleanup", "end", "ok", True),
    ]
    assert report["steps"][2]["exit"] == 7 and report["steps"][2]["error"] == "the command exited with 7"
    # cleaned up newest first
    assert [s["name"] for s in report["steps"][3:]] == ["m", "a"]
    assert report["sessions"] == []
    assert r.err == f"roost: {path}: step 3 (run, bb) failed: the command exited with 7\n"
    assert sessions(bb) == []
    assert [g["generation"] for g in bb.roost("image", "history", "bb", "--json").json()] == [1]
    assert bb.roost("run", "bb", "--", "/bin/sh", "-c", "test -e /etc/half-done").code == 1


def test_a_conflict_exits_3_and_leaves_other_sessions_alone(bb: Env) -> None:
    theirs = bb.begin("bb", "--maintenance")
    path = write_plan(bb, "steps:\n  - begin: {image: bb, as: m, maintenance: true}\n  - promote: m\n")
    r = bb.roost("batch", path)
    assert r.code == 3, r
    assert r.out.startswith("step 1 begin bb: failed (exit code 3): bb is already being maintained")
    assert [s["id"] for s in sessions(bb)] == [theirs]
    bb.ok("session", "end", theirs)


def test_for_each_image_continues_past_a_failed_image(bb: Env, busybox_tree: Path) -> None:
    bb.ok("image", "create", "bb2", "--from-dir", str(busybox_tree))
    path = write_plan(
        bb,
        """
steps:
  - for-each-image:
      images: all
      on-failure: continue
      steps:
        - begin: {as: up, maintenance: true}
        - run:
            session: up
            command: 'echo upgraded > /etc/upgraded; test "$ROOST_IMAGE" != bb'
        - promote: {session: up, message: nightly}
        - gc:
""",
    )
    r = bb.roost("--headless", "batch", "--json", path)
    assert r.code == 1, r.err
    report = r.json()
    rows = [(s["step"], s["kind"], s["image"], s["status"]) for s in report["steps"]]
    assert rows == [
        ("1.1", "begin", "bb", "ok"),
        ("1.2", "run", "bb", "failed"),
        ("cleanup", "end", "bb", "ok"),
        ("1.1", "begin", "bb2", "ok"),
        ("1.2", "run", "bb2", "ok"),
        ("1.3", "promote", "bb2", "ok"),
        ("1.4", "gc", "bb2", "ok"),
        ("1", "for-each-image", None, "failed"),
    ]
    assert report["failed_step"] == "1.2" and report["steps"][-1]["failed_images"] == ["bb"]
    assert sessions(bb) == []
    current = {i["name"]: i["current"] for i in bb.roost("image", "list", "--json").json()}
    assert current == {"bb": 1, "bb2": 2}


def test_for_each_image_stops_at_the_first_failed_image_by_default(bb: Env, busybox_tree: Path) -> None:
    bb.ok("image", "create", "bb2", "--from-dir", str(busybox_tree))
    path = write_plan(
        bb,
        """
steps:
  - begin: {image: bb2, as: outer}
  - for-each-image:
      images: [bb, bb2]
      steps:
        - begin: {as: up, maintenance: true}
        - run: {session: up, command: exit 3}
        - promote: up
  - end: outer
""",
    )
    r = bb.roost("batch", "--json", path)
    assert r.code == 1
    rows = [(s["step"], s["kind"], s["image"], s["status"]) for s in r.json()["steps"]]
    assert rows == [
        ("1", "begin", "bb2", "ok"),
        ("2.1", "begin", "bb", "ok"),
        ("2.2", "run", "bb", "failed"),
        ("cleanup", "end", "bb", "ok"),
        ("2", "for-each-image", None, "failed"),
        ("cleanup", "end", "bb2", "ok"),
    ]
    assert sessions(bb) == []


def test_continue_on_a_failed_step_runs_the_rest_but_still_fails(bb: Env) -> None:
    path = write_plan(
        bb,
        """
steps:
  - begin: {image: bb, as: s}
  - run: {session: s, command: "false", on-failure: continue}
  - run: {session: s, command: "echo still here"}
  - end: s
""",
    )
    r = bb.roost("batch", path)
    assert r.code == 1
    assert "still here\n" in r.out and "step 4 end bb: ok" in r.out
    assert sessions(bb) == []


def test_a_session_the_plan_leaves_open_stays_and_survives_recover(bb: Env) -> None:
    path = write_plan(
        bb,
        "steps:\n  - begin: {image: bb, as: build, name: bb-builds}\n  - run: {session: build, command: touch /x}\n",
    )
    r = bb.roost("batch", "--json", path)
    assert r.code == 0, r.err
    assert r.json()["sessions"] == [{"name": "build", "id": "bb-builds", "image": "bb"}]
    bb.ok("session", "recover", "--all")
    (listed,) = sessions(bb)
    assert listed["id"] == "bb-builds" and listed["auto"] is False
    assert bb.roost("session", "run", "bb-builds", "--", "test", "-e", "/x").code == 0
    bb.ok("session", "end", "bb-builds")


def test_sessions_a_plan_ends_are_automatic_so_recover_ends_them_if_the_plan_dies(bb: Env) -> None:
    marker = bb.base / "started"
    path = write_plan(
        bb,
        f"steps:\n  - begin: {{image: bb, as: s}}\n  - run: {{session: s, command: 'touch {marker}; sleep 300'}}\n"
        "  - end: s\n",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "roost", "--headless", "batch", path],
        env=bb.environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd="/",
    )
    try:
        wait_for(marker.exists, proc)
        (listed,) = sessions(bb)
        assert listed["auto"] is True
        proc.kill()
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    report = bb.ok("session", "recover", "--all")
    assert "automatic session whose command is gone" in report
    assert sessions(bb) == []


def wait_for(condition: object, proc: subprocess.Popen[bytes], limit: float = 60) -> None:
    """Wait until *condition()* holds (the process must still be running)."""
    deadline = time.monotonic() + limit
    while not condition():  # type: ignore[operator]
        assert proc.poll() is None, "the plan ended before the condition held"
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_an_interrupted_plan_ends_what_it_began(bb: Env, sig: signal.Signals) -> None:
    marker = bb.base / "started"
    path = write_plan(
        bb,
        f"steps:\n  - begin: {{image: bb, as: s, maintenance: true}}\n"
        f"  - run: {{session: s, command: 'touch {marker}; sleep 300'}}\n  - promote: s\n",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "roost", "--headless", "batch", "--json", path],
        env=bb.environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd="/",
        start_new_session=True,
        # as a command typed at a terminal gets it: a test suite started in the background of a
        # shell inherits SIGINT ignored, and so would the plan (which then rightly ignores it)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        wait_for(marker.exists, proc)
        os.kill(proc.pid, sig)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    report = json.loads(out)
    rows = [(s["step"], s["kind"], s["status"]) for s in report["steps"]]
    assert rows == [("1", "begin", "ok"), ("2", "run", "interrupted"), ("cleanup", "end", "ok")]
    assert err.decode().strip().endswith("failed: interrupted")
    assert sessions(bb) == []
    assert [g["generation"] for g in bb.roost("image", "history", "bb", "--json").json()] == [1]


def test_even_an_unexpected_error_ends_what_the_plan_began(bb: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = plans.parse(
        b"""
steps:
  - begin: {image: bb, as: outer}
  - for-each-image:
      images: [bb]
      steps:
        - begin: {as: inner, maintenance: true}
        - promote: inner
  - end: outer
""",
        "plan.yaml",
    )
    eng = bb.engine()

    def broken(*args: object, **kwargs: object) -> int:
        raise RuntimeError("a bug in promote")

    monkeypatch.setattr(eng, "promote", broken)
    seen: list[tuple[str, str, str]] = []
    with pytest.raises(RuntimeError, match="a bug in promote"):
        plans.run(eng, plan, on_result=lambda r: seen.append((r.step, r.kind, r.status)))
    assert seen == [
        ("1", "begin", "ok"),
        ("2.1", "begin", "ok"),
        ("cleanup", "end", "ok"),
        ("cleanup", "end", "ok"),
    ]
    assert sessions(bb) == []
