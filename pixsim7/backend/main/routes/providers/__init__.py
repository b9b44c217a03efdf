"""GET /api/v1/providers: the generation providers registered on the app."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel


class ProviderOut(BaseModel):
    """One provider as the API shows it."""

    id: str
    name: str
    operations: list[str]


def provider_registry(request: Request) -> Any:
    """The app's provider registry; 503 when the app has none."""
    providers = getattr(request.app.state, "providers", None)
    if providers is None:
        raise HTTPException(status_code=503, detail="the provider registry is not available")
    return providers


def describe(provider: Any) -> ProviderOut:
    """A provider descriptor as a response model."""
    operations = provider.operations
    # Sets have no order of their own; sort them so responses are stable.
    if isinstance(operations, set | frozenset):
        operations = sorted(operations)
    return ProviderOut(id=provider.id, name=provider.name, operations=list(operations))


router = APIRouter(tags=["providers"])


@router.get("", response_model=list[ProviderOut])
async def list_providers(request: Request) -> list[ProviderOut]:
    """Every registered provider with the operations it supports."""
    return [describe(provider) for provider in provider_registry(request).list()]
