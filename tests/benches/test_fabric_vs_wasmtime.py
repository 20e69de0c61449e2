"""The guest-vs-cli contenders run the same guest under fabric and under the wasmtime CLI."""

from __future__ import annotations

import asyncio

from benches.fabric_vs_wasmtime import (
    BULK_BYTES,
    CliBulk,
    CliRounds,
    FabricBulk,
    FabricRounds,
    FabricWorkersRounds,
)


async def test_round_trips_are_timed_inside_the_guest_under_both_runtimes() -> None:
    for factory in (CliRounds, FabricRounds):
        contender = factory(None)
        await contender.setup()
        try:
            elapsed_ns = await contender.op()
        finally:
            await contender.teardown()
        # 500 round trips: more than 1 us each, less than the op timeout
        assert 500_000 < elapsed_ns < 60e9, (contender.name, elapsed_ns)


async def test_bulk_echo_comes_back_whole_under_both_runtimes() -> None:
    for factory in (CliBulk, FabricBulk):
        contender = factory(None)
        await contender.setup()
        try:
            elapsed_ns = await contender.op()  # raises unless all bytes came back
        finally:
            await contender.teardown()
        assert elapsed_ns > 0 and contender.bytes_per_op == BULK_BYTES


async def test_workers_contender_runs_the_pairs_in_two_worker_processes() -> None:
    contender = FabricWorkersRounds(None)
    await contender.setup()
    try:
        # two clients at once: two control connections, handed to the workers
        elapsed = await asyncio.gather(contender.op(), contender.op())
        again = await contender.op()  # a kept connection is used again
    finally:
        await contender.teardown()
    for elapsed_ns in (*elapsed, again):
        assert 500_000 < elapsed_ns < 60e9, elapsed_ns
    # the description ends with the CPU each process of `fabric run --workers 2` spent
    assert "worker 0" in contender.description and "worker 1" in contender.description
