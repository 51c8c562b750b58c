"""The one error hierarchy of Citygate.

Every error a user or an integrator can cause is a ``GatewayError``; the API's error
middleware maps each class to an HTTP status, so handlers raise and never build error
responses by hand.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error Citygate raises on purpose."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(GatewayError):
    """A configuration file is wrong. The message names the file, the key and the reason."""

    def __init__(self, file: str, key: str, reason: str) -> None:
        self.file = file
        self.key = key
        self.reason = reason
        where = f"{file}: {key}" if key else file
        super().__init__(f"{where}: {reason}")


class ConfigErrors(GatewayError):
    """Several configuration mistakes, reported together so an operator fixes them in one go."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        super().__init__("\n".join(e.message for e in errors))


class PluginError(GatewayError):
    """A plugin is broken: it failed to load, or registered something invalid."""


class BadRequest(GatewayError):
    status = 400


class Unauthorized(GatewayError):
    status = 401


class StaleCredentials(Unauthorized):
    """Right credentials on an expired Digest nonce: challenge again with ``stale=true``."""


class Forbidden(GatewayError):
    status = 403


class NotFound(GatewayError):
    status = 404


class Conflict(GatewayError):
    status = 409


class Gone(GatewayError):
    """It existed and was deliberately removed (an export package past its keeping time)."""

    status = 410


class Locked(GatewayError):
    """The account is locked after too many failed logins; the message says until when."""

    status = 423


class TooManyRequests(GatewayError):
    status = 429


class Tampered(GatewayError):
    """Stored data failed an integrity check (e.g. a package path read from the database
    points outside its directory): refused, logged and audited, never acted on."""

    status = 500


class Unavailable(GatewayError):
    """The gateway cannot serve this now (limits reached, camera offline)."""

    status = 503


class CameraUnavailable(Unavailable):
    """The camera has no picture to give right now."""


class StorageFull(Unavailable):
    """The recording storage has no space left (a full disk, a quota): nothing was stored,
    and no partial object or file is left behind."""


class StorageFailed(Unavailable):
    """The storage refuses for a reason that retrying will not fix (a bucket that does not
    exist, wrong credentials, access denied): an operator must act. ``key`` names the
    configuration key to look at (e.g. ``storage.options.bucket``)."""

    def __init__(self, message: str, key: str = "") -> None:
        super().__init__(message)
        self.key = key


class StreamClosed(GatewayError):
    """Raised to a hub reader when its hub has been closed for good."""


class LeaseLost(GatewayError):
    """This node no longer holds the lease a write was made under (another node took the
    camera or the job over): the write is refused, so two nodes never both write."""

    status = 409


class Moved(GatewayError):
    """What was asked for is served elsewhere (another node of the cluster runs the camera):
    the client is redirected to ``location``."""

    status = 302

    def __init__(self, message: str, location: str) -> None:
        super().__init__(message)
        self.location = location
