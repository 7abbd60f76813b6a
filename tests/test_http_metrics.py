"""What a scraper reads about a service's HTTP traffic: requests counted and timed per route, status and service,
failures counted as errors, nothing left in flight once answered."""

from __future__ import annotations

from litestar import Litestar, get
from litestar.exceptions import HTTPException
from litestar.params import FromPath
from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families

from shared.http_metrics import MetricsController, request_metrics

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@get("/things/{thing_id:str}", sync_to_thread=False)
def thing(thing_id: FromPath[str]) -> dict[str, str]:
    if thing_id == "missing":
        raise HTTPException(status_code=404, detail="no such thing")
    return {"id": thing_id}


@get("/broken", sync_to_thread=False)
def broken() -> None:
    raise RuntimeError("a bug")


def probe_app(service: str) -> Litestar:
    return Litestar([thing, broken, MetricsController], middleware=[request_metrics(service)], debug=False)


async def scrape(client: AsyncTestClient[Litestar]) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def route(service: str, path: str, status: int, method: str = "GET") -> dict[str, str]:
    return {"app_name": service, "method": method, "path": path, "status_code": str(status)}


async def test_requests_are_counted_per_route_template_status_and_service() -> None:
    async with AsyncTestClient(probe_app("probe-a")) as a, AsyncTestClient(probe_app("probe-b")) as b:
        before = await scrape(a)
        for thing_id in ("one", "two", "three"):
            assert (await a.get(f"/things/{thing_id}")).status_code == 200
        assert (await a.get("/things/missing")).status_code == 404
        assert (await b.get("/things/one")).status_code == 200
        after = await scrape(a)

    def moved(name: str, labels: dict[str, str]) -> float:
        key = (name, frozenset(labels.items()))
        return after.get(key, 0.0) - before.get(key, 0.0)

    ok, missing = route("probe-a", "/things/{thing_id}", 200), route("probe-a", "/things/{thing_id}", 404)
    assert moved("timebank_http_requests_total", ok) == 3
    assert moved("timebank_http_requests_total", missing) == 1
    assert moved("timebank_http_request_duration_seconds_count", ok) == 3
    assert moved("timebank_http_request_duration_seconds_sum", ok) > 0
    assert moved("timebank_http_request_duration_seconds_bucket", {**ok, "le": "+Inf"}) == 3
    # The other service's request is its own series, in the same registry.
    assert moved("timebank_http_requests_total", route("probe-b", "/things/{thing_id}", 200)) == 1
    # A refusal is not an error; nothing is left in flight.
    assert moved("timebank_http_requests_error_total", missing) == 0
    assert (
        after[("timebank_http_requests_in_progress", frozenset(route("probe-a", "/things/{thing_id}", 200).items()))]
        == 0
    )
    assert not any(dict(labels).get("path", "").startswith("/things/one") for _, labels in after)


async def test_a_failing_request_is_counted_as_an_error() -> None:
    async with AsyncTestClient(probe_app("probe-c")) as client:
        before = await scrape(client)
        assert (await client.get("/broken")).status_code == 500
        after = await scrape(client)
    failed = frozenset(route("probe-c", "/broken", 500).items())
    assert (
        after[("timebank_http_requests_error_total", failed)]
        - before.get(("timebank_http_requests_error_total", failed), 0)
        == 1
    )
    assert (
        after[("timebank_http_requests_total", failed)] - before.get(("timebank_http_requests_total", failed), 0) == 1
    )
