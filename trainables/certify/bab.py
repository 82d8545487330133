"""Complete verification by branch and bound over ReLU splits, bounded by beta-CROWN.

The scheme of alpha-beta-CROWN (Wang et al., "Beta-CROWN: Efficient Bound Propagation with
Per-neuron Split Constraints for Complete and Incomplete Neural Network Robustness
Verification", NeurIPS 2021; its complete_verifier), written for this project's bounds:

1. Every sample (box ``B(x, eps)`` clipped to [0, 1], network in float64), cheapest first,
   batched: the clean point; CROWN on every margin ``z_y - z_j`` (all positive ->
   "verified"); a margin-PGD attack; alpha-CROWN (``trainables.bounds.alpha``).
2. Each margin row still below 0 becomes a domain. Rounds of branch and bound, within the
   sample's time limit: the ``batch_domains`` domains with the lowest bounds are split on
   one unstable ReLU each, into z >= 0 and z <= 0. The neuron: filtered smart branching
   (alpha-beta-CROWN's heuristics/kfsb.py): the 3 best by BaBSR score (Bunel et al. 2020,
   as heuristics/babsr.py computes it: the intercept and bias terms of the neuron's
   relaxation weighted by its backward coefficient) and the 3 best by intercept score are
   each tried with one bound pass; the one whose worse child is bounded highest wins.
3. A domain's bound is beta-CROWN: CROWN on the domain's intermediate bounds (alpha-CROWN's
   at the root, refined after each split, see below), split neurons made exact, optimised
   lower slopes (alpha) and Lagrange multipliers beta >= 0 of the split constraints
   ``s z >= 0`` (the term ``-beta s z`` joins the backward pass at each split neuron), by
   Adam (decay 0.98), the best bound and its parameters kept per domain. Deliberately
   different from alpha-beta-CROWN's complete_verifier defaults (50 iterations at lr 0.01
   for alpha and 0.05 for beta, 64 domains per round), for CPUs where each pass's fixed
   cost dominates: 20 iterations at lr 0.1 / 0.5 and 256 domains per round (all options).
   After each split the children's bounds of the later layers are recomputed with their
   own relaxations (one CROWN pass per layer; a split contradicted by them proves the
   domain empty). Domains whose bound is > 0 are done; the others go back to the pool,
   their parents' slopes and betas inherited.
4. Counterexamples: the point that minimises each domain's linear bound, then a few PGD
   steps from it ("PGD on each subproblem"); any point of the box that the float64 network
   misclassifies ends the sample as "falsified".
5. A domain with no unstable, unsplit ReLU left is an LP (the network is affine on it):
   solved exactly by HiGHS when the network's dense form is small (``lp_leaves``), which
   makes the search complete.

Verdicts (``trainables.certify.exact.Verdict``): "verified" (every domain of every row
proven > 0; exact for the float64 network), "falsified" (``x_adv`` in the box, in the
model's dtype, misclassified by the float64 network: ``z_y <= max_j z_j``), "timeout" (the
time limit ran out), "unknown" (the pool outgrew ``max_domains``, or a leaf could not be
decided within the LP's tolerance).
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linprog
from torch import Tensor, nn

from trainables.attacks.classification import linf_box, pgd_attack, true_class_margin
from trainables.bounds import compute_bounds
from trainables.bounds.alpha import alpha_crown, projected_step
from trainables.bounds.linear import ReLURelaxation, backward_lower_bound
from trainables.bounds.ops import Op, ReLUOp, densify, detached, fuse_affine, linearize
from trainables.bounds.spec import margin_spec
from trainables.certify.exact import PROOF_MARGIN, Verdict, VerificationProblem, check_problem
from trainables.certify.milp import DenseReLUNetwork
from trainables.models.modes import eval_mode

ITERATIONS = 20
LR_ALPHA = 0.1
LR_BETA = 0.5
LR_DECAY = 0.98
BATCH_DOMAINS = 256
MAX_DOMAINS = 20_000
#: A dense network with more weights than this gets no exact LP at the leaves.
LP_MAX_WEIGHTS = 2_000_000
#: Coefficient entries per chunk when refining a domain's intermediate bounds.
REFINE_ELEMENTS = 2**24
#: BaBSR scores below this carry no information (alpha-beta-CROWN's max_info_threshold).
SCORE_THRESHOLD = 1e-3


def verify_bab(
    model: nn.Sequential,
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    time_limit: float = 60.0,
    batch_domains: int = BATCH_DOMAINS,
    iterations: int = ITERATIONS,
    lr_alpha: float = LR_ALPHA,
    lr_beta: float = LR_BETA,
    root_iterations: int = 20,
    pgd_steps: int = 50,
    pgd_restarts: int = 4,
    domain_pgd_steps: int = 5,
    max_domains: int = MAX_DOMAINS,
    lp_leaves: bool = True,
    seed: int = 0,
) -> list[Verdict]:
    """Complete L-inf robustness verification of each sample (see the module docstring).

    Args:
        model: an ``nn.Sequential`` of the layers ``trainables.bounds`` supports, evaluated
            in eval mode (a float64 CPU copy is verified).
        x, y: inputs ``[batch, *input_shape]`` in [0, 1] and integer labels ``[batch]``.
        eps: L-inf radius (>= 0); the box is clipped to [0, 1].
        time_limit: seconds of branch and bound per sample (> 0), after the batched start.
        batch_domains: domains split per round (each gives two children).
        iterations, lr_alpha, lr_beta: the beta-CROWN optimisation of each batch of domains.
        root_iterations: alpha-CROWN iterations of the first bound.
        pgd_steps, pgd_restarts, seed: the margin-PGD attack before branching.
        domain_pgd_steps: PGD steps from each new domain's bound minimiser.
        max_domains: the pool's cap; beyond it the sample is "unknown".
        lp_leaves: solve fully split domains exactly (HiGHS LP; small networks only).
    """
    eps, time_limit = _check(x, y, eps, time_limit, batch_domains, iterations, max_domains)
    if x.shape[0] == 0:
        return []
    with eval_mode(model):
        model64 = copy.deepcopy(model).double().cpu().eval()
        for parameter in model64.parameters():
            parameter.requires_grad_(False)
        lower, upper = linf_box(x.detach(), eps)
        low64, up64 = lower.double().cpu(), upper.double().cpu()
        raw_ops, output = linearize(model64, low64[:1])
        classes = output.shape[-1]
        if y.min() < 0 or y.max() >= classes:
            raise ValueError(f"labels must lie in [0, {classes - 1}], got {y.tolist()}")
        problem = VerificationProblem(
            model, model64, x, y.cpu(), eps, lower, upper, low64, up64, classes
        )
        verdicts, pending, roots = _start(
            problem, raw_ops, root_iterations, pgd_steps, pgd_restarts, seed
        )
        if not pending:
            return verdicts
        ops = densify(fuse_affine(detached(raw_ops)))
        search = _Search(
            problem, ops, batch_domains, iterations, lr_alpha, lr_beta, domain_pgd_steps,
            max_domains, _leaf_solver(model64, ops, low64, lp_leaves), seed,
        )  # fmt: skip
        for i, spent in pending.items():
            lb, relu_bounds = roots[i]
            verdicts[i] = search.run(i, lb, relu_bounds, time_limit, spent)
    return verdicts


def _start(
    problem: VerificationProblem,
    ops: list[Op],
    root_iterations: int,
    pgd_steps: int,
    pgd_restarts: int,
    seed: int,
) -> tuple[list[Verdict | None], dict[int, float], dict[int, tuple[Tensor, list]]]:
    """The cheap verdicts first, batched: clean check, CROWN, PGD, then alpha-CROWN.

    Returns the verdicts so far, the undecided samples with the seconds spent on each, and
    their root bounds: alpha-CROWN's lower bound per class (+inf at the label) and ReLU
    pre-activation bounds (``[1, *shape]`` each).
    """
    batch = len(problem.y)
    verdicts: list[Verdict | None] = [None] * batch
    spent = dict.fromkeys(range(batch), 0.0)

    def stage(samples: list[int], run) -> None:
        started = time.perf_counter()
        outcomes = run(samples)
        share = (time.perf_counter() - started) / max(1, len(samples))
        for i, outcome in zip(samples, outcomes, strict=True):
            spent[i] += share
            if outcome is not None:
                status, by, x_adv = outcome
                verdicts[i] = Verdict(status, spent.pop(i), by, x_adv)

    def clean(samples):
        found = [problem.counterexample(i, problem.x[i : i + 1]) for i in samples]
        return [None if x is None else ("falsified", "clean", x) for x in found]

    @torch.no_grad()
    def crown(samples):
        lb, _ = compute_bounds(problem.model64, problem.low64[samples], problem.up64[samples],
                               "crown", margin_spec(problem.y[samples], problem.classes,
                                                    dtype=torch.float64))  # fmt: skip
        return [("verified", "crown", None) if bool((row > 0).all()) else None for row in lb]

    def attack(samples):
        if pgd_steps == 0:
            return [None] * len(samples)
        attacked = pgd_attack(
            problem.model,
            problem.x[samples],
            problem.y[samples].to(problem.x.device),
            problem.eps,
            steps=pgd_steps,
            restarts=pgd_restarts,
            loss="margin",
            generator=torch.Generator().manual_seed(seed),
        )
        found = [problem.counterexample(i, attacked[k : k + 1]) for k, i in enumerate(samples)]
        return [None if x is None else ("falsified", "attack", x) for x in found]

    roots: dict[int, tuple[Tensor, list]] = {}

    def alpha(samples):
        C = margin_spec(problem.y[samples], problem.classes, dtype=torch.float64)
        result = alpha_crown(
            ops, problem.low64[samples], problem.up64[samples], C, iterations=root_iterations
        )
        lb = result.bounds[0]
        others = torch.arange(problem.classes).expand(len(samples), -1) != problem.y[samples, None]
        row_lb = torch.full((len(samples), problem.classes), math.inf, dtype=torch.float64)
        row_lb[others] = lb.flatten()
        for k, i in enumerate(samples):
            roots[i] = (
                row_lb[k],
                [(low[k : k + 1], high[k : k + 1]) for low, high in result.relu_bounds],
            )
        return [("verified", "alpha-crown", None) if bool((row > 0).all()) else None for row in lb]

    for run in (clean, crown, attack, alpha):
        samples = list(spent)
        if samples:
            stage(samples, run)
    return verdicts, spent, {i: roots[i] for i in spent}


@dataclass
class _Domains:
    """A batch of subproblems of one sample: a margin row and a set of ReLU splits each."""

    c: Tensor  # [D, classes]: the row's spec, e_y - e_j
    lb: Tensor  # [D]: a proven lower bound of the row over the domain
    splits: list[Tensor]  # per ReLU layer [D, *shape], int8: +1 z >= 0, -1 z <= 0, 0 free
    alpha: list[Tensor]  # per ReLU layer [D, 1, *shape]: lower slopes
    beta: list[Tensor]  # per ReLU layer [D, 1, *shape]: split multipliers (>= 0)
    coefficients: list[Tensor]  # per ReLU layer [D, 1, *shape]: last backward coefficients
    low: list[Tensor]  # per ReLU layer [D, *shape]: pre-activation bounds on the domain
    high: list[Tensor]

    def __len__(self) -> int:
        return self.lb.numel()

    def _lists(self) -> tuple[list[Tensor], ...]:
        return self.splits, self.alpha, self.beta, self.coefficients, self.low, self.high

    def take(self, index: Tensor) -> _Domains:
        lists = [[t[index] for t in group] for group in self._lists()]
        return _Domains(self.c[index], self.lb[index], *lists)

    @staticmethod
    def cat(parts: list[_Domains]) -> _Domains:
        parts = [p for p in parts if len(p)] or parts[:1]
        lists = [
            [torch.cat(t) for t in zip(*[p._lists()[g] for p in parts], strict=True)]
            for g in range(6)
        ]
        return _Domains(torch.cat([p.c for p in parts]), torch.cat([p.lb for p in parts]), *lists)


#: Filtered smart branching (alpha-beta-CROWN's kfsb): this many best BaBSR candidates, and
#: as many best intercept candidates, are each tried with one bound pass per domain.
FSB_CANDIDATES = 3


class _Search:
    """Branch and bound for one sample at a time (see the module docstring)."""

    def __init__(
        self,
        problem: VerificationProblem,
        ops: list[Op],
        batch_domains: int,
        iterations: int,
        lr_alpha: float,
        lr_beta: float,
        domain_pgd_steps: int,
        max_domains: int,
        leaf_solver: _LeafSolver | None,
        seed: int,
    ) -> None:
        self.problem, self.ops = problem, ops
        self.batch_domains, self.iterations = batch_domains, iterations
        self.lr_alpha, self.lr_beta = lr_alpha, lr_beta
        self.domain_pgd_steps, self.max_domains = domain_pgd_steps, max_domains
        self.leaf_solver, self.seed = leaf_solver, seed
        self.constants = _pre_activation_constants(ops, problem.low64[:1])

    def run(
        self,
        index: int,
        row_lb: Tensor,
        relu_bounds: list[tuple[Tensor, Tensor]],
        time_limit: float,
        spent: float,
    ) -> Verdict:
        started = time.perf_counter()
        deadline = started + time_limit
        self.index, self.relu_bounds = index, relu_bounds
        self.lower, self.upper = self.problem.low64[index], self.problem.up64[index]

        def verdict(status: str, x_adv: Tensor | None = None) -> Verdict:
            return Verdict(status, spent + time.perf_counter() - started, "bab", x_adv)

        pool, _ = self._bound(self._roots(row_lb), self.iterations)
        pool = pool.take((pool.lb <= 0).nonzero().flatten())
        undecided_leaf = False
        while len(pool):
            if time.perf_counter() >= deadline:
                return verdict("timeout")
            if len(pool) > self.max_domains:
                return verdict("unknown")
            order = torch.argsort(pool.lb)
            picked = pool.take(order[: self.batch_domains])
            rest = pool.take(order[self.batch_domains :])
            decisions = self._branch(picked)
            for d in [d for d, decision in enumerate(decisions) if decision is None]:
                outcome, x_adv = self._solve_leaf(picked, d)
                if outcome == "falsified":
                    return verdict("falsified", x_adv)
                undecided_leaf |= outcome == "unknown"
            branching = [d for d, decision in enumerate(decisions) if decision is not None]
            if not branching:
                pool = rest
                continue
            children = self._split(
                picked.take(torch.tensor(branching)), [decisions[d] for d in branching]
            )
            children = children.take((children.lb <= 0).nonzero().flatten())  # drop empty ones
            if not len(children):
                pool = rest
                continue
            children, minimisers = self._bound(children, self.iterations)
            x_adv = self._attack(minimisers)
            if x_adv is not None:
                return verdict("falsified", x_adv)
            pool = _Domains.cat([rest, children.take((children.lb <= 0).nonzero().flatten())])
        return verdict("unknown" if undecided_leaf else "verified")

    def _roots(self, row_lb: Tensor) -> _Domains:
        label = int(self.problem.y[self.index])
        rows = [j for j in range(self.problem.classes) if row_lb[j] <= 0]
        count = len(rows)
        c = torch.zeros(count, self.problem.classes, dtype=torch.float64)
        c[:, label] = 1.0
        c[torch.arange(count), rows] = -1.0
        slopes = [
            ReLURelaxation.from_bounds(low, high).lower_slope.unsqueeze(1)
            for low, high in self.relu_bounds
        ]

        def zeros(low: Tensor, dtype: torch.dtype, rows: bool = True) -> Tensor:
            return torch.zeros(count, *([1] if rows else []), *low.shape[1:], dtype=dtype)

        return _Domains(
            c,
            row_lb[rows].clone(),
            [zeros(low, torch.int8, rows=False) for low, _ in self.relu_bounds],
            [s.expand(count, *s.shape[1:]).clone() for s in slopes],
            [zeros(low, torch.float64) for low, _ in self.relu_bounds],
            [zeros(low, torch.float64) for low, _ in self.relu_bounds],
            [low.expand(count, *low.shape[1:]).clone() for low, _ in self.relu_bounds],
            [high.expand(count, *high.shape[1:]).clone() for _, high in self.relu_bounds],
        )

    @staticmethod
    def _domain_bounds(domains: _Domains) -> list[tuple[Tensor, Tensor]]:
        return list(zip(domains.low, domains.high, strict=True))

    def _refine(self, domains: _Domains, first: int) -> _Domains:
        """Recompute the pre-activation bounds of the layers after ``first`` with each
        domain's own relaxations (split neurons exact), intersected with what it had.

        CROWN passes with adaptive slopes; a domain whose split contradicts the new bounds
        is empty and gets the bound +inf.
        """
        positions = [i for i, op in enumerate(self.ops) if isinstance(op, ReLUOp)]
        count = len(domains)
        centre = ((self.lower + self.upper) / 2).expand(count, *self.lower.shape)
        radius = ((self.upper - self.lower) / 2).expand(count, *self.lower.shape)
        low, high = list(domains.low), list(domains.high)
        for j in range(first + 1, len(positions)):
            unstable = ((low[j] < 0) & (high[j] > 0)).flatten(1).any(dim=0)
            neurons = unstable.nonzero().flatten()
            if not neurons.numel():
                continue
            relaxations = [ReLURelaxation.from_bounds(low[i], high[i]) for i in range(j)]
            shape = low[j].shape[1:]
            flat_low, flat_high = low[j].flatten(1).clone(), high[j].flatten(1).clone()
            step = max(1, REFINE_ELEMENTS // (2 * count * max(unstable.numel(), 1)))
            for start in range(0, neurons.numel(), step):
                chunk = neurons[start : start + step]
                rows = chunk.numel()
                A = centre.new_zeros(1, 2 * rows, unstable.numel())
                index = torch.arange(rows)
                A[0, index, chunk], A[0, index + rows, chunk] = 1.0, -1.0
                result = backward_lower_bound(
                    self.ops[: positions[j]], A.view(1, 2 * rows, *shape), relaxations,
                    centre, radius,
                )  # fmt: skip
                flat_low[:, chunk] = torch.maximum(flat_low[:, chunk], result[:, :rows])
                flat_high[:, chunk] = torch.minimum(flat_high[:, chunk], -result[:, rows:])
            low[j], high[j] = flat_low.view(low[j].shape), flat_high.view(high[j].shape)
        empty = torch.zeros(count, dtype=torch.bool)
        for j, split in enumerate(domains.splits):
            low[j] = torch.where(split > 0, low[j].clamp(min=0), low[j])
            high[j] = torch.where(split < 0, high[j].clamp(max=0), high[j])
            empty |= (low[j] > high[j]).flatten(1).any(dim=1)
        lb = torch.where(empty, math.inf, domains.lb)
        return _Domains(
            domains.c, lb, domains.splits, domains.alpha, domains.beta,
            domains.coefficients, low, high,
        )  # fmt: skip

    def _evaluate(
        self, domains: _Domains, alpha: list[Tensor], beta: list[Tensor], trace: list[Tensor]
    ) -> Tensor:
        """One beta-CROWN pass: the lower bound ``[D]`` of each domain's row."""
        count = len(domains)
        relaxed = []
        for (low, high), a, b, split in zip(
            self._domain_bounds(domains), alpha, beta, domains.splits, strict=True
        ):
            relax = ReLURelaxation.from_bounds(low, high)
            relax = relax.with_lower_slopes(a, (low < 0) & (high > 0))
            relaxed.append(_with_split(relax, b, split.to(b.dtype).unsqueeze(1)))
        centre = ((self.lower + self.upper) / 2).expand(count, *self.lower.shape)
        radius = ((self.upper - self.lower) / 2).expand(count, *self.lower.shape)
        spec = domains.c.unsqueeze(1)
        return backward_lower_bound(self.ops, spec, relaxed, centre, radius, None, trace)[:, 0]

    def _bound(self, domains: _Domains, iterations: int) -> tuple[_Domains, Tensor]:
        """beta-CROWN: optimise slopes and split multipliers, keep each domain's best bound.

        Returns the domains (new bounds, parameters, coefficients) and the point that
        minimises each domain's last linear bound.
        """
        alpha = [a.clone().requires_grad_() for a in domains.alpha]
        beta = [b.clone().requires_grad_() for b in domains.beta]
        optimizer = torch.optim.Adam(
            [{"params": alpha, "lr": self.lr_alpha}, {"params": beta, "lr": self.lr_beta}]
        )
        schedule = torch.optim.lr_scheduler.ExponentialLR(optimizer, LR_DECAY)
        best = domains.lb.clone()
        kept = [p.detach().clone() for p in alpha + beta]  # the parameters of the best bound
        for iteration in range(iterations):
            trace: list[Tensor] = []
            with torch.enable_grad():
                value = self._evaluate(domains, alpha, beta, trace)
                loss = -value.sum()
            improved = value.detach() > best
            best = torch.where(improved, value.detach(), best)
            for keep, parameter in zip(kept, alpha + beta, strict=True):
                mask = improved.view(-1, *[1] * (keep.dim() - 1))
                keep.copy_(torch.where(mask, parameter.detach(), keep))
            if iteration == iterations - 1 or bool((best > 0).all()):
                break  # the last evaluation takes no step; all proven: nothing to gain
            projected_step(loss, alpha + beta, optimizer, schedule, lambda: _project(alpha, beta))
        minimisers = torch.where(trace[-1][:, 0] >= 0, self.lower, self.upper).detach()
        optimised = _Domains(
            domains.c,
            best,
            domains.splits,
            kept[: len(alpha)],
            kept[len(alpha) :],
            [t.detach() for t in trace[:-1]],
            domains.low,
            domains.high,
        )
        return optimised, minimisers

    def _branch(self, domains: _Domains) -> list[tuple[int, int] | None]:
        """The (layer, flat neuron) to split in each domain; None: nothing left to split.

        Candidates: the best BaBSR scores and the best intercept scores (alpha-beta-CROWN's
        heuristics/babsr.py); each is tried with one bound pass (filtered smart branching,
        heuristics/kfsb.py) and the one whose worse child has the higher bound wins.
        """
        scores, intercepts = [], []
        for (low, high), coefficient, constant in zip(
            self._domain_bounds(domains), domains.coefficients, self.constants, strict=True
        ):
            unstable = (low < 0) & (high > 0)
            gap = torch.where(unstable, high - low, torch.ones_like(high))
            slope = high / gap
            lA = coefficient[:, 0]
            intercept = lA.clamp(max=0) * (-low * slope)
            weighted = constant * lA
            bias = torch.maximum(weighted * (slope - 1), weighted * slope)
            scores.append(torch.where(unstable, (bias + intercept).abs(), -1.0).flatten(1))
            intercepts.append(torch.where(unstable, intercept, 1.0).flatten(1))
        score, intercept = torch.cat(scores, 1), torch.cat(intercepts, 1)
        sizes = [s.shape[1] for s in scores]
        k = min(FSB_CANDIDATES, score.shape[1])
        top_score, by_score = score.topk(k, dim=1)
        top_intercept, by_intercept = (-intercept).topk(k, dim=1)
        candidates = torch.cat([by_score, by_intercept], 1)  # [D, 2k]
        valid = torch.cat([top_score >= 0, top_intercept > -1.0], 1)
        choice = self._try_candidates(domains, candidates, valid, sizes)
        return [
            None if not valid[d].any() else _locate(int(candidates[d, choice[d]]), sizes)
            for d in range(len(domains))
        ]

    @torch.no_grad()
    def _try_candidates(
        self, domains: _Domains, candidates: Tensor, valid: Tensor, sizes: list[int]
    ) -> Tensor:
        """Index (into ``candidates``' columns) of each domain's best split by one pass."""
        count, width = candidates.shape
        flat = candidates.flatten()
        parents = torch.arange(count).repeat_interleave(width)
        tried = domains.take(parents.repeat_interleave(2))
        for k, neuron in enumerate(flat.tolist()):
            layer, index = _locate(neuron, sizes)
            tried.low[layer][2 * k].view(-1)[index].clamp_(min=0.0)  # active: z >= 0
            tried.high[layer][2 * k + 1].view(-1)[index].clamp_(max=0.0)  # inactive: z <= 0
        value = self._evaluate(tried, tried.alpha, tried.beta, [])
        worse = value.view(count, width, 2).amin(dim=2)
        return torch.where(valid, worse, -math.inf).argmax(dim=1)

    def _split(self, domains: _Domains, decisions: list[tuple[int, int]]) -> _Domains:
        """Two children per domain: the chosen neuron active (z >= 0), then inactive; the
        bounds of the layers after the split are refined for the children."""
        both = domains.take(torch.arange(len(domains)).repeat_interleave(2))
        for k, (layer, neuron) in enumerate(decisions):
            for child, sign in ((2 * k, 1), (2 * k + 1, -1)):
                both.splits[layer][child].view(-1)[neuron] = sign
                both.beta[layer][child].view(-1)[neuron] = 0.0
        return self._refine(both, min(layer for layer, _ in decisions))

    def _attack(self, points: Tensor) -> Tensor | None:
        """A counterexample among the bound minimisers or a short PGD from each of them."""
        x_adv = self.problem.counterexample(self.index, points)
        if x_adv is not None or self.domain_pgd_steps == 0:
            return x_adv
        label = self.problem.y[self.index].expand(len(points))
        step = 2.5 / self.domain_pgd_steps * (self.upper - self.lower) / 2
        current = points.clone()
        for _ in range(self.domain_pgd_steps):
            current.requires_grad_(True)
            with torch.enable_grad():
                margin = true_class_margin(_forward(self.ops, current), label)
                (grad,) = torch.autograd.grad(margin.sum(), current)
            moved = current.detach() - step * grad.sign()
            current = torch.max(torch.min(moved, self.upper), self.lower)
            x_adv = self.problem.counterexample(self.index, current)
            if x_adv is not None:
                return x_adv
        return None

    def _solve_leaf(self, domains: _Domains, d: int) -> tuple[str, Tensor | None]:
        """A domain without unstable neurons: exact LP if available, else undecided."""
        if self.leaf_solver is None:
            return "unknown", None
        bounds = self._domain_bounds(domains.take(torch.tensor([d])))
        active = [(low >= 0).flatten() for low, _ in bounds]
        splits = [s[d].flatten() for s in domains.splits]
        value, point = self.leaf_solver.minimise(
            domains.c[d].numpy(), active, splits, self.lower.numpy(), self.upper.numpy()
        )
        if value is None or value > PROOF_MARGIN:  # infeasible or proven positive
            return "verified", None
        x_adv = None
        if point is not None:
            candidate = torch.from_numpy(point).reshape(self.lower.shape)[None]
            x_adv = self.problem.counterexample(self.index, candidate)
        return ("falsified", x_adv) if x_adv is not None else ("unknown", None)


def _project(alpha: list[Tensor], beta: list[Tensor]) -> None:
    """Back onto the feasible set: slopes in [0, 1], split multipliers >= 0."""
    for a in alpha:
        a.clamp_(0.0, 1.0)
    for b in beta:
        b.clamp_(min=0.0)


def _forward(ops: list[Op], x: Tensor) -> Tensor:
    """The network as its (fused, densified) ops: the same function, cheaper in float64."""
    for op in ops:
        x = torch.relu(x) if isinstance(op, ReLUOp) else op.forward(x)
    return x


def _with_split(relax: ReLURelaxation, beta: Tensor, sign: Tensor) -> ReLURelaxation:
    """Add the Lagrangian term ``-beta s z`` of the split constraints ``s z >= 0``."""
    return ReLURelaxation(
        relax.lower_slope, relax.upper_slope, relax.upper_intercept, -(beta * sign)
    )


def _locate(flat: int, sizes: list[int]) -> tuple[int, int]:
    for layer, size in enumerate(sizes):
        if flat < size:
            return layer, flat
        flat -= size
    raise IndexError(flat)


def _pre_activation_constants(ops: list[Op], reference: Tensor) -> list[Tensor]:
    """Per ReLU: the affine ops since the previous ReLU applied to zero (BaBSR's bias)."""
    inputs, activation = [], reference[:1]
    for op in ops:
        inputs.append(activation)
        activation = torch.relu(activation) if isinstance(op, ReLUOp) else op.forward(activation)
    constants, start = [], 0
    for position, op in enumerate(ops):
        if isinstance(op, ReLUOp):
            value = torch.zeros_like(inputs[start])
            for affine in ops[start:position]:
                value = affine.forward(value)
            constants.append(value.detach())
            start = position + 1
    return constants


class _LeafSolver:
    """Exact minimum of a margin over a fully split domain (the network is affine there)."""

    def __init__(self, network: DenseReLUNetwork) -> None:
        self.network = network

    def minimise(
        self,
        c: np.ndarray,
        active: list[Tensor],
        splits: list[Tensor],
        lower: np.ndarray,
        upper: np.ndarray,
    ) -> tuple[float | None, np.ndarray | None]:
        """``(min c f(x), argmin)`` over the domain, ``(None, None)`` if it is empty."""
        weights, biases = self.network.weights, self.network.biases
        size = lower.size
        M, m = np.eye(size), np.zeros(size)
        rows, limits = [], []
        for weight, bias, on, split in zip(weights[:-1], biases[:-1], active, splits, strict=True):
            M, m = weight @ M, weight @ m + bias
            for neuron in np.flatnonzero(split.numpy()):
                sign = float(split[neuron])
                rows.append(-sign * M[neuron])  # s z >= 0  <=>  -s (M x + m) <= 0
                limits.append(sign * m[neuron])
            mask = on.numpy().astype(np.float64)
            M, m = M * mask[:, None], m * mask
        objective = c @ weights[-1] @ M
        constant = float(c @ (weights[-1] @ m + biases[-1]))
        result = linprog(
            objective,
            A_ub=np.array(rows) if rows else None,
            b_ub=np.array(limits) if rows else None,
            bounds=list(zip(lower.ravel(), upper.ravel(), strict=True)),
            method="highs",
        )
        if result.status == 2:
            return None, None
        if result.status != 0:
            return -math.inf, None
        return float(result.fun) + constant, np.clip(result.x, lower.ravel(), upper.ravel())


def _leaf_solver(
    model64: nn.Sequential, ops: list[Op], low64: Tensor, enabled: bool
) -> _LeafSolver | None:
    """The exact LP of fully split domains, if enabled and the dense network is small."""
    if not enabled:
        return None
    sizes, activation = [low64[0].numel()], low64[:1]
    for op in ops:
        if isinstance(op, ReLUOp):
            sizes.append(activation[0].numel())
        activation = torch.relu(activation) if isinstance(op, ReLUOp) else op.forward(activation)
    sizes.append(activation[0].numel())
    if sum(a * b for a, b in itertools.pairwise(sizes)) > LP_MAX_WEIGHTS:
        return None
    return _LeafSolver(DenseReLUNetwork.from_sequential(model64, tuple(low64.shape[1:])))


def _check(
    x: Tensor,
    y: Tensor,
    eps: float,
    time_limit: float,
    batch_domains: int,
    iterations: int,
    max_domains: int,
) -> tuple[float, float]:
    """Clear errors for bad arguments; returns ``eps`` and ``time_limit`` as floats."""
    for name, value in (("batch_domains", batch_domains), ("iterations", iterations),
                        ("max_domains", max_domains)):  # fmt: skip
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return check_problem(x, y, eps, time_limit)


__all__ = ["Verdict", "verify_bab"]
