"""The image tests run against the same real components as tests/e2e: its registry, lookaside, gpg, cosign and
notation keys."""

from tests.e2e.conftest import gpg, lookaside, registries_d, registry
from tests.e2e.test_cosign_e2e import cosign_keys
from tests.e2e.test_notation_e2e import notation_keys

__all__ = ["cosign_keys", "gpg", "lookaside", "notation_keys", "registries_d", "registry"]
