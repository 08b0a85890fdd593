"""Public, read-only: the behaviour catalogue partners report against and residents can look up."""

from __future__ import annotations

from typing import Literal

import msgspec
from litestar import Controller, get
from litestar.datastructures import CacheControlHeader
from litestar.params import FromPath, FromQuery

from api.problems import problem_responses
from wallet.errors import DomainError
from wallet.methodology.catalogue import CATEGORIES, Behaviour, behaviours

__all__ = ["MethodologyController"]

Category = Literal["clothing", "food", "housing", "transport", "consumption", "office", "digital_finance"]


class BehaviourList(msgspec.Struct, kw_only=True):
    categories: list[str]
    items: list[Behaviour]


class MethodologyController(Controller):
    path = "/v1/methodology"
    tags = ["methodology"]
    opt = {"exclude_from_auth": True}

    @get("/behaviours", operation_id="listBehaviours", summary="The behaviour catalogue",
         cache_control=CacheControlHeader(max_age=300, public=True), responses=problem_responses(400))
    async def list_behaviours(self, category: FromQuery[Category | None] = None) -> BehaviourList:
        """Every behaviour code a partner may be allowed to report, by category (the 7 categories of the
        ACEF guideline), with its unit and names in Chinese and English."""
        items = [b for b in behaviours().values() if category is None or b.category == category]
        return BehaviourList(categories=list(CATEGORIES), items=items)

    @get("/behaviours/{code:str}", operation_id="getBehaviour", summary="One behaviour",
         cache_control=CacheControlHeader(max_age=300, public=True), responses=problem_responses(404))
    async def get_behaviour(self, code: FromPath[str]) -> Behaviour:
        """One behaviour by its code."""
        found = behaviours().get(code)
        if found is None:
            raise DomainError("not_found", "behaviour-not-found", f"No behaviour has the code {code!r}.")
        return found
