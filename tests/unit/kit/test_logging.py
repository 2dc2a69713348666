"""Structured logs: one JSON object per line carrying the RPC's request id and method."""

from __future__ import annotations

import json
import logging

from services.kit.logging import JsonFormatter, request_id_var, rpc_method_var


def format_record(msg: str, **extra) -> dict:
    record = logging.LogRecord("adsmon.rpc", logging.INFO, __file__, 1, msg, (), None)
    for key, value in extra.items():
        setattr(record, key, value)
    return json.loads(JsonFormatter("connects").format(record))


def test_log_line_carries_request_id_and_method_of_the_current_rpc():
    tokens = request_id_var.set("req-42"), rpc_method_var.set("Spend")
    try:
        line = format_record("Spend refused: not enough", grpc_code="FAILED_PRECONDITION",
                             reason="INSUFFICIENT_CONNECTS")
    finally:
        request_id_var.reset(tokens[0])
        rpc_method_var.reset(tokens[1])
    assert line["request_id"] == "req-42"
    assert line["grpc_method"] == "Spend"
    assert line["service"] == "connects"
    assert line["reason"] == "INSUFFICIENT_CONNECTS"
    assert line["level"] == "info"


def test_outside_an_rpc_no_request_id_is_invented():
    line = format_record("relay started")
    assert "request_id" not in line and "grpc_method" not in line
    assert line["msg"] == "relay started"
