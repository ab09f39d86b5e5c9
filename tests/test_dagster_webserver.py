"""The UI's view: a webserver on loopback, started as `make demo` starts it, answers GraphQL with
the asset and its partitions and checks, the job, the sensors and the schedule."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

QUERY = """
{
  repositoriesOrError {
    ... on RepositoryConnection {
      nodes {
        jobs { name }
        sensors { name sensorState { status } }
        schedules { name cronSchedule scheduleState { status } }
        assetNodes {
          assetKey { path }
          partitionKeys
          assetChecksOrError { ... on AssetChecks { checks { name } } }
        }
      }
    }
  }
}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql",
                                     data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.load(reply)


@pytest.fixture
def webserver(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    for name in ("FLUSSO_CONFIG", "FLUSSO_RESEED_CRON", "FLUSSO_RESEED_INDEXES"):
        env.pop(name, None)
    port = _free_port()
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("dagster-webserver")), "-h", "127.0.0.1", "-p", str(port),
         "-w", "workspace.yaml"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5):
                    break
            except (urllib.error.URLError, ConnectionError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the webserver did not start: {proc.communicate(timeout=10)[0]}")
                time.sleep(0.5)
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def test_webserver_shows_the_asset_partitions_checks_job_sensors_and_schedule(webserver):
    reply = _graphql(webserver, QUERY)
    assert "errors" not in reply, reply
    (repo,) = reply["data"]["repositoriesOrError"]["nodes"]
    assets = {tuple(a["assetKey"]["path"]): a for a in repo["assetNodes"]}
    assert assets[("search_index",)]["partitionKeys"] == ["books"]
    assert {c["name"] for c in assets[("search_index",)]["assetChecksOrError"]["checks"]} == {
        "documents_match_rows", "definition_current", "seeded"}
    assert {c["name"] for c in assets[("flusso_live",)]["assetChecksOrError"]["checks"]} == {"slot_health"}
    assert "live_capture" in {j["name"] for j in repo["jobs"]}
    assert {s["name"]: s["sensorState"]["status"] for s in repo["sensors"]} == {
        "live_capture_keeper": "RUNNING", "seed_sensor": "RUNNING", "slot_health_sensor": "RUNNING"}
    schedules = {s["name"]: (s["cronSchedule"], s["scheduleState"]["status"]) for s in repo["schedules"]}
    assert schedules == {"reseed": ("0 3 * * 0", "STOPPED"), "verify_repair_schedule": ("0 4 * * *", "STOPPED")}
    assert "verify_repair" in {j["name"] for j in repo["jobs"]}
