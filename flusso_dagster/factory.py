"""`build_definitions`: everything flusso gives Dagster, built from one flusso.yaml."""

from __future__ import annotations

import os

from dagster import Definitions, EnvVar

from .assets import build_search_index, flusso_live, index_partitions
from .checks import build_checks
from .jobs import build_live_capture, build_stop_live_capture, build_verify_repair
from .project import SECRET_VARS, Project
from .resources import FlussoConfigResource, FlussoResource
from .schedules import build_reseed, build_verify_schedule
from .seed_state import build_seeded_check
from .sensors import build_keeper, build_seed_sensor
from .slot_health import build_slot_check, build_slot_health_sensor


def flusso_resource(project: Project) -> FlussoResource:
    """The resource, its secrets given as `EnvVar`s (only those set, so the config's defaults apply)."""
    secrets = {field: EnvVar(var) for field, var in SECRET_VARS.items() if os.environ.get(var)}
    return FlussoResource(config=FlussoConfigResource(path=project.config_path, **secrets),
                          heartbeat_s=project.heartbeat_s)


def build_definitions(project: Project | None = None) -> Definitions:
    project = project or Project.from_env()
    partitions = index_partitions(project)
    search_index = build_search_index(partitions)
    live_capture = build_live_capture(project)
    verify_repair = build_verify_repair()
    return Definitions(
        assets=[search_index, flusso_live],
        asset_checks=[build_checks(search_index, partitions, project.verify_sample),
                      build_seeded_check(search_index), build_slot_check()],
        jobs=[live_capture, build_stop_live_capture(project), verify_repair],
        sensors=[build_keeper(live_capture, project), build_seed_sensor(search_index),
                 build_slot_health_sensor(project)],
        schedules=[build_reseed(search_index, project), build_verify_schedule(verify_repair, project)],
        resources={"flusso": flusso_resource(project)},
    )
