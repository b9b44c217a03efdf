"""Service URLs as hosting platforms write them, and connection failures as one sentence.

`pixsim7-backend check` runs the API's startup against the kit's servers (or a PostgreSQL of
the test's own where a password must be refused) and is read as an operator reads it.
"""

from __future__ import annotations

import asyncio

import pytest
from pixsim7_testing.isolation import server_offers_ssl
from pixsim7_testing.processes import run_backend

from pixsim7.backend.main.infrastructure.adapters.embedded import EmbeddedPostgres, free_port

pytestmark = pytest.mark.integration


def one_sentence(run, step: str) -> str:
    """The startup-failure sentence of a failed run, checked to be the only way it failed."""
    assert run.returncode == 1, run.output
    assert "Traceback" not in run.output and "Background on this error" not in run.output
    lines = [line for line in run.stderr.splitlines() if line.startswith("startup failed")]
    assert len(lines) == 1 and lines[0].startswith(f"startup failed at step '{step}': "), (
        run.output)
    return lines[0]


@pytest.mark.template_db
def test_libpq_options_platforms_write_are_understood(backend_services_env, test_database,
                                                      tmp_path) -> None:
    url = (f"{test_database.url}?sslmode=disable&channel_binding=prefer"
           "&application_name=pixsim7-api&connect_timeout=10")
    run = run_backend(["check"], {**backend_services_env, "DATABASE_URL": url}, tmp_path)
    assert run.returncode == 0, run.output


@pytest.mark.template_db
def test_sslmode_require_connects_over_ssl_or_is_one_sentence_without_it(backend_services_env,
                                                                  test_database, tmp_path):
    url = f"{test_database.url}?sslmode=require"
    run = run_backend(["check"], {**backend_services_env, "DATABASE_URL": url}, tmp_path)
    if asyncio.run(server_offers_ssl(test_database.endpoint)):  # a server with a certificate
        assert run.returncode == 0, run.output
        return
    sentence = one_sentence(run, "database")
    assert f"at {test_database.endpoint.host}:{test_database.endpoint.port}" in sentence
    assert "SSL" in sentence


@pytest.mark.template_db
def test_an_unknown_sslmode_is_refused_by_the_settings_step(backend_services_env,
                                                             test_database, tmp_path) -> None:
    run = run_backend(["check"], {**backend_services_env,
                                  "DATABASE_URL": f"{test_database.url}?sslmode=sometimes"},
                      tmp_path)
    assert "sslmode='sometimes'" in one_sentence(run, "settings")


def test_a_refused_connection_names_host_and_port(backend_env, redis_namespace,
                                                  tmp_path) -> None:
    port = free_port()
    run = run_backend(["check"], {**backend_env, "REDIS_URL": redis_namespace.url,
                                  "DATABASE_URL": f"postgresql://app:pw-9876@127.0.0.1:{port}/db"},
                      tmp_path)
    assert one_sentence(run, "database").endswith(
        f"DatabaseUnavailable: cannot connect to the database db at 127.0.0.1:{port} as user "
        "app: connection refused")
    assert "pw-9876" not in run.output


def test_a_wrong_password_is_one_sentence_naming_user_and_host(backend_env, redis_namespace,
                                                               servers_data_dir,
                                                               tmp_path) -> None:
    server = EmbeddedPostgres(servers_data_dir / "postgres", fast=True).start()
    try:
        url = f"postgresql://postgres:wrong-password-1@127.0.0.1:{server.port}/postgres"
        run = run_backend(["check"], {**backend_env, "DATABASE_URL": url,
                                      "REDIS_URL": redis_namespace.url}, tmp_path)
    finally:
        server.stop()
    sentence = one_sentence(run, "database")
    assert sentence.endswith(
        f"cannot connect to the database postgres at 127.0.0.1:{server.port} as user "
        'postgres: password authentication failed for user "postgres"'), sentence
    assert "wrong-password-1" not in run.output


@pytest.mark.template_db
def test_a_password_in_the_user_place_of_redis_url_is_never_logged(backend_services_env,
                                                                   tmp_path) -> None:
    url = f"redis://SECRET-IN-USER-9@127.0.0.1:{free_port()}/0"
    run = run_backend(["check"], {**backend_services_env, "REDIS_URL": url}, tmp_path)
    assert "SECRET-IN-USER-9" not in run.output
    assert "redis://***@127.0.0.1" in run.output, run.output
