"""The systemd units in deploy/systemd pass `systemd-analyze verify` with ExecStart pointed at this venv.

`make test` installs systemd's tools (`make services`). A unit that verify warns about (an unknown key, a
typo in a section) fails here too, not only one it refuses: its stderr must be empty.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from broker.config import build

UNITS = Path(__file__).resolve().parents[1] / "deploy" / "systemd"
INSTALLED = "/opt/switchboard/.venv/bin/switchboard"


@pytest.fixture(autouse=True)
def systemd_analyze() -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing: make test installs it (make services)")


def verify(directory: Path, *units: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *(f"./{unit}" for unit in units)],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=60,
    )


def here(tmp_path: Path) -> Path:
    """The units with ExecStart at this test venv's switchboard instead of /opt/switchboard."""
    command = Path(sys.executable).with_name("switchboard")
    assert command.exists(), command
    for unit in UNITS.glob("*.service"):
        text = unit.read_text()
        assert INSTALLED in text, f"{unit.name}: ExecStart is not {INSTALLED}"
        (tmp_path / unit.name).write_text(text.replace(INSTALLED, str(command)))
    return tmp_path


@pytest.mark.parametrize(
    "units",
    [("switchboard.service",), ("switchboard-router.service", "switchboard-shard@.service")],
    ids=["supervised", "router-and-shards"],
)
def test_units_verify_cleanly(tmp_path: Path, units: tuple[str, ...]) -> None:
    done = verify(here(tmp_path), *units)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_the_check_fails_on_a_broken_unit(tmp_path: Path) -> None:
    directory = here(tmp_path)
    broken = (
        (directory / "switchboard.service").read_text().replace("KillMode=mixed", "KillMode=mixed\nKilMode=x")
    )
    (directory / "switchboard.service").write_text(broken)
    assert verify(directory, "switchboard.service").stderr  # a typo'd key is reported
    missing = broken.replace(str(Path(sys.executable).with_name("switchboard")), "/nonexistent/switchboard")
    (directory / "switchboard.service").write_text(missing)
    assert verify(directory, "switchboard.service").returncode != 0


def test_the_unit_starts_the_server_with_the_documented_layout() -> None:
    unit = (UNITS / "switchboard.service").read_text()
    for line in (
        "ExecStart=/opt/switchboard/.venv/bin/switchboard -c /etc/switchboard/config.json",
        "KillMode=mixed",
        "LimitNOFILE=1048576",
        "RuntimeDirectory=switchboard",
    ):
        assert line in unit.splitlines(), line


def unit_environment(unit: str) -> dict[str, str]:
    """``Environment=`` lines of a unit, then the example environment file it reads, as systemd would."""
    env: dict[str, str] = {}
    lines = (UNITS / unit).read_text().splitlines()
    assert "EnvironmentFile=-/etc/switchboard/env" in lines, unit
    for line in lines:
        if line.startswith("Environment="):
            name, _, value = line.removeprefix("Environment=").partition("=")
            env[name] = value
    example = UNITS.parent / "switchboard.env.example"
    for line in example.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            env[name] = value
    return env


@pytest.mark.parametrize("unit", sorted(path.name for path in UNITS.glob("*.service")))
def test_every_unit_turns_metrics_on_and_reads_the_admin_settings(unit: str) -> None:
    cfg = build({"client": {"token": {"hmac_secret_key": "k"}}}, unit_environment(unit), {})
    assert cfg.prometheus and cfg.admin and cfg.admin_password and len(cfg.admin_secret) >= 32
    assert cfg.runtime_dir == "/run/switchboard"
    assert cfg.unknown_env == []
