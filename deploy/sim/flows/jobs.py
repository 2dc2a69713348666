"""The job lifecycle on marketplace.jobs.v1: posted, cancelled before contract, removed for the terms of service.

A cancelled or removed job makes connects return every proposal (and boost) spend referencing it, and ads
release its open holds: both consume these events.
"""

from __future__ import annotations

from adsmon.marketplace.v1 import jobs_pb2
from google.protobuf.message import Message

from deploy.sim.core import CATEGORIES, PROPOSAL_COSTS, Job, Sim

MAX_OPEN_JOBS = 300


class PostJobs:
    name, service, weight = "jobs_posted", "marketplace", 2.0

    def step(self, sim: Sim) -> None:
        world = sim.world
        job = Job(sim.id("job"), sim.rng.choice(world.clients), sim.rng.choice(CATEGORIES),
                  sim.rng.choices(PROPOSAL_COSTS, (1, 3, 4, 3, 2, 1, 1))[0])
        event = jobs_pb2.JobPosted(job_id=job.job_id, client_id=job.client_id, category=job.category,
                                   proposal_cost_connects=job.cost)
        event.posted_at.GetCurrentTime()
        sim.publish(event, job.job_id)
        world.jobs.append(job)
        if len(world.jobs) > MAX_OPEN_JOBS:  # the oldest jobs leave the simulation (they expire on their own)
            world.jobs.pop(0)


class _EndJob:
    """Ends a job whose proposals paid Connects (so there is something to return), else any open job."""

    def event(self, sim: Sim, job: Job) -> Message:
        raise NotImplementedError

    def step(self, sim: Sim) -> None:
        pool = [j for j in sim.world.jobs if j.spent] or sim.world.jobs
        if not pool:
            return
        job = sim.rng.choice(pool)
        sim.publish(self.event(sim, job), job.job_id)
        sim.world.close(job)


class CancelJobs(_EndJob):
    name, service, weight = "jobs_cancelled", "marketplace", 0.6

    def event(self, sim: Sim, job: Job) -> Message:
        event = jobs_pb2.JobCancelled(job_id=job.job_id)
        event.cancelled_at.GetCurrentTime()
        return event


class RemoveJobs(_EndJob):
    name, service, weight = "jobs_removed", "marketplace", 0.15

    def event(self, sim: Sim, job: Job) -> Message:
        event = jobs_pb2.JobRemoved(job_id=job.job_id, policy_reason=sim.rng.choice(("spam", "off_platform_payment")))
        event.removed_at.GetCurrentTime()
        return event
