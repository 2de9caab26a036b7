"""One model endpoint of an `LLM` ("smart" or "fast"), and one raw reply from it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import openai

from ..settings import ModelSettings
from .profiles import ModelProfile, ProfileCache
from .tokens import TokenCounter


@dataclass
class Raw:
    content: str
    tool_calls: list[dict[str, str]]  # {"id", "name", "arguments" (JSON text)}
    finish_reason: str


@dataclass
class Endpoint:
    role: str  # "smart" | "fast"
    settings: ModelSettings
    client: openai.AsyncOpenAI
    counter: TokenCounter
    model: str
    profiles: ProfileCache
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def url(self) -> str:
        return self.settings.url

    @property
    def profile(self) -> ModelProfile:
        """What the model can do: seed, learnt facts and configuration (read at each call,
        so that what another task learnt, or a changed setting, applies at once)."""
        return self.profiles.resolve(self.settings, self.model)

    def learn(self, **facts: Any) -> None:
        self.profiles.learn(self.url, self.model, **facts)

    def effective_tool_mode(self) -> str:
        return self.profile.tool_mode(self.settings.tool_mode)
