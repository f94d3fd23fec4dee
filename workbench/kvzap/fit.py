"""Fitting a KVzap scorer — kvpress's ``KVzapModel``, one linear map or 2-layer MLP per layer from the hidden
state to one score per KV head — to KVzip+ log-scores, and measuring the fit on held-out texts (torch).

Recipe of kvpress's ``kvzap/train.py``: the MLP (hidden 512) with AdamW, lr 5e-3, cosine annealing over 15
epochs, batch 512, gradient norm clipped at 1, MSE loss; the linear scorer by ridge regression (alpha 1, as
scikit-learn's ``Ridge()`` there, with an unpenalised intercept), solved here in closed form with torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from kvpress.presses.kvzap_press import KVzapConfig, KVzapModel


@dataclass(frozen=True)
class FitSettings:
    kind: str = "mlp"  # "mlp" | "linear"
    hidden_dim: int = 512
    epochs: int = 15
    lr: float = 5e-3
    batch_size: int = 512
    ridge_alpha: float = 1.0
    seed: int = 0


def new_scorer(n_layers: int, hidden_size: int, n_kv_heads: int, settings: FitSettings) -> KVzapModel:
    config = KVzapConfig(input_dim=hidden_size, output_dim=n_kv_heads, n_modules=n_layers,
                         hidden_dim=settings.hidden_dim if settings.kind == "mlp" else None)
    return KVzapModel(config)


def fit(x: torch.Tensor, y: torch.Tensor, settings: FitSettings,
        on_epoch: Callable[[int, int, float], None] | None = None, device: str = "cpu") -> KVzapModel:
    """A scorer fitted to hidden states ``x`` (N, layers, hidden) and log-scores ``y`` (N, layers, kv heads), kept
    on the CPU; batches go to ``device`` (the evaluated model's). Returns the scorer on the CPU.

    ``on_epoch(epoch, epochs, mean training loss)`` is called after every epoch (one call for the linear fit)."""
    torch.manual_seed(settings.seed)
    scorer = new_scorer(x.shape[1], x.shape[2], y.shape[2], settings)
    if settings.kind == "linear":
        _ridge(scorer, x, y, settings.ridge_alpha)
        if on_epoch:
            on_epoch(1, 1, float(_mse(scorer, x, y).mean()))
        return scorer
    _train_mlp(scorer.to(device), x, y, settings, on_epoch, device)
    return scorer.cpu().eval()


def _ridge(scorer: KVzapModel, x: torch.Tensor, y: torch.Tensor, alpha: float) -> None:
    """Per layer: W = (Xcᵀ Xc + αI)⁻¹ Xcᵀ Yc on centred data, b = ȳ − x̄ W (the intercept is not penalised)."""
    for layer, module in enumerate(scorer.layers):
        xl, yl = x[:, layer].double(), y[:, layer].double()
        x_mean, y_mean = xl.mean(0), yl.mean(0)
        xc, yc = xl - x_mean, yl - y_mean
        gram = xc.T @ xc + alpha * torch.eye(xl.shape[1], dtype=torch.float64)
        w = torch.linalg.solve(gram, xc.T @ yc)  # (hidden, heads)
        module.weight.data = w.T.float().contiguous()
        module.bias.data = (y_mean - x_mean @ w).float()


def _train_mlp(scorer: KVzapModel, x: torch.Tensor, y: torch.Tensor, settings: FitSettings, on_epoch, device: str) -> None:
    optimizer = torch.optim.AdamW(scorer.parameters(), lr=settings.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings.epochs)
    generator = torch.Generator().manual_seed(settings.seed)
    loss_fn = torch.nn.MSELoss()
    scorer.train()
    for epoch in range(settings.epochs):
        order = torch.randperm(x.shape[0], generator=generator)
        total, batches = 0.0, 0
        for begin in range(0, x.shape[0], settings.batch_size):
            rows = order[begin : begin + settings.batch_size]
            loss = loss_fn(scorer(x[rows].to(device).float()), y[rows].to(device))
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(scorer.parameters(), 1.0)
            optimizer.step()
            total, batches = total + loss.item(), batches + 1
        schedule.step()
        if on_epoch:
            on_epoch(epoch + 1, settings.epochs, total / max(batches, 1))


def predict(scorer: KVzapModel, x: torch.Tensor, rows: int = 4096) -> torch.Tensor:
    """Scores (N, layers, kv heads) for hidden states (N, layers, hidden), in float32."""
    scorer = scorer.eval()
    with torch.inference_mode():
        return torch.cat([scorer(x[i : i + rows].float()) for i in range(0, x.shape[0], rows)]).float()


def _mse(scorer, x, y) -> torch.Tensor:
    return ((predict(scorer, x) - y) ** 2).mean(dim=(0, 2))


def layer_fit(predicted: torch.Tensor, target: torch.Tensor) -> list[dict]:
    """Per layer: R² (1 − SSE/SST over every head's scores) and Pearson r of predicted vs target log-scores."""
    out = []
    for layer in range(target.shape[1]):
        p, t = predicted[:, layer].reshape(-1).double(), target[:, layer].reshape(-1).double()
        sst = float(((t - t.mean()) ** 2).sum())
        r2 = 1.0 - float(((p - t) ** 2).sum()) / sst if sst > 0 else float("nan")
        pc, tc = p - p.mean(), t - t.mean()
        denominator = float(pc.norm() * tc.norm())
        out.append({"layer": layer, "r2": r2, "pearson_r": float(pc @ tc) / denominator if denominator > 0 else float("nan")})
    return out
