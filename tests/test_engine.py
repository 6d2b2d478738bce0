"""The engine's own rules: per-call retry budgets, Retry-After dates, composite keys, policies.

The transport is driven over real HTTPS against the emulator; the pure pieces (the Retry-After
parser, row keys, the boundary, the policy's classification) are checked directly.
"""

from __future__ import annotations

import email.utils
import logging
import time

import pytest

from tap_dynamics.auth import build_token_provider
from tap_dynamics.dataverse.client import DataverseClient
from tap_dynamics.dataverse.policy import TOO_LARGE_CODE, DataversePolicy
from tap_dynamics.engine.pages import Page
from tap_dynamics.engine.policy import ServicePolicy, Verdict
from tap_dynamics.engine.prefetch import PageBudget
from tap_dynamics.engine.replication import Boundary, row_key
from tap_dynamics.engine.replication.partitions import PartitionedFullTable
from tap_dynamics.engine.retry import retry_after_seconds
from tap_dynamics.engine.run import RunContext
from tap_dynamics.errors import (
    EXIT_CONFIG,
    EXIT_SERVICE,
    EXIT_STREAMS_FAILED,
    NOT_A_MEMBER,
    AuthError,
    PermissionDenied,
    ServiceError,
    ServiceUnavailable,
)
from tap_dynamics.config import load_settings

SMALL = {"account": 5, "contact": 5, "systemuser": 3}


def test_a_smaller_retry_budget_for_one_call_does_not_change_the_clients(make_emulator) -> None:
    """A connection check asks for 2 attempts; the sync on the same client keeps its 8."""
    emu = make_emulator(rows=SMALL, error_5xx_rate=1.0, fault_max_per_request=3)
    settings = load_settings(emu.tap_config())
    client = DataverseClient(settings, build_token_provider(settings))
    client.BACKOFF_BASE = 0.01  # the rule is what is tested here, not the waiting
    url = client.url("WhoAmI")
    with pytest.raises(ServiceUnavailable, match="giving up after 2 attempts"):
        client.get_json(f"{url}?call=check", max_attempts=2)
    payload, _ = client.get_json(f"{url}?call=sync")  # 3 faults in a row, then the answer
    assert "UserId" in payload
    assert client.MAX_ATTEMPTS == 8
    assert emu.faults.counts().get("error_5xx") == 2 + 3


def test_retry_after_is_read_as_seconds_or_as_an_http_date() -> None:
    now = time.time()
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds(" 0 ") == 0.0
    assert retry_after_seconds("-3") == 0.0
    later = email.utils.formatdate(now + 30, usegmt=True)
    assert retry_after_seconds(later, now=now) == pytest.approx(30, abs=1)
    earlier = email.utils.formatdate(now - 30, usegmt=True)
    assert retry_after_seconds(earlier, now=now) == 0.0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None


def test_keys_are_tuples_of_columns_and_one_column_keys_keep_their_state_shape() -> None:
    single = row_key(("accountid",))
    assert single({"accountid": "a-1", "name": "x"}) == "a-1"  # as states saved before store it
    composite = row_key(("dataAreaId", "CustomerAccount"))
    assert composite({"dataAreaId": "usmf", "CustomerAccount": "US-001"}) == '["usmf","US-001"]'
    assert composite({"dataAreaId": "usmf", "CustomerAccount": "US-002"}) != composite(
        {"dataAreaId": "demf", "CustomerAccount": "US-002"}
    )

    # The boundary of a composite-key table drops exactly the rows emitted before, unchanged.
    seen = {composite({"dataAreaId": "usmf", "CustomerAccount": "US-001"}): 'W/"1"'}
    boundary = Boundary("2024-01-01T00:00:00Z", seen)
    rows = [
        {"dataAreaId": "usmf", "CustomerAccount": "US-001", "at": "2024-01-01T00:00:00Z", "@odata.etag": 'W/"1"'},
        {"dataAreaId": "demf", "CustomerAccount": "US-001", "at": "2024-01-01T00:00:00Z", "@odata.etag": 'W/"1"'},
        {"dataAreaId": "usmf", "CustomerAccount": "US-001", "at": "2024-01-01T00:00:05Z", "@odata.etag": 'W/"2"'},
    ]
    kept = boundary.rows(rows, "at", composite)
    assert [(r["dataAreaId"], r["at"]) for r in kept] == [
        ("demf", "2024-01-01T00:00:00Z"),
        ("usmf", "2024-01-01T00:00:05Z"),
    ]
    assert boundary.etags == {'["usmf","US-001"]': 'W/"2"'}


def test_partitioned_reads_use_the_streams_own_page_format() -> None:
    """Every page sequence of a stream is read in the stream's page format, whichever strategy
    reads it (a table with a format of its own, OData v2's, converts its rows in it)."""
    own_format = object()
    asked: list[tuple[str, object]] = []

    class Client:
        def iter_pages(self, url, *, prefer=None, table=None, required=(), cursor=None, page_format=None):
            asked.append((url, page_format))
            yield Page([{"id": url}], None, None, None)

    class FakeReader:
        name, deletes_emitted, page_format = "t", 0, own_format
        client, logger, page_budget = Client(), logging.getLogger("t"), PageBudget(4)

        def __init__(self) -> None:
            self.read_state: dict = {}
            self.arrived = 0

        def page_arrived(self, page: Page) -> None:
            self.arrived += 1

        def checkpoint(self, **values: object) -> None:
            self.read_state.update(values)

        def set_version(self, version: int | None) -> None: ...
        def activate_version(self, version: int) -> None: ...

    reader = FakeReader()
    pages = list(PartitionedFullTable(reader, prefer="", required=()).pages({"a": "u/a", "b": "u/b"}))  # type: ignore[arg-type]
    assert sorted(asked) == [("u/a", own_format), ("u/b", own_format)]
    assert len(pages) == 2 and reader.arrived == 2


def test_a_table_failed_before_its_stream_exists_counts_for_the_exit_code_as_during_its_sync() -> None:
    """A missing permission found while reading a table's metadata needs a person (exit 2), as it
    does when found during the table's sync; a service that kept failing needs time (exit 4)."""
    run = RunContext(max_concurrency=1)
    run.fail_table("invoice", ServiceError("HTTP 500"), "metadata could not be read: ")
    assert run.exit_code() == EXIT_STREAMS_FAILED
    run.fail_table("orders", ServiceUnavailable("kept failing"))
    assert run.exit_code() == EXIT_SERVICE
    run.fail_table("users", PermissionDenied("grant User.Read.All"), "metadata could not be read: ")
    assert run.exit_code() == EXIT_CONFIG
    assert [s.name for s in run.summary.failed] == ["invoice", "orders", "users"]


def test_policies_classify_responses_and_only_dataverse_knows_its_codes() -> None:
    generic = ServicePolicy("https://example.test/data")
    dataverse = DataversePolicy("https://org.example/api/data/v9.2")
    assert generic.classify(401, None) is Verdict.REFRESH
    assert generic.classify(429, None) is Verdict.THROTTLE
    assert generic.classify(503, None) is Verdict.RETRY
    assert generic.classify(404, None) is Verdict.FATAL
    assert generic.classify(500, TOO_LARGE_CODE) is Verdict.RETRY  # a Dataverse code means nothing here
    assert dataverse.classify(500, TOO_LARGE_CODE) is Verdict.SHRINK
    assert generic.refusal(403, NOT_A_MEMBER, "app x", "https://org") is None
    assert isinstance(dataverse.refusal(403, NOT_A_MEMBER, "app x", "https://org"), AuthError)
    assert "If-None-Match" in dataverse.base_headers and "If-None-Match" not in generic.base_headers
    assert dataverse.url("accounts", {"$select": "name,accountid", "$filter": "name eq 'A B'"}) == (
        "https://org.example/api/data/v9.2/accounts?$select=name,accountid&$filter=name%20eq%20'A%20B'"
    )


def test_budget_headers_pace_dataverse_and_finops_alike_and_nothing_else() -> None:
    """The service-protection budget left (x-ms-ratelimit-*): pressure rises as it nears zero,
    the same for Dataverse and for F&O's optional user-based limits; a generic service ignores it."""
    import requests

    from tap_dynamics.engine.policy import Pacing
    from tap_dynamics.finops.policy import FinOpsPolicy

    def response(**headers: str) -> requests.Response:
        made = requests.Response()
        made.headers.update(headers)
        return made

    low = response(**{"x-ms-ratelimit-burst-remaining-xrm-requests": "50",
                      "x-ms-ratelimit-time-remaining-xrm-requests": "45.00"})
    plenty = response(**{"x-ms-ratelimit-burst-remaining-xrm-requests": "5000",
                         "x-ms-ratelimit-time-remaining-xrm-requests": "1,100.00"})
    expected = Pacing(0.75, "50 requests, 45 s of execution time left in the 5-minute window")
    for policy in (DataversePolicy("https://org.example/api/data/v9.2"), FinOpsPolicy("https://env.example/data")):
        assert policy.pacing(low) == expected
        assert policy.pacing(plenty) is None
        assert policy.pacing(response()) is None
    assert ServicePolicy("https://example.test/data").pacing(low) is None
