"""GET /metrics: Prometheus text from a registry each app owns, with no id, URL or secret."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from pixsim7_testing.apps import started
from prometheus_client.parser import text_string_to_metric_families

pytestmark = [pytest.mark.integration, pytest.mark.rollback_db]

ADMIN_HEADERS = {"Authorization": "Bearer kit-admin-token"}


async def scrape(running: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Each sample of /metrics by (name, sorted labels)."""
    response = await running.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def sample(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


async def test_metrics_show_readiness_checks_startup_steps_and_plugins(app_factory) -> None:
    running = await started(app_factory)
    samples = await scrape(running)
    assert [sample(samples, "pixsim7_readiness_status", status=s)
            for s in ("ready", "degraded", "unavailable")] == [1.0, 0.0, 0.0]
    assert sample(samples, "pixsim7_check_up", check="database") == 1.0
    assert sample(samples, "pixsim7_check_duration_seconds", check="database") >= 0
    assert sample(samples, "pixsim7_check_runs_total", check="database") >= 1
    assert sample(samples, "pixsim7_startup_step_duration_seconds",
                  phase="startup", step="database", status="ok") > 0
    assert sample(samples, "pixsim7_plugins_enabled") == 6.0
    assert sample(samples, "pixsim7_plugins_failed") == 0.0


@pytest.mark.template_db
async def test_requests_are_counted_by_route_template_method_and_status(app_factory) -> None:
    running = await started(app_factory)

    @running.app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    for path in ("/items/41", "/items/42", "/items/not-a-number", "/no-such-page?token=x",
                 "/api/v1/presets"):
        await running.get(path)
    samples = await scrape(running)
    counted = {labels: value for (name, labels), value in samples.items()
               if name == "pixsim7_http_requests_total"}
    assert counted[(("method", "GET"), ("route", "/items/{item_id}"), ("status", "200"))] == 2
    assert counted[(("method", "GET"), ("route", "/items/{item_id}"), ("status", "422"))] == 1
    assert counted[(("method", "GET"), ("route", "unmatched"), ("status", "404"))] == 1
    routes = {value for labels in counted for key, value in labels if key == "route"}
    # A plugin's route, included under its prefix, counts under its full path.
    assert counted[(("method", "GET"), ("route", "/api/v1/presets"), ("status", "200"))] == 1
    # Templates only: no id, no query.
    assert routes == {"/items/{item_id}", "unmatched", "/api/v1/presets"}
    assert sample(samples, "pixsim7_http_request_duration_seconds_count",
                  method="GET", route="/items/{item_id}") == 3


@pytest.mark.template_db
async def test_two_apps_share_no_metrics(app_factory) -> None:
    first, second = await started(app_factory), await started(app_factory)
    for _ in range(3):
        await first.get("/")
    await second.get("/")
    counts = [sample(await scrape(running), "pixsim7_http_requests_total",
                     method="GET", route="/", status="200") for running in (first, second)]
    assert counts == [3.0, 1.0]
    assert first.app.state.metrics.registry is not second.app.state.metrics.registry


async def test_metrics_setting_admin_needs_the_admin_token(app_factory, make_settings) -> None:
    running = await started(app_factory, make_settings(metrics="admin"))
    assert (await running.get("/metrics")).status_code == 401
    assert (await running.get("/metrics", headers=ADMIN_HEADERS)).status_code == 200


async def test_a_probe_storm_runs_one_database_check_per_cache_window(
    app_factory, make_settings
) -> None:
    running = await started(app_factory, make_settings(ready_cache_ttl=30))
    before = sample(await scrape(running), "pixsim7_check_runs_total", check="database")
    for _ in range(20):
        assert (await running.get("/ready")).status_code == 200
    after = sample(await scrape(running), "pixsim7_check_runs_total", check="database")
    assert after - before <= 1


@pytest.mark.template_db
async def test_the_served_app_counts_its_real_requests_and_guards_metrics_with_the_token(
    backend_services_env, backend_processes
) -> None:
    token = f"served-{uuid.uuid4().hex}"
    serve = backend_processes("serve", {**backend_services_env, "SHUTDOWN_DRAIN_SECONDS": "0",
                                        "METRICS": "admin", "ADMIN_TOKEN": token})
    await asyncio.to_thread(serve.wait_ready, 60)
    async with httpx.AsyncClient(base_url=serve.base_url) as client:
        for _ in range(3):
            assert (await client.get("/api/v1/presets")).status_code == 200
        # Paths a scanner tries: each lands in one "unmatched" series, not a series per path.
        for path in ("/.env", "/wp-login.php", "/api/v1/presets/..%2f..%2fetc%2fpasswd"):
            await client.get(path)
        refused = await client.get("/metrics")
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer " + token[:-1]})
        scraped = await client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert (refused.status_code, wrong.status_code, scraped.status_code) == (401, 401, 200)
    assert scraped.headers["content-type"].startswith("text/plain")
    samples = parse(scraped.text)
    assert sample(samples, "pixsim7_http_requests_total",
                  method="GET", route="/api/v1/presets", status="200") == 3.0
    routes = {dict(labels).get("route") for (name, labels) in samples
              if name == "pixsim7_http_requests_total"}
    assert not any("passwd" in route or ".env" in route for route in routes), routes
    assert sample(samples, "pixsim7_readiness_status", status="ready") == 1.0
    assert sample(samples, "pixsim7_startup_step_duration_seconds",
                  phase="startup", step="plugins", status="ok") > 0
    assert token not in scraped.text and "postgres" not in scraped.text
    assert serve.stop() == 0, serve.describe()
