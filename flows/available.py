"""Find a stage's library function, or say plainly that the stage has not landed."""

from __future__ import annotations

import importlib
from typing import Any

from ground.errors import NotAvailableError

# stage -> (module, issue that delivers it)
STAGES: dict[str, tuple[str, int]] = {
    "alignment": ("embedding.align", 3),
    "generator": ("embedding.stylegan2", 4),
    "projection": ("embedding.projection", 4),
    "perceptual": ("embedding.perceptual", 4),
    "contracts": ("features.contracts", 5),
    "feature store": ("features.store", 5),
    "training": ("training", 6),
    "registry": ("training.registry", 6),
}


def require(stage: str, *names: str, module: str | None = None) -> Any:
    """The named attributes of the stage's module (one object, or a tuple for several).

    Raises:
        NotAvailableError: the module or one of the names does not exist yet; the message
            names the stage, what is missing and the issue that delivers it.
    """
    default_module, issue = STAGES[stage]
    module = module or default_module
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
            raise NotAvailableError(f"{stage} is not available yet: {module} has not landed "
                                    f"(tracked in issue #{issue})") from None
        raise
    missing = [n for n in names if not hasattr(mod, n)]
    if missing:
        raise NotAvailableError(f"{stage} is not available yet: {module} lacks {', '.join(missing)} "
                                f"(tracked in issue #{issue})")
    objs = tuple(getattr(mod, n) for n in names)
    return objs[0] if len(objs) == 1 else objs
