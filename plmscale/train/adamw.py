"""AdamW for one process on the CPU: torch's fused AdamW kernel, called without torch.optim.

Why not `torch.optim.AdamW(fused=True)`, which runs this same kernel: building any torch.optim optimizer
imports torch._dynamo (~2 s of CPU per process on the development machine), and its step wraps the kernel
in Python (profiler hooks, grouping by device and dtype, lazy-state checks). The demo trains ~30 runs of a
few minutes of ~8 ms steps each, so both show (docs/benchmarks.md, "Start-up and step overhead").

Same kernel, same arguments in the same order, state created as torch.optim creates it: the same numbers,
bit for bit (tests/test_adamw.py). `state_dict()` has torch.optim's layout, so a checkpoint loads into either.
Several processes (DDP, FSDP) and CUDA keep torch.optim (plmscale.train.loop.make_optimizer).
"""

import torch

HYPERPARAMETERS = {"amsgrad": False, "maximize": False, "foreach": None, "capturable": False,
                   "differentiable": False, "fused": True, "decoupled_weight_decay": True}


def available() -> bool:
    """Whether this torch has the fused kernel (every release since 2.4 does)."""
    return hasattr(torch, "_fused_adamw_")


class FusedAdamW:
    """param_groups: dicts with "params" and "weight_decay" (as plmscale.train.loop.param_groups makes);
    lr, betas and eps are set on every group, and the loop sets each group's "lr" before a step."""

    def __init__(self, param_groups, lr: float, betas: tuple[float, float], eps: float = 1e-8):
        self.param_groups = [{**HYPERPARAMETERS, "weight_decay": float(group.get("weight_decay", 0.0)),
                              "lr": float(lr), "betas": tuple(betas), "eps": float(eps),
                              "params": list(group["params"])} for group in param_groups]
        for param in self._params():
            if param.device.type != "cpu" or param.dtype not in (torch.float32, torch.float64):
                raise ValueError(f"FusedAdamW is the CPU fp32/fp64 path; got a {param.dtype} parameter on "
                                 f"{param.device}: use torch.optim.AdamW")
        self.state: dict[torch.Tensor, dict] = {}

    def _params(self):
        return [param for group in self.param_groups for param in group["params"]]

    def _state_of(self, param) -> dict:
        state = self.state.get(param)
        if state is None:  # created at the first step with a gradient, as torch.optim does
            state = self.state[param] = {
                "step": torch.zeros((), dtype=torch.float32),
                "exp_avg": torch.zeros_like(param, memory_format=torch.preserve_format),
                "exp_avg_sq": torch.zeros_like(param, memory_format=torch.preserve_format)}
        return state

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            params = [param for param in group["params"] if param.grad is not None]
            if not params:
                continue
            states = [self._state_of(param) for param in params]
            steps = [state["step"] for state in states]
            torch._foreach_add_(steps, 1)
            beta1, beta2 = group["betas"]
            torch._fused_adamw_(params, [param.grad for param in params], [state["exp_avg"] for state in states],
                                [state["exp_avg_sq"] for state in states], [], steps, amsgrad=False,
                                lr=group["lr"], beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"],
                                eps=group["eps"], maximize=False, grad_scale=None, found_inf=None)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for param in self._params():
            if param.grad is None:
                continue
            if set_to_none:
                param.grad = None
            else:
                param.grad.zero_()

    # ---- torch.optim's state-dict layout: parameters numbered in group order ----------------------------
    def state_dict(self) -> dict:
        numbers = {param: i for i, param in enumerate(self._params())}
        groups, first = [], 0
        for group in self.param_groups:
            groups.append({**{k: v for k, v in group.items() if k != "params"},
                           "params": list(range(first, first + len(group["params"])))})
            first += len(group["params"])
        return {"state": {numbers[param]: dict(state) for param, state in self.state.items()},
                "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        groups = state_dict["param_groups"]
        if [len(g["params"]) for g in groups] != [len(g["params"]) for g in self.param_groups]:
            raise ValueError("optimizer state has other parameter groups than this model's optimizer")
        by_number = {}
        for saved, group in zip(groups, self.param_groups):
            group.update({k: v for k, v in saved.items() if k != "params"})
            by_number.update(zip(saved["params"], group["params"]))
        self.state = {}
        for number, saved in state_dict["state"].items():
            param = by_number[int(number)]
            self.state[param] = {
                "step": torch.as_tensor(saved["step"], dtype=torch.float32).clone(),
                "exp_avg": saved["exp_avg"].to(dtype=param.dtype).clone(),
                "exp_avg_sq": saved["exp_avg_sq"].to(dtype=param.dtype).clone()}
