"""Clients hire: JobHired on marketplace.jobs.v1 (ads closes the job's auction and settles it)."""

from __future__ import annotations

from adsmon.marketplace.v1 import jobs_pb2

from deploy.sim.core import Sim


class Hires:
    name, service, weight = "hires", "marketplace", 0.8

    def step(self, sim: Sim) -> None:
        picked = sim.world.pick_proposal(sim.rng)
        if picked is None:
            return
        job, proposal_id, freelancer = picked
        event = jobs_pb2.JobHired(job_id=job.job_id, proposal_id=proposal_id, freelancer_id=freelancer,
                                  contract_id=sim.id("contract"))
        event.hired_at.GetCurrentTime()
        sim.publish(event, job.job_id)
        sim.world.close(job)
