"""The kept heap (glibc's mmap and trim thresholds): numpy's freed temporaries are not faulted in again.

Measured as the kernel counts it (minor page faults, ``getrusage``), in fresh processes: one left as Python
starts, one after ``keep_heap``, and a worker of the session's Ray, set up by the job's hook.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import ray
from unigeoclip.cluster.heap import keep_heap

CHURN = textwrap.dedent(
    """
    import resource
    import numpy as np

    def churn(rounds=20):
        '''Three 6 MiB arrays made and freed, as a batch of patches is: the page faults this costs.'''
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(rounds):
            arrays = [np.ones(6 * 2**20 // 8) for _ in range(3)]
            del arrays
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    def measured():
        churn(2)  # the first rounds fault the heap in, kept heap or not
        return churn()
    """
)
ROUNDS, ARRAY_PAGES = 20, 6 * 2**20 // 4096


def churn_in_a_fresh_process(keep: bool) -> int:
    setup = "from unigeoclip.cluster.heap import keep_heap; assert keep_heap()\n" if keep else ""
    script = setup + CHURN + "print(measured())\n"
    return int(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout)


@pytest.mark.skipif(not keep_heap(), reason="not glibc: its allocator has no mallopt thresholds to set")
def test_a_fresh_process_faults_its_freed_arrays_in_again_unless_the_heap_is_kept() -> None:
    # glibc's start: an array's pages (at least) go back to the kernel every round and are faulted in again
    assert churn_in_a_fresh_process(keep=False) > ROUNDS * ARRAY_PAGES / 2
    assert churn_in_a_fresh_process(keep=True) < ARRAY_PAGES / 4  # kept: a few stray pages over all rounds


@pytest.mark.skipif(not keep_heap(), reason="not glibc: its allocator has no mallopt thresholds to set")
def test_every_ray_worker_keeps_its_heap_through_the_jobs_setup_hook(ray_cluster: dict) -> None:
    namespace: dict = {}
    exec(CHURN, namespace)  # the same function, shipped to a fresh worker
    measured = ray.remote(max_calls=1)(namespace["measured"])  # a worker process of its own, started for this task
    faults = ray.get(measured.remote())
    assert faults < ARRAY_PAGES / 4, f"{faults} minor page faults: the worker's heap was trimmed each round"
