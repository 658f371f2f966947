"""Validators for request bodies (and, in the tests, the stand-in's answers),
from the official spec files."""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import jsonschema
import yaml

SPEC = Path(__file__).parent / "spec"


@functools.cache
def _load(name: str) -> dict:
    return yaml.safe_load((SPEC / name).read_text())


def _validator(doc: dict, schema: dict) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator({**schema, "components": doc["components"]})


@functools.cache
def transcript_params() -> jsonschema.Draft202012Validator:
    """TranscriptParams, its allOf branches merged into one object schema.

    Each branch says additionalProperties: false, which a strict validator
    reads as "nothing allowed"; speech_models is optional since June 2026.
    """
    doc = _load("openapi.yml")
    schemas = doc["components"]["schemas"]
    optional = schemas["TranscriptOptionalParams"]
    first = schemas["TranscriptParams"]["allOf"][0]
    merged = {
        "type": "object",
        "additionalProperties": False,
        "properties": {**first["properties"], **optional["properties"]},
        "required": ["audio_url"],
    }
    return _validator(doc, merged)


@functools.cache
def gateway_request() -> jsonschema.Draft202012Validator:
    doc = _load("llm-gateway.yml")
    return _validator(doc, {"$ref": "#/components/schemas/LLMGatewayRequest"})


# --- answers ------------------------------------------------------------------
# The stand-in's own answers, checked against the same files by its tests.


def _response_oneof_as_anyof(doc: dict) -> dict:
    """The spec with Transcript.speech_understanding.response's oneOf read as anyOf.

    Its three branches (TranslationResponse, SpeakerIdentificationResponse,
    CustomFormattingResponse) require nothing and allow any property, so
    every object matches all three and a strict validator rejects every
    real answer under oneOf ("valid under each of"). anyOf keeps the check
    that the value is one of the documented shapes.
    """
    components = copy.deepcopy(doc["components"])
    su = components["schemas"]["Transcript"]["properties"]["speech_understanding"]
    response = su["properties"]["response"]
    response["anyOf"] = response.pop("oneOf")
    return {**doc, "components": components}


@functools.cache
def transcript() -> jsonschema.Draft202012Validator:
    doc = _response_oneof_as_anyof(_load("openapi.yml"))
    return _validator(doc, {"$ref": "#/components/schemas/Transcript"})


@functools.cache
def openapi_schema(name: str) -> jsonschema.Draft202012Validator:
    """Any schema of openapi.yml by name: UploadedFile, SentencesResponse, ..."""
    doc = _load("openapi.yml")
    return _validator(doc, {"$ref": f"#/components/schemas/{name}"})


@functools.cache
def gateway_schema(name: str) -> jsonschema.Draft202012Validator:
    """Any schema of llm-gateway.yml by name: Response, ErrorResponse, ..."""
    doc = _load("llm-gateway.yml")
    return _validator(doc, {"$ref": f"#/components/schemas/{name}"})


def problem(validator: jsonschema.Draft202012Validator, body: object) -> str | None:
    """The first validation error as a readable sentence, or None."""
    error = jsonschema.exceptions.best_match(validator.iter_errors(body))
    if error is None:
        return None
    where = ".".join(str(p) for p in error.absolute_path) or "body"
    return f"{where}: {error.message}"[:300]
