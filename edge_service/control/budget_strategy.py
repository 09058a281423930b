"""The budget strategy: the budget policy over the predictor's estimates, learned online,
with hysteresis, backoff from variants that broke the policy, and exploration (measure a
variant by shadow runs before a voluntary move to it).

The policy itself (`edge_service.control.budget_policy.choose`) stays a pure function; this is
the state around it: the holds, the measuring schedule, the served calls' record.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from edge_service.control.budget_policy import PolicyState, best, choose, rank_key, violations
from edge_service.control.decision import Decision
from edge_service.control.evidence import Evidence, ServedRecord, Verdict, far_over, judge
from edge_service.control.limits import Policy
from edge_service.control.predictor import Estimate, Predictor
from edge_service.control.strategy import around
from edge_service.monitor.context import Context

BACKOFF_MAX_S = 60.0
RELIEF = 0.75  # contention below this share of what it was counts as conditions improved


@dataclass(frozen=True, kw_only=True)
class Exploration:
    """How the budget strategy measures a variant before a voluntary move to it.

    ``enabled``: with a prober (the server's standby engines) every voluntary move needs a
    verified estimate; off (the default: a simulator, a loop without engines) a voluntary
    move trusts the prediction. An estimate is *verified* when observations weigh at least
    ``verified_confidence`` in it and the newest is at most ``fresh_s`` old. A variant is
    worth measuring while its predicted p99 is within ``might_fit`` times the budget; the
    same one is measured again after ``retry_s``, doubling up to ``retry_max_s`` while it
    still does not fit (at once when the contention fell by a quarter since). No shadow run
    is made while more than ``allowance`` of the served calls of the last
    ``allowance_window_s`` seconds went over the budget.
    """

    enabled: bool = False
    verified_confidence: float = 0.5
    fresh_s: float = 5.0
    might_fit: float = 1.5
    retry_s: float = 1.0
    retry_max_s: float = 8.0
    allowance: float = 0.01
    allowance_window_s: float = 3.0


@dataclass
class _Probes:
    """When each variant may be measured again, and in what conditions it last was."""

    next_t: dict[str, float]
    wait_s: dict[str, float]
    contention: dict[str, float]


class BudgetStrategy:
    """The budget policy (latency, memory, power, accuracy) over the predictor's estimates,
    learned online from the engine times the server observes and from shadow runs.

    Backoff: a variant the policy had to leave because it broke a constraint is not taken
    back by a voluntary move (an upgrade) for a while: twice the cooldown the first time,
    doubling each time it is left again (at most a minute), so near the budget the server
    does not oscillate between a variant that just fits on paper and one that really fits.
    A shadow run of it after the contention fell by a quarter from when it was left lifts
    the hold (the conditions that broke it are gone, and it was measured again); one left
    for its own cost stays held. A variant that then serves a whole
    backoff period without breaking anything is forgiven. A power-mode change clears
    every hold (the board is a different one now).

    Exploration (`Exploration`): with it on, a voluntary move goes only to a variant whose
    estimate is verified by recent observations; `probe_candidate` names the most useful
    one to measure next, and `shadow` takes what the measuring runs found."""

    name = "budget"

    def __init__(
        self, predictor: Predictor, policy: Policy, exploration: Exploration | None = None
    ) -> None:
        self._predictor, self._policy = predictor, policy
        self._explore = exploration or Exploration()
        self._measuring = True  # the loop has a prober (set_measuring)
        self._lock = threading.Lock()
        self._last: dict[str, Estimate] = {}  # the estimates (what status reports)
        self._judged: dict[str, Estimate] = {}  # and as the served calls judge them
        self._ctx: Context | None = None
        self._current: str | None = None
        self._backoff_s: dict[str, float] = {}  # variant -> its current backoff period
        self._held_until: dict[str, float] = {}  # variant -> no voluntary move to it before
        # variant -> (learner time, contention) when it was left on a violation
        self._left_at: dict[str, tuple[float, float]] = {}
        self._since: tuple[str, float] | None = None  # (current variant, when it came)
        self._mode: str | None = None  # the power mode the holds were earned in
        self._probes = _Probes({}, {}, {})
        self._served: deque[tuple[float, bool]] = deque(maxlen=4096)  # (time, over budget)
        self._record = ServedRecord()  # what the served calls prove (step-down)

    @property
    def predictor(self) -> Predictor:
        """The predictor (and through it the learner) this strategy decides with."""
        return self._predictor

    def decide(
        self,
        ctx: Context,
        current: str | None,
        last_change_t: float | None,
        exclude: frozenset[str] = frozenset(),
    ) -> Decision:
        # the gate's targets, plus what the operator pinned (a dominated variant may be)
        pins = frozenset(self._policy.pins.values())
        estimates = self._predictor.estimates(ctx, also=pins)
        now = self._predictor.learner.now()
        mode = ctx.power_mode.name if ctx.power_mode is not None else None
        if mode != self._mode:  # a new power mode is a new situation: no old holds, and
            self._mode = mode  # the calls served in the old one say nothing of this one
            with self._lock:
                self._forget_holds_locked()
                self._record.clear()
        with self._lock:
            evidence = self._record.take(current, now)
            # where evidence decides about the served variant, its verdict does not
            verdicts = self._record.verdicts(now, skip=current if evidence else None)
        verdict = verdicts.get(current) if current is not None else None
        if evidence is not None:
            estimates = self._overrule(ctx, estimates, current, evidence, pins)
        judged = judge(estimates, current, verdicts, self._policy.latency_budget_ms)
        with self._lock:
            self._last = {e.variant_id: e for e in estimates}
            self._judged = {e.variant_id: e for e in judged}
            self._ctx = ctx
        usable = [e for e in judged if e.variant_id not in exclude] or judged
        state = PolicyState(current, last_change_t)
        choice = choose(ctx, usable, self._policy, state)
        blocked = self._blocked(ctx.t, current, usable)
        voluntary = (
            choice.changed and not choice.violations and not choice.pinned and current is not None
        )
        if voluntary and choice.variant_id in blocked:  # only to a measured variant
            kept = [e for e in usable if e.variant_id not in blocked]
            if kept:
                choice = choose(ctx, kept, self._policy, state)
        self._account(ctx.t, current, choice.variant_id, bool(choice.violations))
        with self._lock:
            self._current = choice.variant_id  # what is served once this decision is acted on
        why = evidence.describe() if evidence is not None else None
        if verdict is not None and verdict.outcome == "over":
            why = verdict.describe()
        if why is not None and choice.changed:
            choice = dataclasses.replace(choice, reason=f"{why}; {choice.reason}")
        return choice

    def served_slo(self) -> Verdict | None:
        """The served variant judged on its own recent calls (`ServedRecord.verdict`), or
        None while too few were served since it came (or with no latency budget)."""
        if self._policy.latency_budget_ms is None:
            return None
        with self._lock:
            return self._record.verdict(self._current, self._predictor.learner.now())

    def _overrule(
        self,
        ctx: Context,
        estimates: list[Estimate],
        current: str | None,
        evidence: Evidence,
        pins: frozenset[str],
    ) -> list[Estimate]:
        """What served calls that prove a violation say (`edge_service.control.evidence`):
        the processor slowed at least as much as they show, so the contention is raised at
        once (every variant is predicted slower, so a step down lands where it fits, in one
        switch), and the current variant's p99 is at least the fastest of them (it breaks
        the budget)."""
        e = next((x for x in estimates if x.variant_id == current), None)
        floor = min(evidence.times_ms)
        if e is None or not math.isfinite(e.p99_ms) or e.p99_ms <= 0:
            return estimates
        if floor > e.p99_ms:
            self._predictor.raise_contention(e, floor / e.p99_ms)
            estimates = self._predictor.estimates(ctx, also=pins)
        return [
            dataclasses.replace(x, p99_ms=max(x.p99_ms, floor)) if x.variant_id == current else x
            for x in estimates
        ]

    def _blocked(self, now: float, current: str | None, usable: list[Estimate]) -> set[str]:
        """Variants a voluntary move may not go to now: held after a violation (unless
        the contention eased since, and a shadow run measured it then where one can), and,
        when exploring, those not verified."""
        held = {
            v
            for v, until in self._held_until.items()
            if until > now and v != current and not self._relieved(v)
        }
        if self._exploring:
            held |= {
                e.variant_id for e in usable if e.variant_id != current and not self.verified(e)
            }
        return held

    def _relieved(self, variant_id: str) -> bool:
        """True when the contention fell by a quarter since ``variant_id`` was left (the
        conditions that broke it are gone) and, where shadow runs can measure, one
        measured it since (the measurement says how it does now; where none can, the
        prediction with the contention now decides). A variant left for its own cost (the
        contention did not move) stays held: re-taking it would only break again."""
        left = self._left_at.get(variant_id)
        e = self._last.get(variant_id)
        if left is None or e is None or not e.correction < RELIEF * left[1]:
            return False
        if not self._exploring:
            return True
        shadow = self._predictor.learner.last_shadow(variant_id, self._mode_name())
        return shadow is not None and shadow > left[0]

    def new_regime(self) -> None:
        """The board changed under the same power mode (a competitor came or went, the
        engines' threads changed): the holds, the backoff, the measuring schedule, the
        served calls' record and the stalls describe the board as it was, so they go,
        as on a power-mode change. What each variant costs stays learned."""
        with self._lock:
            self._forget_holds_locked()
            self._left_at.clear()
            self._served.clear()
            self._record.clear()
        self._predictor.learner.forget_stalls()

    def _forget_holds_locked(self) -> None:
        """No holds, no backoff, no measuring schedule: what the board as it was earned."""
        self._held_until.clear()
        self._backoff_s.clear()
        self._probes = _Probes({}, {}, {})

    def set_measuring(self, on: bool) -> None:
        """Whether shadow runs can measure variants now: exploration needs them, so
        without them (no prober, or a mode where they would slow the served engine) a
        voluntary move trusts the prediction, as with exploration off."""
        self._measuring = on

    @property
    def _exploring(self) -> bool:
        return self._explore.enabled and self._measuring

    def verified(self, e: Estimate) -> bool:
        """True when observations back ``e``: confident enough and recent enough."""
        fresh = e.age_s is not None and e.age_s <= self._explore.fresh_s
        return e.confidence >= self._explore.verified_confidence and fresh

    def _account(self, now: float, current: str | None, chosen: str, forced: bool) -> None:
        """Update the backoff: leaving ``current`` on a violation holds it off; serving a
        variant for its whole backoff period without a violation forgives it."""
        if current is not None and chosen != current and forced:
            period = min(
                BACKOFF_MAX_S,
                max(2 * self._policy.cooldown_s, 2 * self._backoff_s.get(current, 0.0), 1.0),
            )
            self._backoff_s[current] = period
            self._held_until[current] = now + period
            left = self._last.get(current)
            contention = left.correction if left is not None else 1.0
            self._left_at[current] = (self._predictor.learner.now(), contention)
        if chosen != (self._since[0] if self._since else None):
            self._since = (chosen, now)
        elif self._since is not None and now - self._since[1] >= self._backoff_s.get(chosen, 0):
            self._backoff_s.pop(chosen, None)  # it has served a whole period: forgiven

    def probe_candidate(self, exclude: frozenset[str] = frozenset()) -> str | None:
        """The variant to measure next (step-up), or None: the best-ranked one that ranks
        above the served variant, is not verified (or is, but not yet inside the upgrade
        margin: more samples may settle it), might fit the budget, meets the other limits,
        and is due; none while the served variant breaks the policy, a pin holds, or the
        served calls went over the budget beyond the allowance."""
        with self._lock:
            last, ctx, current = dict(self._judged), self._ctx, self._current
        budget = self._policy.latency_budget_ms
        cur = last.get(current) if current is not None else None
        if not self._exploring or budget is None or cur is None or ctx is None:
            return None
        if self._pinned() or violations(cur, ctx, self._policy, current) or self._over():
            return None
        objective, now = self._policy.objective, self._predictor.learner.now()
        mine = rank_key(cur, objective)
        upgrade_at = budget * (1.0 - self._policy.upgrade_margin)
        wanted = [
            e
            for e in last.values()
            if e.variant_id not in exclude
            and rank_key(e, objective) < mine
            and (not self.verified(e) or e.p99_ms > upgrade_at)
            and e.p99_ms <= budget * self._explore.might_fit
            and self._due(e.variant_id, now, cur.correction)
            and not self._other_limits(e, ctx, current)
        ]
        return best(wanted, objective).variant_id if wanted else None

    def _other_limits(self, e: Estimate, ctx: Context, current: str | None) -> bool:
        """True when ``e`` breaks a limit other than latency (no measurement helps)."""
        found = violations(e, ctx, self._policy, current)
        return any(v.kind != "latency budget" for v in found)

    def _pinned(self) -> bool:
        mode = self._mode_name()
        return mode in self._policy.pins or "*" in self._policy.pins

    def _mode_name(self) -> str:
        ctx = self._ctx
        return ctx.power_mode.name if ctx is not None and ctx.power_mode else "default"

    def _due(self, variant_id: str, now: float, contention: float) -> bool:
        probes = self._probes
        if now >= probes.next_t.get(variant_id, -math.inf):
            return True
        then = probes.contention.get(variant_id)
        return then is not None and contention < RELIEF * then  # conditions improved since

    def _over(self) -> bool:
        """True when the served calls of the recent window went over the budget beyond
        the allowance."""
        now = self._predictor.learner.now()
        with self._lock:
            while self._served and now - self._served[0][0] > self._explore.allowance_window_s:
                self._served.popleft()
            calls = len(self._served)
            over = sum(1 for _, o in self._served if o)
        return calls > 0 and over / calls > self._explore.allowance

    def shadow(self, variant_id: str, times_ms: Sequence[float]) -> None:
        """Learn from shadow runs of ``variant_id``, then schedule its next measurement:
        after ``retry_s`` when it fits with the upgrade margin, later and later (doubling)
        while it does not."""
        with self._lock:
            e, ctx = self._last.get(variant_id), self._ctx
        if e is None or ctx is None:
            return
        for ms in times_ms:
            self._predictor.observe(e, ms, shadow=True)
        fresh = self._predictor.estimate(variant_id, ctx)
        with self._lock:
            self._last[variant_id] = fresh
        budget = self._policy.latency_budget_ms
        probes, now = self._probes, self._predictor.learner.now()
        wait = self._explore.retry_s
        margin = 1.0 - self._policy.upgrade_margin
        if budget is not None and fresh.p99_ms > budget * margin:  # not yet: less often
            wait = min(self._explore.retry_max_s, 2 * probes.wait_s.get(variant_id, wait / 2))
        probes.wait_s[variant_id] = wait
        probes.next_t[variant_id] = now + wait
        probes.contention[variant_id] = fresh.correction

    def neighbours(self, variant_id: str) -> list[str]:
        with self._lock:
            order = sorted(self._last.values(), key=lambda e: e.p50_ms)
        return around([e.variant_id for e in order], variant_id)

    def default(self) -> str:
        ctx = Context(
            t=0.0, source="none", cpu_online=1, cpu_load=0.0, mem_available_mb=1.0, mem_total_mb=1.0
        )
        return best(self._predictor.estimates(ctx), self._policy.objective).variant_id

    def predicted_ms(self, variant_id: str) -> float | None:
        with self._lock:
            e = self._last.get(variant_id)
        return e.p50_ms if e is not None and math.isfinite(e.p50_ms) else None

    def estimate_of(self, variant_id: str) -> Estimate | None:
        with self._lock:
            return self._last.get(variant_id)

    def observe(self, variant_id: str, observed_ms: float, *, learn: bool = True) -> bool:
        """Learn from one served engine call of ``variant_id`` (in the last context's
        mode; not with ``learn`` False: the server's own loads slowed it), and count it
        against the exploration allowance and in the served record. True when the served
        calls now prove the variant breaks the budget (`ServedRecord`): decide now."""
        now = self._predictor.learner.now()
        with self._lock:
            e = self._last.get(variant_id)
            budget = self._policy.latency_budget_ms
            over = budget is not None and observed_ms > budget
            far = budget is not None and far_over(observed_ms, budget)
            self._served.append((now, over))
            urgent = self._record.add(variant_id, now, observed_ms, over, far, disturbed=not learn)
        if e is not None and learn:
            self._predictor.observe(e, observed_ms)
        return urgent
