"""Property-based fuzzing of the whole REST API from its own OpenAPI schema (schemathesis, on
hypothesis), with real tokens for an admin and an evaluator, against a real server on SQLite and
on PostgreSQL: no input may produce a 5xx, and every response must be one the schema documents
(status code, content type, body, headers), for inputs that fit the schema and for inputs that
break it (which get a documented 4xx).

Bounded so the suite keeps its budget: `EXAMPLES` cases per operation and generation mode.
Schemathesis's own pytest plugin does not run under this pytest, so each operation's strategy
is driven by hypothesis directly. Not checked: "schema-valid data is accepted": some rules span
fields (scale_min < scale_max, a rank for every shown candidate) and cannot be written in JSON
Schema, so a schema-valid request may rightly get 422; nor "schema-violating data is refused":
the real token sent with every case replaces the mutated credentials schemathesis thinks it sent
(its check then reported valid requests such as `?campaign_id=1`). Unknown query parameters and
body fields are refused by the app itself (tests/feedback/test_hardening.py).

`ALIGNLOOP_FUZZ_RANDOM=1 ALIGNLOOP_FUZZ_EXAMPLES=200 python -m pytest tests/feedback/test_fuzz.py`
explores new cases; the suite runs the same derandomised ones every time.
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode, checks

from web_client import bearer

EXAMPLES = int(os.environ.get("ALIGNLOOP_FUZZ_EXAMPLES", "25"))
DERANDOMIZE = os.environ.get("ALIGNLOOP_FUZZ_RANDOM") != "1"  # CI: the same cases every run
CHECKS = {
    GenerationMode.POSITIVE: [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
                              checks.response_schema_conformance, checks.response_headers_conformance],
    GenerationMode.NEGATIVE: [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance],
}


def fuzz_operation(operation, mode: GenerationMode, token: str) -> tuple[int, list[str]]:
    """(cases run, failures) for one operation in one generation mode."""
    ran, failures = [0], []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=DERANDOMIZE,
              suppress_health_check=list(HealthCheck))
    def run(case) -> None:
        ran[0] += 1
        case.validate_response(case.call(headers=bearer(token), timeout=30), checks=CHECKS[mode])

    try:
        run()
    except BaseException as error:  # schemathesis's FailureGroup is a BaseExceptionGroup
        if isinstance(error, (KeyboardInterrupt, SystemExit)):
            raise
        failures.append(f"{operation.label} ({mode.value}): {str(error)[:1500]}")
    return ran[0], failures


@pytest.mark.slow
@pytest.mark.parametrize("role", ["admin", "eve"])
def test_no_generated_request_gets_a_5xx_or_an_undocumented_response(world, role):
    base, _, tokens, _ = world
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8
    total, failures = 0, []
    for operation in operations:
        for mode in GenerationMode:
            ran, failed = fuzz_operation(operation, mode, tokens[role])
            total, failures = total + ran, failures + failed
    print(f"fuzzed {len(operations)} operations with {total} generated requests as {role}")
    assert not failures, "\n\n".join(failures)
    assert total >= len(operations) * 2  # every operation was really exercised
