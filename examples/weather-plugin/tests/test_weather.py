import pytest
from pixsim7_testing.apps import started

from testing.cities import CITIES  # the project's own `testing` package, untouched by the kit


@pytest.mark.rollback_db
async def test_the_route_answers_for_each_city(app_factory, weather_settings):
    running = await started(app_factory, weather_settings())
    for city in CITIES:
        answer = await running.get(f"/api/v1/plugins/weather/{city}")
        assert answer.status_code == 200, answer.text
        assert answer.json()["city"] == city and answer.json()["sky"] in {
            "sunny", "cloudy", "rainy"}


@pytest.mark.template_db
async def test_the_job_kind_is_offered_and_queued(app_factory, weather_settings):
    running = await started(app_factory, weather_settings())
    kinds = {k["kind"]: k["owner"] for k in (await running.get("/api/v1/jobs/kinds")).json()}
    assert kinds["weather.forecast"] == "weather"
    queued = await running.client.post("/api/v1/jobs", json={
        "kind": "weather.forecast", "payload": {"city": "Oslo"}})
    assert queued.status_code == 202, queued.text
    state = (await running.get(f"/api/v1/jobs/{queued.json()['id']}")).json()
    assert state["status"] == "queued"


async def test_startup_with_the_plugin_matches_its_golden_snapshot(
    app_factory, weather_settings, snapshot_json
):
    # The empty tier: this test's own database, where startup creates the schema.
    running = await started(app_factory, weather_settings())
    assert await running.story(probe_paths="/ready", inventory=False) == snapshot_json


async def test_the_route_answers_503_while_the_database_is_cut(
    app_factory, weather_settings, fault_proxy
):
    proxy = fault_proxy("postgres")
    running = await started(app_factory, weather_settings(database_proxy=proxy))
    assert (await running.get("/api/v1/plugins/weather/Oslo")).status_code == 200
    proxy.cut()
    try:
        answer = await running.get("/api/v1/plugins/weather/Oslo")
        assert answer.status_code == 503 and answer.headers["Retry-After"]
    finally:
        proxy.restore()
