"""The interface of a signature source: where one format keeps the signatures of an image."""

from __future__ import annotations

from abc import ABC, abstractmethod

from webhook.artifacts import Collected, ImageTarget
from webhook.registry.client import RegistryClient


class SignatureSource(ABC):
    """Where one format keeps the signatures of an image, e.g. a lookaside server or a `.sig` tag."""

    @abstractmethod
    async def collect(self, image: ImageTarget, registry: RegistryClient) -> Collected:
        """Fetch candidate signatures for `image`, applying this source's limits."""
