"""Import manifest-folder packages (plugins, middleware) by file location under names private to
one manager instance."""

from __future__ import annotations

import functools
import importlib.util
import inspect
import sys
import uuid
from pathlib import Path
from types import CodeType, ModuleType
from typing import Any


def namespace_token(kind: str) -> str:
    """A module-name prefix unique to one manager, so two apps never share plugin modules."""
    safe_kind = "".join(ch if ch.isalnum() else "_" for ch in kind)
    return f"_pixsim7_{safe_kind}_{uuid.uuid4().hex[:12]}"


def load_package(folder: Path, module_name: str) -> ModuleType:
    """Execute `folder/__init__.py` as package `module_name`; relative imports inside it work."""
    init = folder / "__init__.py"
    if not init.is_file():
        raise ImportError(f"{init} is missing; a plugin folder needs an __init__.py")
    spec = importlib.util.spec_from_file_location(
        module_name, init, submodule_search_locations=[str(folder)]
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot create an import spec for {init}")
    stat = init.stat()
    code = _compiled(str(init), stat.st_mtime_ns, stat.st_size)
    module = importlib.util.module_from_spec(spec)
    # Registered before execution: relative imports and dataclasses look the module up by name.
    sys.modules[module_name] = module
    try:
        exec(code, module.__dict__)
    except BaseException:
        unload_package(module_name)
        raise
    return module


@functools.lru_cache(maxsize=512)
def _compiled(path: str, mtime_ns: int, size: int) -> CodeType:
    # Code objects are immutable, so apps can share them; each app still runs the code into a
    # module of its own. An edited file has another mtime or size, so it is compiled afresh.
    return compile(Path(path).read_bytes(), path, "exec", dont_inherit=True)


def unload_package(module_name: str) -> None:
    """Drop a loaded plugin package and its submodules from `sys.modules`."""
    submodules = module_name + "."
    _unload([n for n in sys.modules if n == module_name or n.startswith(submodules)])


def unload_namespace(token: str) -> None:
    """Drop every module loaded under a `namespace_token`, in one pass over `sys.modules`."""
    _unload([n for n in sys.modules if n.startswith(token)])


def _unload(names: list[str]) -> None:
    for name in names:
        del sys.modules[name]


async def call_hook(hook: Any, *args: Any) -> Any:
    """Call a plugin hook that may be a plain function or a coroutine function."""
    result = hook(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


def describe_error(exc: BaseException) -> str:
    """The `ExceptionClass: message` form stored on failed plugins."""
    return f"{type(exc).__name__}: {exc}"
