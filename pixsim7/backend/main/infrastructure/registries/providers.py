"""Video generation providers the backend can route jobs to."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["ProviderDescriptor", "ProviderRegistry", "default_providers"]


@dataclass(frozen=True)
class ProviderDescriptor:
    """A generation provider and the operations it supports."""

    id: str
    name: str
    operations: tuple[str, ...]

    def supports(self, operation: str) -> bool:
        """True if the provider can run `operation` (e.g. "text_to_video")."""
        return operation in self.operations


class ProviderRegistry:
    """Providers known to one app, by id."""

    def __init__(self, providers: Iterable[ProviderDescriptor] = ()) -> None:
        self._providers: dict[str, ProviderDescriptor] = {}
        for provider in providers:
            self.register(provider)

    def __len__(self) -> int:
        return len(self._providers)

    def __contains__(self, provider_id: object) -> bool:
        return provider_id in self._providers

    def register(self, provider: ProviderDescriptor) -> ProviderDescriptor:
        """Add `provider`; ValueError if its id is already registered."""
        if provider.id in self._providers:
            raise ValueError(
                f"provider {provider.id!r} is already registered "
                f"(as {self._providers[provider.id].name!r}); provider ids must be unique"
            )
        self._providers[provider.id] = provider
        return provider

    def get(self, provider_id: str) -> ProviderDescriptor | None:
        """The provider with `provider_id`, or None."""
        return self._providers.get(provider_id)

    def list(self) -> list[ProviderDescriptor]:
        """All providers, sorted by id."""
        return [self._providers[key] for key in sorted(self._providers)]

    def ids(self) -> list[str]:
        """All provider ids, sorted."""
        return sorted(self._providers)

    def summary(self) -> dict[str, dict[str, list[str]]]:
        return {p.id: {"name": p.name, "operations": list(p.operations)} for p in self.list()}

    def supporting(self, operation: str) -> list[ProviderDescriptor]:
        """Providers that can run `operation`, sorted by id."""
        return [p for p in self.list() if p.supports(operation)]


def default_providers() -> list[ProviderDescriptor]:
    """The providers shipped with the backend; descriptors only, nothing is contacted."""
    return [
        ProviderDescriptor(
            id="pixverse",
            name="Pixverse",
            operations=("text_to_video", "image_to_video", "video_extend"),
        ),
        ProviderDescriptor(
            id="runway",
            name="Runway",
            operations=("text_to_video", "image_to_video"),
        ),
        ProviderDescriptor(id="sora", name="Sora", operations=("text_to_video",)),
    ]
