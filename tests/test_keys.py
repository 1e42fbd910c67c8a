"""Installation keys: made once, the same for every process on the store."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from storage.engine import make_engine
from storage.keys import DMARC_SAMPLING, instance_key
from storage.schema import prepare


def test_the_sampling_key_is_made_once_and_shared(db_url: str) -> None:
    engines = [make_engine(db_url) for _ in range(4)]
    prepare(engines[0])
    try:
        with ThreadPoolExecutor(4) as pool:  # four processes asking at once, in effect
            keys = list(pool.map(lambda engine: instance_key(engine, DMARC_SAMPLING), engines))
        assert len(set(keys)) == 1 and len(keys[0]) == 32
        assert instance_key(engines[0], DMARC_SAMPLING) == keys[0]
        assert instance_key(engines[0], "another") != keys[0]
    finally:
        for engine in engines:
            engine.dispose()
