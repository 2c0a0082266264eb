"""What every `funnel` command shares: messages on stderr, and the settings a command runs
with (the environment wins; where `funnel up` ran here, the local stack fills in the rest)."""

from __future__ import annotations

import os
import signal
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from funnel_ingest.settings import Settings


def err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def one_line(text: object) -> str:
    """`text` with its line breaks and runs of blanks as single spaces (error messages)."""
    return " ".join(str(text).split())


def apply_env(env: dict[str, str]) -> None:
    """Put `env` into the process environment and forget the cached settings."""
    os.environ.update(env)
    from funnel_ingest.settings import get_settings
    get_settings.cache_clear()


def load_settings() -> Settings:
    """The environment's settings; where the local stack runs (`funnel up` in this directory or
    FUNNEL_STATE_DIR), its settings and secrets fill in what the environment does not set."""
    from funnel_ingest.local import stack
    from funnel_ingest.settings import get_settings

    if (stack.state_dir(create=False) / "env").is_file():
        apply_env(stack.stack_env())  # explicit environment variables still win
    return get_settings()


def _interrupted(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def stop_on_sigterm() -> None:
    """SIGTERM (and SIGHUP: a closed terminal) stop the command as Ctrl-C does, so the
    processes it started are stopped on the way out instead of left running."""
    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGHUP, _interrupted)
