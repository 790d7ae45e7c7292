"""``mesh work results UNIT --tail BYTES`` and ``--from OFFSET``: part of a unit's output,
for a local unit (on executor01) and a remote one (controller01 → executor01)."""

from __future__ import annotations

from typing import Iterator

import pytest

from mesh.testing import Mesh, NodeProcess
from work_helpers import mesh_cli, running_line, submitted_unit, wait_state, work_types

SUCCEEDED = 2
#: What the ``seq`` work type prints (588,895 bytes).
SEQ = "".join(f"{i}\n" for i in range(1, 100001)).encode()
#: The ``bigout`` unit's size: tens of MB, of which --tail reads a hundred bytes.
BIG = 40_000_000


@pytest.fixture(scope="module")
def line() -> Iterator[Mesh]:
    sections = [*work_types(interval=0.3),
                {"work-command": {"worktype": "seq", "command": "seq", "params": "1 100000"}}]
    with running_line("mesh-range-", ("controller01", "executor01"),
                      executor_sections=sections) as cluster:
        yield cluster


def work(node: NodeProcess, *args: str, check: bool = True):
    return mesh_cli(node, "work", *args, check=check)


def finished_unit(node: NodeProcess, work_type: str, on: str, *params: str) -> str:
    unit_id = submitted_unit(work(node, "submit", work_type, "--node", on, "--no-payload",
                                  *params))
    wait_state(node, unit_id, {SUCCEEDED}, timeout=120)
    return unit_id


@pytest.mark.parametrize("where", ["local", "remote"])
def test_tail_and_from(line: Mesh, where: str) -> None:
    node = line.nodes["executor01" if where == "local" else "controller01"]
    unit_id = finished_unit(node, "seq", "executor01")
    assert len(SEQ) == 588_895
    cases = [(("--tail", "1000"), SEQ[-1000:]),
             (("--from", "12345"), SEQ[12345:]),
             (("--from", "0"), SEQ),
             (("--tail", "0"), b""),
             (("--tail", str(len(SEQ) + 10)), SEQ),  # more than there is: all of it
             (("--from", str(len(SEQ))), b""),
             (("--from", str(len(SEQ) + 10)), b"")]
    for args, expected in cases:
        out = work(node, "results", unit_id, *args)
        assert out.stdout == expected, (where, args, len(out.stdout))
        assert out.stderr == b""
    work(node, "release", unit_id)


def test_tail_of_a_running_unit_follows_it_to_its_end(line: Mesh) -> None:
    ctl = line.nodes["controller01"]
    unit_id = submitted_unit(work(ctl, "submit", "echo-sleep", "--node", "executor01",
                                  "--no-payload"))
    # 12 lines 0.3 s apart: started now, it ends in about 4 s
    tail = work(ctl, "results", unit_id, "--tail", "1").stdout
    whole = work(ctl, "results", unit_id).stdout
    assert whole.decode().splitlines()[-1].startswith("12 ")
    assert tail.decode().splitlines()[-1].startswith("12 "), tail
    assert whole.endswith(tail), (tail, whole)
    work(ctl, "release", unit_id)


def test_tail_reads_only_the_end_of_a_large_output(line: Mesh) -> None:
    exe = line.nodes["executor01"]
    unit_id = finished_unit(exe, "bigout", "localhost", "--param", f"params={BIG}")
    assert wait_state(exe, unit_id, {SUCCEEDED})["StdoutSize"] == BIG
    # bigout writes bytes(range(256)) over and over: byte p is p % 256
    out = work(exe, "results", unit_id, "--tail", "100")
    assert out.stdout == bytes(p % 256 for p in range(BIG - 100, BIG))
    out = work(exe, "results", unit_id, "--from", str(BIG - 300))
    assert out.stdout == bytes(p % 256 for p in range(BIG - 300, BIG))
    work(exe, "release", unit_id)


def test_usage_errors(line: Mesh) -> None:
    exe = line.nodes["executor01"]
    cases = [
        (("results", "AbCd1234", "--tail", "-1"), 2, "--tail -1 is negative"),
        (("results", "AbCd1234", "--from", "-5"), 2, "--from -5 is negative"),
        (("results", "AbCd1234", "--tail", "10", "--from", "5"), 2,
         "give one of --tail, --from, --verify and --verify-file"),
        (("results", "AbCd1234", "--tail", "ten"), 2, "'ten' is not a valid integer"),
        (("results", "AbCd1234", "--tail", "10"), 1, "unknown work unit AbCd1234"),
        (("results", "AbCd1234", "--from", "10"), 1, "unknown work unit AbCd1234"),
    ]
    for args, code, text in cases:
        out = work(exe, *args, check=False)
        assert out.returncode == code, (args, out)
        assert text in out.stderr.decode(), (args, out.stderr)
        assert b"Traceback" not in out.stderr
