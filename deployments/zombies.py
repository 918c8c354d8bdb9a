"""A flow run whose process died is marked Crashed, so the UI offers to retry it.

A served flow run sends a `prefect.flow-run.heartbeat` event every `HEARTBEAT_SECONDS` (the
runner passes `heartbeat_seconds` to each run's process). If its process is killed (the serving
process with it, the node lost), the heartbeats stop while the run still says Running, and the
UI has no Retry for a Running run. Prefect's own answer is an automation: a proactive trigger
that fires when a flow run that sent a heartbeat sends neither another one nor a final state
within `CRASH_AFTER_SECONDS`, and sets the run Crashed. It watches the runs of the served
deployments only (tagged `TAG`): they beat every 30 s, other runs every 180 s. The change is
not forced: a run that finished in the meantime is left alone. The server's trigger service
checks every few seconds, so a dead run turns Crashed between `CRASH_AFTER_SECONDS` and about
10 s more after its last heartbeat.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from prefect.automations import Automation, ChangeFlowRunState, EventTrigger, Posture
from prefect.client.schemas.objects import StateType
from prefect.events.schemas.events import ResourceSpecification

logger = logging.getLogger(__name__)

NAME = "rlt-crash-flow-runs-without-heartbeat"
TAG = "rlt-heartbeat"  # on the served deployments, so on their runs and their heartbeats
HEARTBEAT_SECONDS = 30  # Prefect's minimum
CRASH_AFTER_SECONDS = 90  # three heartbeats missed
_FINAL = ("Completed", "Failed", "Cancelled", "Crashed")


def zombie_automation(crash_after: float = CRASH_AFTER_SECONDS) -> Automation:
    """The automation (not yet created): no heartbeat nor final state for `crash_after`
    seconds after a heartbeat -> the flow run is set Crashed."""
    return Automation(
        name=NAME,
        description=(
            f"Marks a flow run Crashed when it sent no heartbeat for {crash_after:g} s (its "
            "process died); the UI can then retry it. Created by deployments.serve."
        ),
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", *(f"prefect.flow-run.{s}" for s in _FINAL)},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            # only runs served with this heartbeat: other flow runs (a flow called in a
            # shell, a worker's run) beat every 180 s by default and would be cut short
            match_related=ResourceSpecification(
                {"prefect.resource.role": "tag", "prefect.resource.id": f"prefect.tag.{TAG}"}
            ),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=crash_after),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"No heartbeat for {crash_after:g} s: the flow run's process is gone.",
            )
        ],
    )


def ensure_zombie_automation(crash_after: float = CRASH_AFTER_SECONDS) -> Automation:
    """Create the automation on the server of PREFECT_API_URL unless it is there with this
    `crash_after` (one with another period is replaced)."""
    if crash_after <= HEARTBEAT_SECONDS:
        raise ValueError(
            f"crash_after={crash_after:g} s is not longer than the heartbeat period "
            f"({HEARTBEAT_SECONDS} s): live runs would be marked Crashed. Use at least "
            f"{HEARTBEAT_SECONDS + 15} s."
        )
    try:
        existing = Automation.read(name=NAME)
    except ValueError:
        existing = None
    if existing is not None:
        if existing.trigger.within == timedelta(seconds=crash_after):
            return existing
        existing.delete()
    created = zombie_automation(crash_after).create()
    logger.info("automation %r: runs without a heartbeat for %g s turn Crashed", NAME, crash_after)
    return created
