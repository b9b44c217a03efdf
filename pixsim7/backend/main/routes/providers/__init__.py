"""GET /api/v1/providers: the generation providers registered on the app."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from pixsim7.backend.main.api.deps import Providers
from pixsim7.backend.main.api.schemas import ProviderOut


def describe(provider: Any) -> ProviderOut:
    """A provider descriptor as a response model."""
    operations = provider.operations
    # Sets have no order of their own; sort them so responses are stable.
    if isinstance(operations, set | frozenset):
        operations = sorted(operations)
    return ProviderOut(id=provider.id, name=provider.name, operations=list(operations))


router = APIRouter(tags=["providers"])


@router.get("", response_model=list[ProviderOut])
async def list_providers(providers: Providers) -> list[ProviderOut]:
    """Every registered provider with the operations it supports."""
    return [describe(provider) for provider in providers.list()]
