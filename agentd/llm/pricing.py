"""Cost of a call from a small price table (USD per million tokens, input/output).

Models not in the table (local GGUF models, unknown names) cost nothing. The
price goes by the model's name, not the server's address, so that a local
proxy in front of OpenAI (LiteLLM and the like) is still priced. Longest
matching name prefix wins.
"""

from __future__ import annotations

# (input, output) USD per 1M tokens, public list prices.
PRICES: dict[str, tuple[float, float]] = {
    "gpt-5": (1.25, 10.0),
    "gpt-5-mini": (0.25, 2.0),
    "gpt-5-nano": (0.05, 0.40),
    "gpt-4.1": (2.0, 8.0),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4o": (2.50, 10.0),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4-turbo": (10.0, 30.0),
    "gpt-4": (30.0, 60.0),
    "gpt-3.5-turbo": (0.50, 1.50),
    "o1": (15.0, 60.0),
    "o1-mini": (1.10, 4.40),
    "o3": (2.0, 8.0),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
}


def price(model: str) -> tuple[float, float]:
    name = model.lower().split("/")[-1]
    best = ""
    for prefix in PRICES:
        if name.startswith(prefix) and len(prefix) > len(best):
            best = prefix
    return PRICES[best] if best else (0.0, 0.0)


def cost_usd(model: str, prompt_tokens: int, completion_tokens: int) -> float:
    p_in, p_out = price(model)
    return (prompt_tokens * p_in + completion_tokens * p_out) / 1_000_000
