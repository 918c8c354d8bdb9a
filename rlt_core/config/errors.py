"""The one error type of the config layer: every problem found at load time, together."""

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ConfigIssue:
    """One problem: the dotted key path (`teacher_rl.batch_size`) and what to do about it."""

    path: str
    message: str

    def under(self, prefix: str) -> "ConfigIssue":
        """Return the same issue with its path placed under the section `prefix`."""
        if not prefix:
            return self
        if not self.path:
            return ConfigIssue(prefix, self.message)
        separator = "" if self.path.startswith("[") else "."
        return ConfigIssue(f"{prefix}{separator}{self.path}", self.message)

    @property
    def key(self) -> str:
        """The top key of the path: `tasks` for `tasks[1]`, `reward` for `reward.lambda`."""
        return re.split(r"[.\[]", self.path, maxsplit=1)[0]

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


def without_keys(issues: Iterable[ConfigIssue], keys: set[str]) -> list[ConfigIssue]:
    """Drop the issues about `keys`: those keys already failed and were reported."""
    return [issue for issue in issues if issue.key not in keys]


class ConfigError(ValueError):
    """Invalid configuration; `issues` lists every problem (key path, bad value, fix)."""

    def __init__(self, issues: Sequence[ConfigIssue], source: str = "") -> None:
        self.issues = tuple(issues)
        self.source = source
        super().__init__(self._render())

    def _render(self) -> str:
        where = f" ({self.source})" if self.source else ""
        if len(self.issues) == 1:
            return f"invalid config{where}: {self.issues[0]}"
        lines = [f"{len(self.issues)} problems in config{where}:"]
        lines += [f"  - {issue}" for issue in self.issues]
        return "\n".join(lines)

    def under(self, prefix: str) -> "ConfigError":
        """Return the same error with every path placed under the section `prefix`."""
        return ConfigError([issue.under(prefix) for issue in self.issues], self.source)
