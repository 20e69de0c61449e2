"""The guest-vs-cli contenders run the same guest under fabric and under the wasmtime CLI."""

from __future__ import annotations

from benches.fabric_vs_wasmtime import BULK_BYTES, CliBulk, CliRounds, FabricBulk, FabricRounds


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
