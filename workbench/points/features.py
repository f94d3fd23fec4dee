"""Hidden states of the frozen evaluated model over reference texts: the classifier's inputs (torch).

Each text is the prompt followed by the solution, tokenized apart (the prompt as the task protocol feeds it, the
solution as the model would generate it after the prompt), run through the model once; the hidden states of the
solution's tokens at one index of the model's ``hidden_states`` output (0: embeddings, n_layers: the last layer,
after its final norm, as the decoding loop hands ``Step.hidden``) are kept. Texts are batched right-padded: the
causal mask keeps each text's real tokens as they would be alone.
"""

from __future__ import annotations

import torch


def n_hidden_states(model) -> int:
    """How many entries ``hidden_states`` has: the embeddings and one per layer."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return int(config.num_hidden_layers) + 1


def resolve_layer(model, layer: int) -> int:
    """``layer`` as a non-negative index into ``hidden_states`` (−1: the last layer). ValueError when out of range."""
    n = n_hidden_states(model)
    if not -n <= layer < n:
        raise ValueError(f"layer {layer} is out of range for a model with {n - 1} layers (0 … {n - 1}, or −1 for the last)")
    return layer % n


def encode(tokenizer, prompt: str, answer: str) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids), no special tokens (as the task protocol tokenizes)."""
    return (tokenizer(prompt, add_special_tokens=False)["input_ids"],
            tokenizer(answer, add_special_tokens=False)["input_ids"])


@torch.inference_mode()
def answer_hidden(model, pairs: list[tuple[list[int], list[int]]], layer: int) -> list[torch.Tensor]:
    """For each (prompt ids, answer ids): the answer tokens' hidden states (answer tokens, hidden) at ``layer``,
    float32 on the CPU."""
    device = next(model.parameters()).device
    rows = [p + a for p, a in pairs]
    width = max(map(len, rows))
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    out = model(input_ids=ids.to(device), attention_mask=mask.to(device), output_hidden_states=True, use_cache=False,
                logits_to_keep=1)
    states = out.hidden_states[layer]
    return [states[i, len(p) : len(p) + len(a)].float().cpu().contiguous() for i, (p, a) in enumerate(pairs)]
