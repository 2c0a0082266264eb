"""Simulated traffic for the demo and `funnel send-mock`: conversations of the last days as
provider webhook bodies, with the simulation (and its ground truth) when wanted."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta

from funnel_ingest.messages import SOURCES
from funnel_ingest.simulate.conversations import Simulation, customers_for_messages, simulate
from funnel_ingest.simulate.webhooks import Sample, to_webhooks


def recent_traffic(customers: int, seed: int | None, days: int = 2
                   ) -> tuple[Simulation, list[Sample]]:
    """Realistic conversations of `customers` over the last `days` days, and their webhook
    bodies as the providers deliver them (with redeliveries). A random seed when None."""
    seed = random.randrange(1 << 30) if seed is None else seed
    start = datetime.now(UTC) - timedelta(days=days, hours=1)
    sim = simulate(customers, seed=seed, start=start, days=days)
    return sim, list(to_webhooks(sim.deliveries(seed=seed), seed=seed))


def mock_samples(count: int, *, seed: int, sources: Iterable[str] = SOURCES, days: int = 1,
                 now: datetime | None = None) -> Iterator[Sample]:
    """`count` webhook bodies of simulated conversations (all of them within the last `days`
    days), only from `sources`, which take turns (each source's bodies in time order), so even
    a short run shows every source. The same seed gives the same message ids (redeliveries)."""
    wanted = frozenset(sources)
    now = now or datetime.now(UTC)
    made = empty = 0
    for n in itertools.count():
        # a body carries about 1.2 messages and each source has about a third of the
        # customers: ask for what is missing, with a margin
        missing = (count - made) * 1.3 * len(SOURCES) / len(wanted)
        customers = customers_for_messages(int(missing) + 8, days=days)
        sim = simulate(customers, seed=seed + n, start=now - timedelta(days=days), days=days)
        before = made
        queues: dict[str, list[Sample]] = {source: [] for source in sorted(wanted)}
        for sample in to_webhooks((m.message for m in sim.messages), seed=seed + n):
            if sample.source in wanted:
                queues[sample.source].append(sample)
        for turn in itertools.zip_longest(*queues.values()):
            for sample in turn:
                if sample is None:
                    continue
                yield sample
                made += 1
                if made >= count:
                    return
        empty = empty + 1 if made == before else 0
        if empty == 20:
            raise RuntimeError(f"the simulator made no webhooks from {sorted(wanted)}")
