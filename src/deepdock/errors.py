"""One exception hierarchy for the whole platform.

Every error a user can see derives from ``DeepdockError`` and carries the HTTP status it maps to, so the
server turns it into a response in exactly one place (``server.app``) and the client turns the response
back into the same class (``client.py``).
"""

from __future__ import annotations

from typing import Any


class DeepdockError(Exception):
    status_code = 500
    code = "internal"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        return body


class SpecError(DeepdockError):
    """A user spec (environment, job, cluster, trace) is invalid."""

    status_code = 422
    code = "invalid_spec"


class NotFoundError(DeepdockError):
    status_code = 404
    code = "not_found"


class ConflictError(DeepdockError):
    status_code = 409
    code = "conflict"


class UnschedulableError(DeepdockError):
    """A request that no registered node could ever satisfy."""

    status_code = 422
    code = "unschedulable"


class AuthenticationError(DeepdockError):
    status_code = 401
    code = "unauthenticated"


class PermissionDeniedError(DeepdockError):
    status_code = 403
    code = "forbidden"


class PayloadTooLargeError(DeepdockError):
    status_code = 413
    code = "payload_too_large"


class EngineError(DeepdockError):
    """A container engine failed or could not be reached."""

    status_code = 502
    code = "engine_error"


class EngineUnreachableError(EngineError):
    status_code = 503
    code = "engine_unreachable"


class NodeEngineUnreachableError(EngineUnreachableError):
    """Registering a node whose engine does not answer: the caller's engine URL (or TLS files) is the
    problem, so 422 - while a registered engine going down stays ``EngineUnreachableError``, 503. Same
    wire code, so the client rebuilds it as ``EngineUnreachableError``."""

    status_code = 422


class DatabaseUnavailableError(DeepdockError):
    """The control plane's database did not answer (down, restarting, unreachable): retry later."""

    status_code = 503
    code = "database_unavailable"


class UnsupportedError(EngineError):
    """A node's backend lacks an ability the request needs (compute.abilities.ability)."""

    status_code = 422
    code = "unsupported"


class ImageMissingError(EngineError):
    status_code = 404
    code = "image_missing"


class ArtifactStoreError(DeepdockError):
    """The artifact store failed or did not answer: the storage behind the server is the problem, not the request."""

    status_code = 502
    code = "artifact_store"


class BuildError(DeepdockError):
    """An image build step failed; ``step`` names it and ``output`` holds its log tail."""

    status_code = 500
    code = "build_failed"

    def __init__(self, message: str, *, step: str | None = None, output: str = "") -> None:
        super().__init__(message, details={"step": step, "output": output[-4000:]})
        self.step = step
        self.output = output


class LockError(BuildError):
    """Resolving or downloading the requirements failed."""

    code = "lock_failed"


ERRORS_BY_CODE: dict[str, type[DeepdockError]] = {
    cls.code: cls
    for cls in (
        DeepdockError,
        SpecError,
        NotFoundError,
        ConflictError,
        UnschedulableError,
        AuthenticationError,
        PermissionDeniedError,
        PayloadTooLargeError,
        EngineError,
        EngineUnreachableError,
        ArtifactStoreError,
        DatabaseUnavailableError,
        UnsupportedError,
        ImageMissingError,
        BuildError,
        LockError,
    )
}


def error_from_wire(code: str, message: str, details: Any = None) -> DeepdockError:
    """Rebuild the server's error on the client side from its ``to_dict`` form."""
    cls = ERRORS_BY_CODE.get(code, DeepdockError)
    error = cls.__new__(cls)
    DeepdockError.__init__(error, message, details=details)
    if isinstance(error, BuildError):
        error.step = (details or {}).get("step")
        error.output = (details or {}).get("output", "")
    return error


class GatewayError(DeepdockError):
    """The services gateway (HAProxy) could not start, take a configuration or answer its runtime API."""

    status_code = 503
    code = "gateway_unavailable"
