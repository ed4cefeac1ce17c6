"""LAB_VARIANTS / --variants: the grammar, each bad input's one clear line (exit 2), and how a run with
variants is planned, recorded, described and given again."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from lab.load import plan, run_folder, variants
from lab.load.settings import RunError, Settings, build_parser, from_args
from lab.report import run_tables

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.unit


def settings(*argv: str) -> Settings:
    return from_args(build_parser().parse_args(["--calibrate", "skip", *argv]), env={})


def test_one_knob_change() -> None:
    (v,) = variants.parse("asyncio-pool20=asyncio:LAB_POOL_SIZE=20")
    assert (v.name, v.model, v.env, v.source) == ("asyncio-pool20", "asyncio", {"LAB_POOL_SIZE": "20"}, "")


def test_several_variants_knobs_and_a_checkout() -> None:
    found = variants.parse(" a=threaded:LAB_POOL_SIZE=4, LAB_MAX_INFLIGHT=64 ; b=gevent ;; "
                           f"c=asyncio@{REPO}:LAB_UVLOOP=0;")
    assert [(v.name, v.model, v.env, v.source) for v in found] == [
        ("a", "threaded", {"LAB_POOL_SIZE": "4", "LAB_MAX_INFLIGHT": "64"}, ""),
        ("b", "gevent", {}, ""),
        ("c", "asyncio", {"LAB_UVLOOP": "0"}, str(REPO))]
    assert variants.parse("") == [] and variants.parse(" ; ") == []


@pytest.mark.parametrize(("text", "says"), [
    ("asyncio-pool20", "is not NAME=MODEL"),
    ("x=", "is not NAME=MODEL"),
    ("x=tornado", "unknown model 'tornado'"),
    ("asyncio=asyncio:LAB_POOL_SIZE=3", "is a model's name"),
    ("x=asyncio;x=gevent", "names two variants"),
    ("9lives=asyncio", "is not a name"),
    ("a/b=asyncio", "is not a name"),
    ("x=asyncio:", "nothing after ':'"),
    ("x=asyncio:LAB_POOL_SIZE", "'LAB_POOL_SIZE' is not KEY=VAL"),
    ("x=asyncio:LAB_POOL_SIZE=", "is not KEY=VAL"),
    ("x=asyncio:LAB_POOL_SIZE=2,LAB_POOL_SIZE=3", "LAB_POOL_SIZE is given twice"),
    ("x=asyncio:LAB_POOL_SIZE=lots", "LAB_POOL_SIZE='lots' is not a valid int"),
    ("x=asyncio:LAB_POOL_SIZE=0", "LAB_POOL_SIZE / --pool-size must be from 1 to 1000"),
    ("x=asyncio:LAB_PORT=9000", "LAB_PORT is set by the lab for every server"),
    ("x=asyncio:LAB_FOO=1", "LAB_FOO is not a server knob; use one of LAB_POOL_SIZE"),
    ("x=asyncio:LAB_ALLOW_BLOCKING=1", "LAB_ALLOW_BLOCKING is a lab-only knob"),
    ("x=asyncio:LAB_EXTRA_CPU_US=5", "LAB_ALLOW_EXTRA_CPU=1 (--allow-extra-cpu)"),
    ("x=asyncio@", "'@' needs a directory"),
    ("x=asyncio@/no/such/checkout", "is not a directory; make a checkout there first"),
    (f"x=asyncio@{REPO / 'docs'}", "has no servers/run_asyncio.py"),
])
def test_bad_input_says_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=r"^LAB_VARIANTS / --variants: ") as caught:
        variants.parse(text)
    assert says in str(caught.value) and "\n" not in str(caught.value)


def test_extra_cpu_only_with_its_opt_in() -> None:
    (v,) = variants.parse("slow=asyncio:LAB_EXTRA_CPU_US=5", allow_extra_cpu=True)
    assert v.env == {"LAB_EXTRA_CPU_US": "5"}


def test_variants_join_the_servers_and_the_plan() -> None:
    s = settings("--servers", "asyncio", "--scenarios", "json", "--reps", "2",
                 "--variants", "asyncio-pool3=asyncio:LAB_POOL_SIZE=3")
    assert s.servers == ("asyncio", "asyncio-pool3")
    assert s.variants == {"asyncio-pool3": ("asyncio", {"LAB_POOL_SIZE": "3"})}
    alone = settings("--servers", "asyncio", "--scenarios", "json", "--reps", "2")
    assert [r[2] for r in plan.repetitions(s)] == ["asyncio", "asyncio-pool3", "asyncio-pool3", "asyncio"]
    per_server = plan.total_seconds(alone, False)
    assert plan.total_seconds(s, False) == pytest.approx(2 * per_server, rel=0.05)


def test_bad_variants_fail_the_factory() -> None:
    with pytest.raises(RunError, match="unknown model 'tornado'"):
        settings("--variants", "x=tornado")


def test_the_command_gives_the_variants_again() -> None:
    s = settings("--servers", "asyncio", "--scenarios", "json", "--allow-extra-cpu",
                 "--variants", f"new=asyncio@{REPO}:LAB_POOL_SIZE=3;slow=gevent:LAB_EXTRA_CPU_US=5")
    argv = shlex.split(run_folder.reproduce_command(s))
    assert argv[argv.index("--servers") + 1] == "asyncio" and "--allow-extra-cpu" in argv
    again = settings(*argv[argv.index("load") + 1:])
    assert again.servers == s.servers
    assert again.variants == s.variants and again.variant_dirs == s.variant_dirs


def test_descriptions_name_the_knobs_and_the_checkout() -> None:
    recs = variants.records({"p20": ("asyncio", {"LAB_POOL_SIZE": "20"}), "new": ("asyncio", {}),
                             "copy": ("gevent", {})}, {"new": str(REPO)})
    assert variants.describe("p20", recs["p20"]) == "p20: asyncio with LAB_POOL_SIZE=20"
    assert variants.describe("copy", recs["copy"]) == "copy: gevent as it is (a second copy)"
    assert variants.what(recs["p20"]) == "asyncio with LAB_POOL_SIZE=20"
    rows = run_tables.settings_rows({"run": {"settings": {"variants": recs}}})
    assert ("variant p20", "asyncio with LAB_POOL_SIZE=20") in rows
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip()
    if not commit:
        pytest.skip("this checkout is no git checkout (a copy): no commit to name")
    assert variants.describe("new", recs["new"]).startswith(f"new: asyncio from {REPO} (commit {commit}")


def test_a_bad_variant_exits_2_with_one_line() -> None:
    cmd = [sys.executable, "-m", "lab", "load", "--plan", "--variants", "x=asyncio:LAB_FOO=1"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=60, check=False)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "LAB_FOO is not a server knob" in done.stderr


def test_selfcheck_refuses_variants_for_load_vs_bench(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "lab", "selfcheck", "--variants", "x=asyncio:LAB_POOL_SIZE=3",
           "--load-vs-bench", "1", "--reports-dir", str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=60, check=False)
    assert done.returncode == 2 and done.stdout == "" and not any(tmp_path.iterdir())
    assert done.stderr.count("\n") == 1 and "run it without --variants" in done.stderr


def test_a_derived_run_keeps_only_the_variants_it_runs() -> None:
    s = settings("--servers", "asyncio", "--variants", "a=asyncio:LAB_POOL_SIZE=3;b=gevent")
    fewer = s.replace(servers=("asyncio", "b"))  # as make selfcheck's A/B run or make tune would
    assert fewer.variants_run() == {"b": ("gevent", {})}
    argv = shlex.split(run_folder.reproduce_command(fewer))
    assert argv[argv.index("--variants") + 1] == "b=gevent"
    assert "--variants" not in run_folder.reproduce_command(s.replace(servers=("asyncio",)))
