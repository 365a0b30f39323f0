"""The framework's error taxonomy.

Three kinds of failure matter to a DRA driver, because each is handled differently:

* ``ConfigError`` — the user's input (opaque device config, a claim) is wrong.  It becomes that
  claim's error string; retrying will not help until the user changes something.
* ``BackendError`` — the hardware backend failed to prepare or unprepare.  It becomes that claim's
  error string; the kubelet retries.
* ``TransientApiError`` — the Kubernetes API could not be reached or answered 5xx; retried.

``ClaimError`` is the base of every error that is reported for one claim and never fails the RPC.
Backends raise ``ConfigError`` and ``BackendError``; anything else a backend raises is wrapped in a
``BackendError`` by the framework.
"""

from __future__ import annotations


class DraError(Exception):
    """Base class of all framework errors."""


class ClaimError(DraError):
    """An error that belongs to one claim: reported as that claim's error string."""


class ConfigError(ClaimError):
    """Invalid user input: opaque config, claim contents.  ``path`` names the offending field."""

    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


class BackendError(ClaimError):
    """The backend failed to prepare or unprepare devices."""


class DeviceInUseError(ClaimError):
    """A device of the claim is already prepared for another claim."""


class ClaimMismatchError(ClaimError):
    """The claim in the API is not the one the kubelet asked for, or not usable by this driver."""


class TransientApiError(ClaimError):
    """The Kubernetes API failed in a way that a retry may fix (unreachable, 5xx, 429)."""


class StateError(ClaimError):
    """The plugin's own state (checkpoint, CDI spec directory) could not be read or written."""


class SetupError(DraError):
    """The plugin cannot start: bad flags, unknown backend, unusable directories."""
