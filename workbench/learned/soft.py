"""What training and evaluation share (torch): soft vectors from a context's token ids, the model's forward
over ``[soft vectors, tokens]``, and LoRA adapters put on and taken off the evaluated model (``peft``)."""

from __future__ import annotations

from contextlib import contextmanager

import torch


def soft_vectors(model, compressor, context_ids: torch.Tensor) -> torch.Tensor:
    """(B, k, d) soft vectors of ``context_ids`` (B, C) in the model's dtype. The compressor runs in float32 on the
    input embeddings (under autocast where the caller opened one)."""
    embeds = model.get_input_embeddings()(context_ids)
    return compressor(embeds.float()).to(embeds.dtype)


def forward_rows(model, soft: torch.Tensor, token_ids: torch.Tensor, hidden: bool = False):
    """The model over ``[soft (B, k, d), token_ids (B, n)]`` from position 0: its output (logits for every position,
    and the last hidden states when ``hidden``)."""
    embeds = torch.cat([soft, model.get_input_embeddings()(token_ids).to(soft.dtype)], dim=1)
    return model(inputs_embeds=embeds, output_hidden_states=hidden, use_cache=False)


def add_lora(model, spec):
    """The model wrapped by peft with fresh LoRA adapters (``spec``: config.LoraSpec); its base weights stay frozen."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                        target_modules=list(spec.target_modules), bias="none")
    return get_peft_model(model, config)


def lora_state(peft_model) -> dict:
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(peft_model)


@contextmanager
def lora_applied(model, spec: dict | None, tensors: dict | None):
    """The backend's model with a trained run's adapters for the duration (yields the model to call), then the
    adapters removed again (peft ``unload``): the shared backend is unchanged for the next method."""
    if not tensors:
        yield model
        return
    from peft import set_peft_model_state_dict

    from workbench.learned.config import LoraSpec

    wrapped = add_lora(model, LoraSpec(r=spec["r"], alpha=spec["alpha"], dropout=spec["dropout"],
                                       target_modules=tuple(spec["target_modules"])))
    set_peft_model_state_dict(wrapped, tensors)
    wrapped.eval()
    try:
        yield wrapped
    finally:
        wrapped.unload()
