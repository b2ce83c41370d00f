"""``dispatcher metrics`` answers with ``DeploymentCollector.render``, written without
prometheus-client's sample objects and reusing each idle plan's lines between scrapes: it must
serve exactly the series and values that ``collect`` gives the client library, scrape after
scrape, as the plans' fields change."""

from __future__ import annotations

import redis
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dispatcher.api import Dispatcher
from dispatcher.config import Settings
from dispatcher.models import Campaign
from dispatcher.observability.exporter import DeploymentCollector, registry_for
from dispatcher.storage import keys
from dispatcher.storage.fields import Stats

# A plan id the config would refuse, left in Redis by an older version: escaped, not broken.
LEGACY = 'le"ga\\cy'
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _samples(text: str) -> Samples:
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if fam.name != "dispatcher_queue_oldest_age_seconds":  # Redis time moves on
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _settings(url: str) -> Settings:
    plans = {
        p: {"base_url": "http://127.0.0.1:1", "token_env": "T", "rate": 30}
        for p in ("acme", "beta")
    }
    return Settings.from_mapping({"redis_url": url, "plans": plans}, env={"T": "t"})


def test_render_serves_what_collect_gives_scrape_after_scrape(r: redis.Redis) -> None:
    url = f"redis://127.0.0.1:{r.connection_pool.connection_kwargs['port']}/0"
    settings = _settings(url)
    d = Dispatcher(settings, r)
    d.enqueue(Campaign(plan="acme", sender="Acme", body="Hi", recipients=["+46701234567"]))
    r.hset(keys.stats(LEGACY), Stats.SENT, 7)  # in Redis, no longer configured
    r.sadd(keys.PLANS, LEGACY)
    collector = DeploymentCollector(settings, r)
    registry = registry_for(settings, r)

    def same() -> Samples:
        rendered = _samples(collector.render().decode())
        assert rendered == _samples(generate_latest(registry).decode())
        return rendered

    first = same()
    assert first[("dispatcher_recipients_enqueued_total", (("plan", "acme"),))] == 1
    assert first[("dispatcher_recipients_sent_total", (("plan", LEGACY),))] == 7
    assert same() == first  # every plan's lines from the cache

    r.hincrby(keys.stats("beta"), Stats.SENT, 5)  # one plan changes, the others are reused
    d.set_plan("acme", rate=12.0)
    after = same()
    assert after[("dispatcher_recipients_sent_total", (("plan", "beta"),))] == 5
    assert after[("dispatcher_rate_limit_per_second", (("plan", "acme"),))] == 12
    assert after[("dispatcher_rate_limit_runtime", (("plan", "acme"),))] == 1

    r.delete(keys.stats(LEGACY))
    r.srem(keys.PLANS, LEGACY)
    assert not any(dict(labels).get("plan") == LEGACY for _, labels in same())
