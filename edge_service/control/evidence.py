"""What the served calls themselves prove about the variant being served.

A prediction needs dozens of samples to see a tail; a few served calls can already prove
that the served variant breaks a p99 budget. Two rules, each about as unlikely as one in
10^4 windows for a variant that meets its p99 (none fired in ~17,000 windows of calls of
variants measured at most 1% over, while they fired in 10-50% of the windows of variants
3% over or more, in the oracle sweeps of bench/served_learning.py):

- ``OVER_STREAK`` calls in a row over the budget (a step: a competitor arrived, the mode
  slowed);
- ``OVER_IN_WINDOW`` of the last ``OVER_WINDOW`` calls over the budget (a competitor that
  preempts one call in ten: no two in a row, but far more than 1%);
- one call *far* over the budget (`far_over`: more than ``FAR_OVER`` times it, and by
  more than ``FAR_OVER_MS``), where the server's own loads did not slow it. A scheduler
  stall stretches a call by a few milliseconds, whatever its length: in the oracle sweeps,
  against each scenario's budget, no call of a variant measured at most 1% over went that
  far (0 of 3,099 roadside detector calls of 40-200 ms, none of which even passed the
  budget; 0 of 21,358 Fashion calls), while 139 of the 219 over-budget calls of roadside
  variants that broke it did (87 past 1.25x, the first threshold: a competitor's
  1.1-1.25x stretch then waited for a second call).
  At a detector's 4-6 calls a second it saves the wait for a second call (170-330 ms) on
  the way down, and in a phase of 40 calls one more over is 2.5%. Only
  for budgets of ``FAR_MIN_BUDGET_MS`` or more: served Fashion classifiers (1 ms calls, a
  1.2 ms budget) showed single stalls of 16-72 ms, 4 in 35,613 calls, and at their 50
  calls a second each one stepped the loop down for nothing (the served bench did worse
  with the rule: 40 of 63 phases against 49), while a second call there comes 20 ms later.

Only calls the server's own loads and swaps did not slow are evidence (a disturbed call
counts for the SLO, not for a rule): in the roadside bench, two calls slowed by the reload
of a power-mode change stepped a detector that fit the new mode down, and the loop needed
the rest of the phase to measure its way back.

`ServedRecord` keeps the last calls of the variant served now and says when they prove a
violation; the budget strategy steps down on that at once, whatever its estimate says.

Over longer stretches the served calls also *are* the SLO: the share of them over the
budget is what an operator's p99 budget promises (at most 1%). `ServedRecord.verdict`
judges the served variant on its last ``SLO_WINDOW_S`` seconds of calls, once there are at
least ``SLO_MIN_CALLS``: **compliant** when at most 1% went over (the budget strategy then
keeps it whatever its p99 estimate says: an estimate at the edge of the budget wanders
above and below it on noise, and leaving a variant that keeps its SLO only to come back
to it is what made the loop flap), **over** when more went over than a variant that keeps
the SLO shows once in a hundred windows (a one-sided binomial test against 1%, the
``SLO_ALPHA`` level: the strategy leaves it whatever its estimate says), else undecided
(the estimate decides). A variant served before whose calls were not compliant is
judged at least as slow as they showed (`judge`), until they age out of the window; a
new power mode or load regime starts every record afresh.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from edge_service.control.predictor import Estimate

OVER_STREAK = 2
OVER_WINDOW = 20
OVER_IN_WINDOW = 3
FAR_OVER = 1.1  # one undisturbed call over FAR_OVER x the budget ...
FAR_OVER_MS = 10.0  # ... and over the budget by more than this proves a violation
FAR_MIN_BUDGET_MS = 50.0  # ... where calls are long: few a second, each worth the wait
EVIDENCE_STALE_S = 5.0  # calls older than this prove nothing about now
SLO_SHARE = 0.01  # a p99 budget: at most 1% of the calls over it
SLO_WINDOW_S = 15.0  # the served calls a verdict weighs
SLO_MIN_CALLS = 100  # fewer say too little (1% of them is one call)
SLO_ALPHA = 0.01  # "over": a compliant variant shows this many overs once in 100 windows


@dataclass(frozen=True)
class Evidence:
    """Served calls over the budget that prove a violation: their engine times (ms) and
    the rule they met, as the switch event's reason says it."""

    times_ms: tuple[float, ...]
    rule: str

    def describe(self) -> str:
        slow = ", ".join(f"{ms:.3g}" for ms in self.times_ms)
        return f"{self.rule} ({slow} ms)"


def far_over(ms: float, budget: float) -> bool:
    """Whether one call of ``ms`` is too far over ``budget`` for a stall (module doc)."""
    if budget < FAR_MIN_BUDGET_MS:
        return False
    return ms > max(FAR_OVER * budget, budget + FAR_OVER_MS)


def tail_probability(n: int, k: int, p: float = SLO_SHARE) -> float:
    """P(X >= k) for X ~ Binomial(n, p): how often a variant over the budget for a share
    ``p`` of its calls shows ``k`` or more over in ``n``."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    pmf, below = (1.0 - p) ** n, 0.0
    for i in range(k):
        below += pmf
        pmf *= (n - i) / (i + 1) * p / (1.0 - p)
    return max(0.0, 1.0 - below)


@dataclass(frozen=True)
class Verdict:
    """The served variant judged on its own calls: ``calls`` in the window, ``over`` of
    them over the budget, ``p99_ms`` their 99th percentile, and the outcome:
    ``"compliant"``, ``"over"`` or ``"undecided"``."""

    calls: int
    over: int
    p99_ms: float
    outcome: str

    def describe(self) -> str:
        return f"{self.over} of its last {self.calls} served calls over the budget"

    def to_dict(self) -> dict[str, object]:
        return {
            "calls": self.calls,
            "over": self.over,
            "share_over": round(self.over / self.calls, 4),
            "p99_ms": round(self.p99_ms, 4),
            "verdict": self.outcome,
        }


class ServedRecord:
    """The served calls: the last ones of the variant served now (the fast evidence
    rules), and every variant's calls of the SLO window (the verdicts), in one power mode
    and load regime (`clear` when either changes); not thread-safe (the budget strategy
    holds its lock around it)."""

    def __init__(self) -> None:
        self._variant: str | None = None
        # (time, ms, over, far over): the served variant's last calls
        self._calls: deque[tuple[float, float, bool, bool]] = deque(maxlen=OVER_WINDOW)
        # every variant's calls in the SLO window (this power mode and load regime)
        self._tally: dict[str, deque[tuple[float, float, bool]]] = {}

    def add(
        self, variant_id: str, t: float, ms: float, over: bool, far: bool = False,
        *, disturbed: bool = False,
    ) -> bool:  # fmt: skip
        """Record one served call (``far``: far over the budget); True when it completes
        evidence (decide now). A ``disturbed`` call (the server's own load or swap slowed
        it) counts for the SLO but is no evidence, neither for nor against: the variant
        did not break the budget on its own, and stepping down on the calls a power-mode
        reload slowed left a detector that fits a slower mode there for its whole phase."""
        self._tally.setdefault(variant_id, deque(maxlen=4096)).append((t, ms, over))
        if disturbed:
            return False
        if variant_id != self._variant:
            self._variant = variant_id
            self._calls.clear()
        self._calls.append((t, ms, over, far))
        return over and self._evidence() is not None

    def verdict(self, variant_id: str | None, now: float) -> Verdict | None:
        """``variant_id`` judged on its calls of the last ``SLO_WINDOW_S`` (module doc),
        the served one or one served before in this mode and regime; None while it has
        fewer than ``SLO_MIN_CALLS`` there."""
        tally = self._tally.get(variant_id) if variant_id is not None else None
        if tally is None:
            return None
        while tally and now - tally[0][0] > SLO_WINDOW_S:
            tally.popleft()
        n = len(tally)
        if n < SLO_MIN_CALLS:
            return None
        k = sum(1 for _, _, o in tally if o)
        # nearest rank (<= budget iff compliant), from the top: no sort of the whole window
        above = n - math.ceil((1.0 - SLO_SHARE) * n) + 1
        p99 = heapq.nlargest(above, (ms for _, ms, _ in tally))[-1]
        if k <= SLO_SHARE * n:
            outcome = "compliant"
        elif tail_probability(n, k) < SLO_ALPHA:
            outcome = "over"
        else:
            outcome = "undecided"
        return Verdict(n, k, p99, outcome)

    def verdicts(self, now: float, skip: str | None = None) -> dict[str, Verdict]:
        """Every recorded variant (but ``skip``) with enough calls judged (`verdict`)."""
        found = {vid: self.verdict(vid, now) for vid in self._tally if vid != skip}
        return {vid: v for vid, v in found.items() if v is not None}

    def take(self, variant_id: str | None, now: float) -> Evidence | None:
        """The evidence against ``variant_id`` if the recent calls hold some, once: the
        record starts afresh, so the next decision needs new calls."""
        if variant_id is None or variant_id != self._variant or not self._calls:
            return None
        if now - self._calls[-1][0] > EVIDENCE_STALE_S:
            return None
        found = self._evidence()
        if found is not None:
            self._calls.clear()
        return found

    def clear(self) -> None:
        self._variant = None
        self._calls.clear()
        self._tally.clear()

    def _evidence(self) -> Evidence | None:
        calls = list(self._calls)
        last = calls[-OVER_STREAK:]
        if len(last) == OVER_STREAK and all(over for _, _, over, _ in last):
            rule = f"{OVER_STREAK} served calls in a row over the budget"
            return Evidence(tuple(ms for _, ms, _, _ in last), rule)
        if calls and calls[-1][3]:
            return Evidence((calls[-1][1],), "a served call far over the budget")
        over = [ms for _, ms, o, _ in calls if o]
        if len(over) >= OVER_IN_WINDOW:
            rule = f"{len(over)} of the last {len(calls)} served calls over the budget"
            return Evidence(tuple(over), rule)
        return None


def judge(
    estimates: list[Estimate],
    current: str | None,
    verdicts: Mapping[str, Verdict],
    budget: float | None,
) -> list[Estimate]:
    """The estimates the policy decides on, where the served calls decide
    (`ServedRecord.verdict`; what the strategy reports stays the estimate):

    - the served variant's p99 is what its calls show, within the budget while it keeps
      the SLO (an estimate at the edge of the budget would leave it on noise), over it
      when they prove it breaks the SLO (undecided: the estimate decides);
    - a variant served before in this mode and regime whose calls went over for more
      than 1% of them is at least as slow as they showed: no move, voluntary or forced,
      goes back to it while they say so, and with nothing that fits, the fastest is
      judged on what both served rather than one's calls against the other's estimate
      (which made the two fastest swap on every tick). One that kept the SLO keeps its
      estimate: the contention may have risen since it served.
    """
    if budget is None or not verdicts:
        return estimates
    out = []
    for e in estimates:
        v, served = verdicts.get(e.variant_id), e.variant_id == current
        if v is not None and v.outcome == "compliant" and served:
            e = dataclasses.replace(e, p99_ms=min(e.p99_ms, v.p99_ms))
        elif v is not None and v.outcome != "compliant" and (v.outcome == "over" or not served):
            e = dataclasses.replace(e, p99_ms=max(e.p99_ms, v.p99_ms))
        out.append(e)
    return out
