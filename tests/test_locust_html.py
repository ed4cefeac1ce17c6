"""Locust's own HTML report (about 1 MB, 95 % of a run folder) is written for each server and scenario's
first repetition only unless LAB_LOCUST_HTML asks otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.load.locust_job import LocustJob
from lab.load.settings import build_parser, from_args

pytestmark = pytest.mark.unit


def job(folder: Path, html: bool) -> LocustJob:
    return LocustJob(out_dir=folder, host="http://127.0.0.1:1", user_class="JsonUser", shape="steady",
                     users=4, spawn_rate=4, duration=1, warmup=0.5, html=html)


def test_the_html_report_is_asked_of_locust_only_when_wanted(tmp_path: Path) -> None:
    (with_html,) = job(tmp_path, True).build_commands()
    (without,) = job(tmp_path, False).build_commands()
    assert with_html[with_html.index("--html") + 1] == str(tmp_path / "locust.html")
    assert "--html" not in without and "--csv" in without


def test_the_knob_defaults_to_the_first_repetition_and_refuses_other_values() -> None:
    assert from_args(build_parser().parse_args([]), {}).locust_html == "first"
    assert from_args(build_parser().parse_args(["--locust-html", "all"]), {}).locust_html == "all"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--locust-html", "some"])
