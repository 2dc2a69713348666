"""Regressions from the fuzzer (tests/fuzz): inputs that used to fail with INTERNAL or stall a consumer."""

from __future__ import annotations

import uuid

import grpc
import pytest
from adsmon.connects.v1 import connects_pb2
from adsmon.marketplace.v1 import jobs_pb2
from google.protobuf import any_pb2, timestamp_pb2
from google.protobuf.message import DecodeError

from services.kit.auth import mint_token
from services.kit.consumer import _is_permanent
from services.kit.errors import InvalidArgument
from services.kit.interceptors import error_status, header_safe, invalid_string_field
from services.kit.kafka import UndecodableEvent, decode_payload, make_event
from services.kit.prototime import optional_datetime, to_datetime
from tests.unit.kit.test_server_interceptors import SECRET, error_info
from tests.unit.kit.test_server_limits import SERVICE, start


async def test_a_request_string_with_a_nul_character_is_invalid_argument_naming_the_field():
    srv, _ = await start()
    md = (("authorization", f"Bearer {mint_token(SECRET, 'tests')}"),)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.app.grpc_port}") as ch:
            spend = ch.unary_unary(f"/{SERVICE}/Spend", request_serializer=connects_pb2.SpendRequest.SerializeToString)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await spend(connects_pb2.SpendRequest(request_id="\x00", account_id="a"), metadata=md, timeout=5)
    finally:
        await srv.stop()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(caught.value)
    assert (info.reason, info.metadata["field"]) == ("FIELD_CONTAINS_NUL", "request_id")


def test_the_string_check_reports_the_first_bad_field_and_why():
    request = connects_pb2.SpendRequest(request_id=str(uuid.uuid4()), account_id="a\x00b", reference="r" * 10)
    assert invalid_string_field(request, 5) == ("request_id", "FIELD_TOO_LONG")
    assert invalid_string_field(request, 100) == ("account_id", "FIELD_CONTAINS_NUL")
    assert invalid_string_field(connects_pb2.SpendRequest(account_id="ok"), 100) is None


@pytest.mark.parametrize("raw", ["\u202eevil", "a\nb", "\t", "Ωmega", "😀"])
def test_a_request_id_that_is_not_a_legal_header_value_is_propagated_percent_encoded(raw):
    safe = header_safe(raw)
    assert safe.isascii() and safe.isprintable() and safe != raw


def test_a_printable_ascii_request_id_is_propagated_as_it_is():
    assert header_safe("ads:bid:123:hold") == "ads:bid:123:hold"


@pytest.mark.parametrize("seconds,nanos", [(2**63 - 1, 0), (-(2**63), 0), (0, -1), (0, 10**9), (0, -(2**31))])
def test_a_timestamp_out_of_range_is_invalid_argument_naming_the_field(seconds, nanos):
    with pytest.raises(InvalidArgument) as caught:
        to_datetime(timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos), "end_time")
    assert caught.value.metadata == {"field": "end_time"}


def test_an_unset_timestamp_is_none_and_a_valid_one_a_utc_datetime():
    posted = jobs_pb2.JobPosted(job_id="j")
    assert optional_datetime(posted, "posted_at") is None
    posted.posted_at.seconds = 1_800_000_000
    assert optional_datetime(posted, "posted_at").timestamp() == 1_800_000_000


def test_payload_bytes_that_are_not_the_type_they_name_are_undecodable_not_a_crash():
    event = make_event(jobs_pb2.JobPosted(job_id="j"), "j", "tests")
    event.payload.CopyFrom(any_pb2.Any(type_url=event.payload.type_url, value=b"\xff\xff\xff\xff"))
    with pytest.raises(UndecodableEvent):
        decode_payload(event, [jobs_pb2.JobPosted])


def test_a_decode_error_in_a_handler_is_dead_lettered_at_once_not_retried():
    assert _is_permanent(DecodeError("Wire format was corrupt"))
    assert not _is_permanent(RuntimeError("maybe next time"))


def test_an_error_quoting_a_huge_input_fits_the_clients_metadata_limit():
    huge = "c" * 4096
    status = error_status(grpc.StatusCode.NOT_FOUND, "CAMPAIGN_NOT_FOUND", f"campaign {huge} not found", "ads",
                          {"campaign_id": huge})
    size = sum(len(k) + len(v) for k, v in status.trailing_metadata)
    assert size < 4096, f"{size} bytes of trailing metadata"
    assert status.details.startswith("campaign ccc") and status.details.endswith("...")
