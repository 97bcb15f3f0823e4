"""The FinOps half of the sandbox: billing history, costs, forecasts, anomalies, budgets, commitments, waste.

Each method checks its arguments, opens one read (or write) transaction and hands the billing export
(`SqliteBillingExport`) to the backend-independent analyses in `finops`. Errors are InvalidArgument /
NotFound / AlreadyExists with messages meant for the user.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from .analysis import rightsizing
from .billing_catalog import CUD_TYPES, billable_vcpus, series_of
from .billing_store import SqliteBillingExport
from .catalog import HISTORY_DAYS, SANDBOX_NOW_TS, ZONES, iso
from .errors import AlreadyExists, InvalidArgument
from .finops import anomalies, budgets, commitments, costs, forecast, periods
from .finops.common import check_top, cost_filter, dimension, format_money
from .store import load_prices, not_found, transaction
from .validation import check_choice, check_int
from .waste import unused_resources

SERIES_OF_TYPE = {v: k for k, v in CUD_TYPES.items()}


def _number(name: str, value: object, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value) or not lo <= value <= hi:
        raise InvalidArgument(f"{name} must be a number between {lo:g} and {hi:g}, got {value!r}.")
    return float(value)


def _keys(keys: object) -> tuple[str, ...]:
    """Label keys as a list or a comma-separated string."""
    items = keys.split(",") if isinstance(keys, str) else keys
    if not isinstance(items, list | tuple) or not items or not all(isinstance(k, str) and k.strip() for k in items):
        raise InvalidArgument(f"keys must be label names, e.g. ['team', 'env'] or 'team,env'; got {keys!r}.")
    return tuple(dict.fromkeys(k.strip() for k in items))


def _stored(budget: dict) -> dict:
    """What a budget is (for plans and the audit trail's before/after), without who made it when."""
    return {k: budget[k] for k in ("name", "amount", "filter", "thresholds")}


def _budget(row) -> dict:
    return {"name": row["name"], "amount": row["amount"], "filter": json.loads(row["filter"]),
            "thresholds": json.loads(row["thresholds"]), "created": iso(row["created"]),
            "created_by": row["created_by"]}


class SandboxFinOps:
    db_path: Path

    def _period(self, export: SqliteBillingExport, period, start, end, default: str) -> periods.Period:
        return periods.resolve(period, start, end, export.today(), export.first_day(), default)

    # -- billing history ---------------------------------------------------------------------------

    def billing_export_rows(self, period: str | None = None, start: str | None = None, end: str | None = None,
                            project: str | None = None, service: str | None = None, team: str | None = None,
                            env: str | None = None, label: str | None = None, limit: int = 20) -> dict:
        limit = check_int("limit", limit, 1, 500)
        with transaction(self.db_path) as conn:
            export = SqliteBillingExport(conn)
            span = self._period(export, period, start, end, "yesterday")
            where = cost_filter(export, project, service, team, env, label)
            rows = export.rows(span.start, span.end, where, limit)
        return {"period": span.describe(), "filter": where.describe(), "rows": rows, "limit": limit,
                "explanation": {"data": export.source, "period": f"{span.describe()['start']} to "
                                f"{span.describe()['end']}", "filter": where.text(),
                                "method": f"the {limit} costliest rows, as SELECT * on the export returns them"}}

    def cost_report(self, period: str | None = None, start: str | None = None, end: str | None = None,
                    group_by: str = "service", label_key: str | None = None, project: str | None = None,
                    service: str | None = None, team: str | None = None, env: str | None = None,
                    label: str | None = None, top: int = 20) -> dict:
        dim, top = dimension(group_by, label_key), check_top(top)
        with transaction(self.db_path) as conn:
            export = SqliteBillingExport(conn)
            span = self._period(export, period, start, end, "last_30_days")
            where = cost_filter(export, project, service, team, env, label)
            return costs.cost_report(export, span, where, dim, top)

    def compare_costs(self, period: str | None = None, start: str | None = None, end: str | None = None,
                      compare_to: str | None = None, compare_start: str | None = None,
                      compare_end: str | None = None, group_by: str = "service", label_key: str | None = None,
                      project: str | None = None, service: str | None = None, team: str | None = None,
                      env: str | None = None, label: str | None = None, top: int = 5) -> dict:
        dim, top = dimension(group_by, label_key), check_top(top)
        with transaction(self.db_path) as conn:
            export = SqliteBillingExport(conn)
            current = self._period(export, period, start, end, "last_week")
            if compare_to is None and compare_start is None and compare_end is None:
                previous = periods.clamp(current.previous(), export.today(), export.first_day())
            else:
                previous = self._period(export, compare_to, compare_start, compare_end, "last_week")
            where = cost_filter(export, project, service, team, env, label)
            return costs.compare(export, current, previous, where, dim, top)

    def forecast_costs(self, project: str | None = None, service: str | None = None, team: str | None = None,
                       env: str | None = None, label: str | None = None, lookback_days: int = 28) -> dict:
        lookback = check_int("lookback_days", lookback_days, 7, 90)
        with transaction(self.db_path) as conn:
            export = SqliteBillingExport(conn)
            return forecast.forecast(export, cost_filter(export, project, service, team, env, label), lookback)

    def detect_cost_anomalies(self, period: str | None = None, start: str | None = None, end: str | None = None,
                              project: str | None = None, service: str | None = None, team: str | None = None,
                              env: str | None = None, label: str | None = None, threshold: float = 3.5,
                              min_excess: float = 5.0) -> dict:
        threshold = _number("threshold", threshold, 1, 100)
        min_excess = _number("min_excess", min_excess, 0, 1e9)
        with transaction(self.db_path) as conn:
            export = SqliteBillingExport(conn)
            span = self._period(export, period, start, end, "last_30_days")
            where = cost_filter(export, project, service, team, env, label)
            return anomalies.detect(export, span, where, threshold, min_excess)

    def unlabeled_spend(self, period: str | None = None, start: str | None = None, end: str | None = None,
                        keys: list[str] | str = ("team", "env"), project: str | None = None,
                        service: str | None = None, top: int = 20) -> dict:
        label_keys, top = _keys(list(keys) if isinstance(keys, tuple) else keys), check_top(top)
        with transaction(self.db_path) as conn:
            export = SqliteBillingExport(conn)
            span = self._period(export, period, start, end, "last_30_days")
            where = cost_filter(export, project, service)
            return costs.unlabeled(export, span, where, label_keys, top)

    # -- budgets -----------------------------------------------------------------------------------

    def create_budget(self, name: str, amount: float, project: str | None = None, service: str | None = None,
                      team: str | None = None, labels: dict | str | None = None,
                      thresholds: list | None = None, created_by: str | None = None) -> dict:
        name, amount = budgets.check_name(name), budgets.check_amount(amount)
        rules = budgets.check_thresholds(thresholds)
        with transaction(self.db_path, write=True) as conn:
            export = SqliteBillingExport(conn)
            scope = budgets.budget_filter(export, project, service, team, labels)
            if conn.execute("SELECT 1 FROM budgets WHERE name = ?", (name,)).fetchone():
                raise AlreadyExists(f"budget '{name}' already exists; delete it first or pick another name.")
            conn.execute("INSERT INTO budgets VALUES (?, ?, ?, ?, ?, ?)",
                         (name, amount, json.dumps(scope), json.dumps(rules), SANDBOX_NOW_TS, created_by))
            budget = _budget(conn.execute("SELECT * FROM budgets WHERE name = ?", (name,)).fetchone())
            report = budgets.status(export, budget)
        return {**budget, "status": report, "before": None, "after": _stored(budget),
                "message": f"budget {name} created: {format_money(amount)} a month for {budgets.scope_text(scope)}"}

    def delete_budget(self, name: str) -> dict:
        name = budgets.check_name(name)
        with transaction(self.db_path, write=True) as conn:
            budget = _budget(self._budget_row(conn, name))
            conn.execute("DELETE FROM budgets WHERE name = ?", (name,))
        return {**budget, "deleted": True, "before": _stored(budget), "after": None,
                "message": f"budget {name} deleted"}

    def plan_budget_change(self, action: str, name: str, amount: float | None = None, project: str | None = None,
                           service: str | None = None, team: str | None = None, labels: dict | str | None = None,
                           thresholds: list | None = None) -> dict:
        """What creating or deleting a budget would do, without doing it (the plan a person confirms)."""
        action = check_choice("action", action, ("create_budget", "delete_budget"))
        name = budgets.check_name(name)
        with transaction(self.db_path) as conn:
            export = SqliteBillingExport(conn)
            exists = conn.execute("SELECT 1 FROM budgets WHERE name = ?", (name,)).fetchone() is not None
            plan: dict = {"action": action, "name": name, "blocked": None, "changed": True, "reversible": True,
                          "monthly_cost_change_usd": 0.0, "cost_note": "a budget changes no bill: it watches one"}
            if action == "create_budget":
                if amount is None:
                    raise InvalidArgument("creating a budget needs its amount.")
                budget = {"name": name, "amount": budgets.check_amount(amount),
                          "filter": budgets.budget_filter(export, project, service, team, labels),
                          "thresholds": budgets.check_thresholds(thresholds)}
                report = budgets.status(export, budget)
                plan.update(before=None, after=budget, undo=f'delete budget "{name}"', changes=[
                    f"create budget {name}: {format_money(budget['amount'])} a month for "
                    f"{budgets.scope_text(budget['filter'])}",
                    "alerts at " + ", ".join(f"{t['percent']:g}% of {t['basis']}" for t in budget["thresholds"]),
                    f"this month so far {report['actual_percent']}% spent, forecast {report['forecast_percent']}%"])
                if exists:
                    plan["blocked"] = f"budget '{name}' already exists; delete it first or pick another name."
            else:
                budget = _stored(_budget(self._budget_row(conn, name)))
                labels_said = ",".join(f"{k}={v}" for k, v in budget["filter"].get("labels", {}).items())
                plan.update(before=budget, after=None, changes=[f"delete budget {name}: its alerts stop"],
                            undo=f'create budget "{name}" of {budget["amount"]:g}'
                                 + (f" for {labels_said}" if labels_said else ""))
        return plan

    @staticmethod
    def _budget_row(conn, name: str):
        row = conn.execute("SELECT * FROM budgets WHERE name = ?", (name,)).fetchone()
        if row is None:
            known = [r["name"] for r in conn.execute("SELECT name FROM budgets ORDER BY name")]
            raise not_found("budget", name, known, "Use list_budgets to see the budgets that exist.")
        return row

    def list_budgets(self) -> list[dict]:
        with transaction(self.db_path) as conn:
            export = SqliteBillingExport(conn)
            out = []
            for row in conn.execute("SELECT * FROM budgets ORDER BY name").fetchall():
                budget = _budget(row)
                report = budgets.status(export, budget)
                out.append({**budget, **{k: report[k] for k in (
                    "month", "actual", "actual_percent", "forecast", "forecast_percent", "exceed_probability",
                    "state")}, "crossed": [t for t in report["thresholds"] if t["crossed"]]})
        return out

    def budget_status(self, name: str | None = None, amount: float | None = None, project: str | None = None,
                      service: str | None = None, team: str | None = None,
                      labels: dict | str | None = None) -> dict:
        """A stored budget by name, or an ad-hoc one (amount plus a slice) that is not saved."""
        with transaction(self.db_path) as conn:
            export = SqliteBillingExport(conn)
            if name is not None:
                if amount is not None or any(v is not None for v in (project, service, team, labels)):
                    raise InvalidArgument("give either a budget name or an amount with its slice, not both.")
                row = self._budget_row(conn, budgets.check_name(name))
                return {**budgets.status(export, _budget(row)), "saved": True}
            if amount is None and all(v is None for v in (project, service, team, labels)):
                raise InvalidArgument("give a budget name, or an amount (and optionally project, service, team, "
                                      "labels) to check spend against.")
            scope = budgets.budget_filter(export, project, service, team, labels)
            if amount is None:  # "how is the payments budget doing": the saved budget of exactly that slice
                rows = conn.execute("SELECT * FROM budgets ORDER BY name").fetchall()
                matching = [row for row in rows if json.loads(row["filter"]) == scope]
                if not matching:  # "the search budget": the one saved budget inside that slice (search-prod)
                    matching = [row for row in rows if _within(json.loads(row["filter"]), scope)]
                if len(matching) != 1:
                    known = ", ".join(f"{r['name']} ({budgets.scope_text(json.loads(r['filter']))})" for r in rows)
                    what = "no saved budget covers" if not matching else "several saved budgets cover"
                    raise InvalidArgument(f"{what} exactly {budgets.scope_text(scope)}; give a budget name or an "
                                          f"amount to check against. Budgets: {known or 'none'}.")
                return {**budgets.status(export, _budget(matching[0])), "saved": True}
            adhoc = {"name": "(ad hoc)", "amount": budgets.check_amount(amount), "filter": scope,
                     "thresholds": budgets.check_thresholds(None)}
            return {**budgets.status(export, adhoc), "saved": False}

    def budget_alert_states(self) -> list[dict]:
        """What the tool server exports to Prometheus: every budget's amount, spend by basis and thresholds."""
        with transaction(self.db_path) as conn:
            export = SqliteBillingExport(conn)
            rows = conn.execute("SELECT * FROM budgets ORDER BY name").fetchall()
            return [budgets.status(export, _budget(row)) for row in rows]

    # -- commitments and waste ---------------------------------------------------------------------

    def commitment_recommendations(self, lookback_days: int = 30) -> dict:
        lookback = check_int("lookback_days", lookback_days, 7, 90)
        with transaction(self.db_path) as conn:
            export = SqliteBillingExport(conn)
            existing = [{"name": r["name"], "project": r["project"], "region": r["region"], "type": r["type"],
                         "series": SERIES_OF_TYPE[r["type"]], "plan": r["plan"], "vcpus": r["vcpus"],
                         "memory_gb": r["memory_gb"], "start": periods.iso_day(r["start"]),
                         "end": periods.iso_day(r["end"]),
                         "status": "ACTIVE" if r["start"] <= SANDBOX_NOW_TS < r["end"] else "NOT_ACTIVE"}
                        for r in conn.execute("SELECT * FROM commitments ORDER BY name")]
            result = commitments.recommend(export, existing, lookback)
            prices = load_prices(conn)
            freed = []
            for rec in rightsizing(conn, prices, HISTORY_DAYS):
                if rec["action"] != "downsize":
                    continue
                now, then = (prices.machine_types[rec[k]] for k in ("machine_type", "recommended_machine_type"))
                moves = series_of(then.name) != series_of(now.name)
                freed.append({"name": rec["name"], "series": series_of(now.name), "region": ZONES[rec["zone"]],
                              "vcpus": billable_vcpus(now) - (0 if moves else billable_vcpus(then)),
                              "memory_gb": now.memory_gb - (0 if moves else then.memory_gb)})
            return commitments.adjust_for_rightsizing(result, freed)

    def find_unused_resources(self, min_snapshot_age_days: int = 90) -> dict:
        age = check_int("min_snapshot_age_days", min_snapshot_age_days, 1, 3650)
        with transaction(self.db_path) as conn:
            return unused_resources(conn, load_prices(conn), age)


def _within(budget: dict, scope: dict) -> bool:
    """Whether a budget's slice lies inside `scope`: every project, service and label the scope names, it has."""
    return all(budget.get(key) == value for key, value in scope.items() if key != "labels") and \
        all(budget.get("labels", {}).get(k) == v for k, v in scope.get("labels", {}).items())
