"""Cost forecasts: the rest of this month and all of next month, with 80 % and 95 % prediction intervals.

Method: ordinary least squares on the daily net cost of the last `lookback_days` complete days, with an
intercept, a linear trend and one term per weekday (weekday terms from 14 days of history, the trend from
7; with fewer days the forecast is the mean), plus up to two level shifts: cloud spend moves in steps (a
VM stopped, a service switched on), and a trend fitted through a step would extrapolate it for ever. A
shift is a term 0 before day k and 1 from it; the k that best reduces the residual sum of squares is kept
when its partial F statistic is at least 12 (with 3 or more days on each side). One-day spikes found by
the anomaly detector (a spike day whose neighbours are not anomalous) are replaced by their baseline
before fitting, so a one-off does not move the run rate; spend that starts inside the lookback is fitted
from its first day. The interval of a sum of future days is the OLS prediction interval of that sum,
  var = s^2 * (k + a' (X'X)^-1 a),  a = the sum of the k future rows of the design matrix,
with s^2 the residual variance, and normal quantiles (1.2816 for 80 %, 1.9600 for 95 %). Month end adds the
actual month-to-date cost (not cleaned: it was spent) to the forecast of the remaining days.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, timedelta
from statistics import NormalDist

import numpy as np

from . import anomalies
from .common import money, net
from .export import BillingExport, CostFilter
from .periods import DAY, Period, day_of, iso_day, month_start, next_month_start, ts_of

LEVELS = {"80": NormalDist().inv_cdf(0.90), "95": NormalDist().inv_cdf(0.975)}
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MAX_SHIFTS = 2
SHIFT_MIN_F = 12.0
SHIFT_MIN_SIDE_DAYS = 3


@dataclass
class Fit:
    t0: int  # first fitted day
    terms: list[str]  # intercept, trend, weekday:<Day>, shift:<YYYY-MM-DD>
    beta: np.ndarray
    xtx_inv: np.ndarray
    sigma: float
    n: int

    def row(self, day: int) -> np.ndarray:
        t = (day - self.t0) // DAY
        weekday = day_of(day).weekday()
        out = []
        for term in self.terms:
            kind, _, arg = term.partition(":")
            if kind == "intercept":
                out.append(1.0)
            elif kind == "trend":
                out.append(float(t))
            elif kind == "weekday":
                out.append(float(WEEKDAYS[weekday] == arg))
            else:  # shift: a step from that day on
                out.append(float(iso_day(day) >= arg))
        return np.array(out)

    def point(self, day: int) -> float:
        return float(self.row(day) @ self.beta)

    def sum_interval(self, days: list[int]) -> tuple[float, float]:
        """(mean, standard deviation) of the sum of the costs of `days`."""
        if not days:
            return 0.0, 0.0
        a = sum(self.row(d) for d in days)
        mean = float(a @ self.beta)
        variance = self.sigma**2 * (len(days) + float(a @ self.xtx_inv @ a))
        return mean, math.sqrt(max(variance, 0.0))

    def describe(self) -> dict:
        coef = dict(zip(self.terms, (float(b) for b in self.beta), strict=True))
        return {
            "fit_days": self.n,
            "from": iso_day(self.t0),
            "terms": self.terms,
            "level_at_start": money(coef["intercept"]),
            "trend_per_day": money(coef["trend"]) if "trend" in coef else 0.0,
            "weekday_effects": {k.split(":")[1]: money(v) for k, v in coef.items() if k.startswith("weekday:")},
            "level_shifts": [{"from": k.split(":")[1], "change_per_day": money(v)}
                             for k, v in coef.items() if k.startswith("shift:")],
            "residual_sd": money(self.sigma),
        }


def _solve(days: list[int], values: list[float], terms: list[str]) -> tuple[Fit, float]:
    """The least-squares fit with these terms, and its residual sum of squares."""
    model = Fit(days[0], terms, np.zeros(len(terms)), np.zeros((len(terms), len(terms))), 0.0, len(days))
    x = np.array([model.row(d) for d in days])
    y = np.array(values)
    model.xtx_inv = np.linalg.pinv(x.T @ x)
    model.beta = model.xtx_inv @ x.T @ y
    residuals = y - x @ model.beta
    rss = float(residuals @ residuals)
    dof = len(days) - len(terms)
    model.sigma = math.sqrt(rss / dof) if dof > 0 else 0.0
    return model, rss


def fit(days: list[int], values: list[float]) -> Fit:
    n = len(days)
    terms = ["intercept"]
    if n >= 7:
        terms.append("trend")
    if n >= 14:
        terms += [f"weekday:{w}" for w in WEEKDAYS[1:]]
    model, rss = _solve(days, values, terms)
    # Sums of squares below this are rounding, not cost: an exactly fitted series must not "explain" its
    # rounding noise with a shift (an F ratio of two noise values can be anything).
    exact = 1e-12 * max(1.0, float(np.dot(values, values)))
    for _ in range(MAX_SHIFTS if n >= 14 else 0):
        if rss <= exact:
            break
        candidates = []
        for k in range(SHIFT_MIN_SIDE_DAYS, n - SHIFT_MIN_SIDE_DAYS + 1):
            term = f"shift:{iso_day(days[k])}"
            if term not in terms:
                candidates.append((*_solve(days, values, [*terms, term]), term))
        if not candidates:
            break
        best, best_rss, term = min(candidates, key=lambda c: c[1])
        dof = n - len(best.terms)
        if dof <= 0 or rss - best_rss <= exact:
            break
        if best_rss > exact and (rss - best_rss) / (best_rss / dof) < SHIFT_MIN_F:
            break
        model, rss, terms = best, best_rss, best.terms
    return model


def _interval(base: float, mean: float, sd: float) -> dict:
    """base (already spent) + the forecast sum; bounds never below what is already spent."""
    out = {"forecast": money(base + max(mean, 0.0))}
    for level, z in LEVELS.items():
        out[f"interval_{level}"] = [money(base + max(mean - z * sd, 0.0)), money(base + max(mean + z * sd, 0.0))]
    out["sd"] = money(sd)
    return out


def exceed_probability(forecast: dict, amount: float) -> float:
    """P(period total > amount) under the forecast's normal distribution."""
    if forecast["sd"] <= 0:
        return 1.0 if forecast["forecast"] > amount else 0.0
    return round(1 - NormalDist(forecast["forecast"], forecast["sd"]).cdf(amount), 3)


def _cleaned(export: BillingExport, where: CostFilter, start: int, today: int, values: list[float],
             days: list[int]) -> list[dict]:
    """Subtract each isolated one-day spike's excess from its day; returns what was removed."""
    found = anomalies.detect(export, Period(start, today, "lookback"), where)["anomalies"]
    flagged = {(a["service"], a["date"]) for a in found}
    removed = []
    for a in found:
        day = ts_of(date.fromisoformat(a["date"]))
        neighbours = {(a["service"], iso_day(day - DAY)), (a["service"], iso_day(day + DAY))}
        if a["kind"] != "spike" or day + DAY >= today or neighbours & flagged:
            continue  # a level shift or a spike still going on: keep it
        values[days.index(day)] -= a["excess"]
        removed.append({"date": a["date"], "service": a["service"], "removed": a["excess"]})
    return removed


def forecast(export: BillingExport, where: CostFilter, lookback_days: int = 28) -> dict:
    today, first = export.today(), export.first_day()
    start = max(first, today - lookback_days * DAY)
    days = list(range(start, today, DAY))
    by_day = {c["day"]: net(c) for c in export.aggregate(start, today, ["day"], where)}
    actual = [by_day.get(d, 0.0) for d in days]
    values = list(actual)
    removed = _cleaned(export, where, start, today, values, days)
    began = next((i for i, v in enumerate(values) if abs(v) > 0.005), len(values))
    if began == len(values):
        began = 0  # nothing at all: fit zeros, forecast zero
    model = fit(days[began:], values[began:])

    this_month = month_start(day_of(today))
    month_end = next_month_start(this_month)
    following_end = next_month_start(month_end)
    mtd_cells = export.aggregate(ts_of(this_month), today, [], where)
    mtd = sum(net(c) for c in mtd_cells)
    rest = list(range(today, ts_of(month_end), DAY))
    next_days = list(range(ts_of(month_end), ts_of(following_end), DAY))
    month_forecast = {"month": this_month.strftime("%Y-%m"), "actual_to_date": money(mtd),
                      "days_elapsed": (today - ts_of(this_month)) // DAY, "days_remaining": len(rest),
                      **_interval(mtd, *model.sum_interval(rest))}
    next_forecast = {"month": month_end.strftime("%Y-%m"), "days": len(next_days),
                     **_interval(0.0, *model.sum_interval(next_days))}
    series = [{"date": iso_day(d), "actual": money(a)} for d, a in zip(days, actual, strict=True)]
    for d in rest + next_days:
        mean, sd = model.sum_interval([d])
        point = {"date": iso_day(d), "forecast": money(max(mean, 0.0))}
        for level, z in LEVELS.items():
            point[f"lower_{level}"] = money(max(mean - z * sd, 0.0))
            point[f"upper_{level}"] = money(max(mean + z * sd, 0.0))
        series.append(point)
    last = day_of(today) - timedelta(days=1)
    return {
        "as_of": iso_day(today),
        "filter": where.describe(),
        "currency": export.currency(),
        "month_end": month_forecast,
        "next_month": next_forecast,
        "model": {**model.describe(), "lookback": {"start": iso_day(start), "end": last.isoformat(),
                                                   "days": len(days)}, "cleaned_spikes": removed},
        "series": series,
        "explanation": {
            "data": export.source,
            "period": f"fitted on {iso_day(days[began])} to {last.isoformat()} ({model.n} days); month to date "
                      f"{this_month.isoformat()} to {last.isoformat()}",
            "filter": where.text(),
            "method": "least squares on daily net cost with "
                      + ", ".join(dict.fromkeys(t.split(":")[0] for t in model.terms))
                      + " terms" + "".join(f" (level shift from {t.split(':')[1]})" for t in model.terms
                                           if t.startswith("shift:"))
                      + "; one-day spikes replaced by their baseline before fitting"
                      + (f" ({', '.join(r['date'] + ' ' + r['service'] for r in removed)})" if removed else "")
                      + "; 80 %/95 % prediction intervals of the sum of the forecast days (normal quantiles); "
                        "month end = actual month to date + forecast of the remaining days",
        },
    }
