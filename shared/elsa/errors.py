"""The one exception tree of ELSA.

Every error the library raises on purpose is an :class:`ElsaError`. Each carries a stable
machine-readable ``code`` and the HTTP status a service maps it to at its boundary, so services
translate errors once (``{"error": code, "detail": ...}``) and never leak a 500 for bad input.
"""

from __future__ import annotations


class ElsaError(Exception):
    """Base of every deliberate ELSA error."""

    code: str = "elsa_error"
    http_status: int = 500

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def to_dict(self) -> dict[str, str]:
        """The error body services return: ``{"error": code, "detail": ...}``."""
        return {"error": self.code, "detail": self.detail}


class ConfigError(ElsaError):
    """A configuration or parameter value is invalid."""

    code = "invalid_config"
    http_status = 422


class ModelError(ElsaError):
    """A model cannot be loaded, split or adapted as asked."""

    code = "model_error"
    http_status = 422


class UnsupportedArchitectureError(ModelError):
    """The model family has no splitter."""

    code = "unsupported_architecture"


class AdapterMismatchError(ModelError):
    """An adapter state does not fit the model or segment it is loaded into."""

    code = "adapter_mismatch"
    http_status = 409


class DataError(ElsaError):
    """A dataset cannot be read or partitioned."""

    code = "data_error"
    http_status = 422


class WireError(ElsaError):
    """A message or frame on the wire is malformed."""

    code = "bad_message"
    http_status = 400


class DecodeError(WireError):
    """Bytes could not be decoded into the expected message."""

    code = "decode_error"


class PayloadTooLargeError(WireError):
    """A body, frame or tensor exceeds a configured size limit."""

    code = "payload_too_large"
    http_status = 413


class TensorError(WireError):
    """A tensor payload has a wrong dtype or shape, or non-finite values."""

    code = "bad_tensor"
    http_status = 422


class GeometryMismatchError(ElsaError):
    """Two sketches (or adapters) of different geometry were combined."""

    code = "geometry_mismatch"
    http_status = 409


class NotFoundError(ElsaError):
    """A node, run, round or session does not exist."""

    code = "not_found"
    http_status = 404


class ConflictError(ElsaError):
    """The request does not fit the current state (wrong round, replay, ...)."""

    code = "conflict"
    http_status = 409


class AuthError(ElsaError):
    """Missing or invalid credentials."""

    code = "unauthorized"
    http_status = 401


class ForbiddenError(ElsaError):
    """Valid credentials, but not allowed to do this."""

    code = "forbidden"
    http_status = 403


class UnavailableError(ElsaError):
    """A dependency (peer, store) is unavailable; retry later."""

    code = "unavailable"
    http_status = 503


def _all_subclasses(cls: type[ElsaError]) -> list[type[ElsaError]]:
    out: list[type[ElsaError]] = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all_subclasses(sub))
    return out


def error_from_code(code: str, detail: str, http_status: int) -> ElsaError:
    """Rebuild a typed error from a peer's ``{"error": code, "detail": ...}`` answer."""
    candidates: list[type[ElsaError]] = [ElsaError, *_all_subclasses(ElsaError)]
    for cls in candidates:
        if cls.code == code:
            return cls(detail)
    if http_status == 404:
        return NotFoundError(detail)
    if http_status in (401, 403):
        return AuthError(detail)
    if http_status >= 500:
        return UnavailableError(detail)
    return ElsaError(f"{code}: {detail}")
