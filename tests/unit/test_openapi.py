"""The OpenAPI document as data: its request bodies are the handlers' models, every POST
documents 413, and the document is strict JSON."""

from __future__ import annotations

import json

from daemon.api import openapi
from daemon.api.schemas import SilenceBody, Who
from daemon.engine.alerts import AlertmanagerWebhook


def test_request_bodies_are_the_handlers_models() -> None:
    schemas = openapi.document()["components"]["schemas"]
    for model in (Who, SilenceBody):
        assert schemas[model.__name__] == model.model_json_schema(ref_template=openapi.REF)
    webhook = AlertmanagerWebhook.model_json_schema(ref_template=openapi.REF)
    nested = webhook.pop("$defs")
    assert schemas["AlertmanagerWebhook"] == webhook
    assert schemas["WebhookAlert"]["required"] == nested["WebhookAlert"]["required"]


def test_every_post_documents_413_and_every_route_the_answers_before_routing() -> None:
    """The guard refuses a body over max_body on every POST, whether its handler reads one or
    not; a malformed request (400) or one too slow to arrive (408) is refused on any route."""
    for path, operations in openapi.document()["paths"].items():
        for method, operation in operations.items():
            codes = set(operation["responses"])
            assert {"400", "408", "429"} <= codes, (method, path)
            assert ("413" in codes) == (method == "post"), (method, path)


def test_the_document_is_strict_json() -> None:
    def refuse(name: str) -> None:
        raise AssertionError(f"{name} in the document")

    json.loads(openapi._serialized(), parse_constant=refuse)
