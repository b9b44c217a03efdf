"""The resources startup steps hand each other, by name, with their types: the table of what a
started app holds (`pixsim7.backend.main.state`), read here by the runner.

A step's parameter named like a resource must carry its type; what a step provides is checked
against it at run time. Each resource a step provides is published on `app.state` under the
same name. `app` is the app being started; the other given ones are what building it set.
"""

from __future__ import annotations

from pixsim7.backend.main.state import RESOURCES, Resource

__all__ = ["RESOURCES", "Resource"]
