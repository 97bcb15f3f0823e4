"""Cost over a period by any dimension, period-over-period comparison with its drivers, and unlabelled spend."""

from __future__ import annotations

from collections import defaultdict

from .common import dimension_text, key_text, money, net
from .export import LABEL_PREFIX, BillingExport, CostFilter
from .periods import Period, iso_day


def _key(dim: str, value: object) -> str:
    if dim == "day" and value is not None:
        return iso_day(int(value))
    if dim == "month" and value is not None:
        return f"{str(value)[:4]}-{str(value)[4:]}"
    return key_text(dim, value)


def _period_text(period: Period) -> str:
    d = period.describe()
    return f"{d['start']} to {d['end']} ({d['days']} days)"


def totals(cells: list[dict]) -> dict:
    cost = sum(c["cost"] for c in cells)
    credits = sum(c["credits"] for c in cells)
    return {"cost": money(cost), "credits": money(credits), "net": money(cost + credits)}


def cost_report(export: BillingExport, period: Period, where: CostFilter, dim: str, top: int) -> dict:
    cells = export.aggregate(period.start, period.end, [dim], where)
    total = totals(cells)
    chronological = dim in ("day", "month")
    cells.sort(key=lambda c: (c[dim] is None, c[dim]) if chronological else (-net(c), _key(dim, c[dim])))
    shown, rest = (cells, []) if chronological else (cells[:top], cells[top:])
    groups = [{"key": _key(dim, c[dim]), "cost": money(c["cost"]), "credits": money(c["credits"]),
               "net": money(net(c)), "share": round(net(c) / total["net"], 4) if total["net"] else 0.0}
              for c in shown]
    if rest:
        rest_net = sum(net(c) for c in rest)
        groups.append({"key": f"({len(rest)} others)", "cost": money(sum(c["cost"] for c in rest)),
                       "credits": money(sum(c["credits"] for c in rest)), "net": money(rest_net),
                       "share": round(rest_net / total["net"], 4) if total["net"] else 0.0})
    rows = sum(c["rows"] for c in cells)
    return {
        "period": period.describe(),
        "group_by": dim,
        "filter": where.describe(),
        "currency": export.currency(),
        "totals": total,
        "credits_by_type": {k: money(v) for k, v in export.credits_by_type(period.start, period.end, where).items()},
        "groups": groups,
        "explanation": {
            "data": export.source,
            "period": _period_text(period),
            "filter": where.text(),
            "method": f"summed cost and credits of {rows} export rows per {dimension_text(dim)}; net = cost + "
                      "credits (credits are negative)" + ("" if chronological else
                                                          f"; largest {top} groups shown, the rest summed"),
        },
    }


def _by(cells: list[dict], dim: str) -> dict[str, dict]:
    grouped: dict[str, dict] = defaultdict(lambda: {"cost": 0.0, "credits": 0.0})
    for c in cells:
        g = grouped[_key(dim, c[dim])]
        g["cost"] += c["cost"]
        g["credits"] += c["credits"]
    return grouped


def _detail_key(cell: dict) -> str:
    """A driver's detail line: the resource when the row has one (all its SKUs together), else the SKU."""
    return cell["resource"] or cell["sku"]


def _change(before: float, after: float) -> dict:
    status = "new" if not before and after else "gone" if before and not after else (
        "up" if after > before else "down" if after < before else "same")
    return {"previous": money(before), "current": money(after), "change": money(after - before),
            "change_pct": round((after - before) / before * 100, 1) if before else None, "status": status}


def compare(export: BillingExport, current: Period, previous: Period, where: CostFilter, dim: str,
            top: int) -> dict:
    """Net cost of two periods per group, and the groups (then resources/SKUs) that moved it most."""
    fine = [dim] + [d for d in ("sku", "resource") if d != dim]
    now_cells = export.aggregate(current.start, current.end, fine, where)
    before_cells = export.aggregate(previous.start, previous.end, fine, where)
    now_total, before_total = totals(now_cells), totals(before_cells)
    now_groups, before_groups = _by(now_cells, dim), _by(before_cells, dim)
    change = now_total["net"] - before_total["net"]
    drivers = []
    for key in set(now_groups) | set(before_groups):
        before = net(before_groups[key]) if key in before_groups else 0.0
        after = net(now_groups[key]) if key in now_groups else 0.0
        drivers.append({"key": key, **_change(before, after),
                        "share_of_change": round((after - before) / change, 3) if change else None})
    drivers.sort(key=lambda d: (-abs(d["change"]), d["key"]))
    for driver in drivers[:top]:
        lines: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        skus: dict[str, set[str]] = defaultdict(set)
        for index, cells in ((0, before_cells), (1, now_cells)):
            for c in cells:
                if _key(dim, c[dim]) == driver["key"]:
                    lines[_detail_key(c)][index] += net(c)
                    skus[_detail_key(c)].add(c["sku"])
        details = [{"key": k, **_change(b, a), "skus": sorted(skus[k])} for k, (b, a) in lines.items()]
        details.sort(key=lambda d: (-abs(d["change"]), d["key"]))
        driver["details"] = details[:3]
    same_length = current.days == previous.days
    return {
        "current": {"period": current.describe(), **now_total,
                    "daily_average": money(now_total["net"] / current.days)},
        "previous": {"period": previous.describe(), **before_total,
                     "daily_average": money(before_total["net"] / previous.days)},
        "change": money(change),
        "change_pct": round(change / before_total["net"] * 100, 1) if before_total["net"] else None,
        "group_by": dim,
        "filter": where.describe(),
        "currency": export.currency(),
        "drivers": drivers[:top],
        "explanation": {
            "data": export.source,
            "period": f"{_period_text(current)} against {_period_text(previous)}"
                      + ("" if same_length else "; the periods differ in length, compare daily averages too"),
            "filter": where.text(),
            "method": f"net cost (cost + credits) per {dimension_text(dim)} in each period; drivers are the groups "
                      "ranked by the size of their change, each with the resource/SKU lines that changed most",
        },
    }


def unlabeled(export: BillingExport, period: Period, where: CostFilter, keys: tuple[str, ...], top: int) -> dict:
    """Spend on rows missing at least one of the label keys, by service and by resource."""
    everything = totals(export.aggregate(period.start, period.end, [], where))
    lacking = CostFilter(where.projects, where.services, where.labels, keys)
    label_dims = [LABEL_PREFIX + k for k in keys]
    cells = export.aggregate(period.start, period.end, ["service", "project", "resource", *label_dims], lacking)
    unlabeled_total = totals(cells)
    by_service = _by(cells, "service")
    by_missing = {k: money(sum(net(c) for c in cells if c[LABEL_PREFIX + k] is None)) for k in keys}
    resources = []
    for c in cells:
        missing = [k for k in keys if c[LABEL_PREFIX + k] is None]
        resources.append({"resource": c["resource"] or f"({c['service']}, no resource)", "service": c["service"],
                          "project": c["project"], "missing": missing, "net": money(net(c))})
    resources.sort(key=lambda r: (-r["net"], r["resource"]))
    share = unlabeled_total["net"] / everything["net"] if everything["net"] else 0.0
    return {
        "period": period.describe(),
        "keys": list(keys),
        "filter": where.describe(),
        "currency": export.currency(),
        "total_net": everything["net"],
        "unlabeled": unlabeled_total,
        "share": round(share, 4),
        "by_missing_key": by_missing,
        "by_service": sorted(({"key": k, "net": money(net(v))} for k, v in by_service.items()),
                             key=lambda g: (-g["net"], g["key"])),
        "resources": resources[:top],
        "resource_count": len(resources),
        "explanation": {
            "data": export.source,
            "period": _period_text(period),
            "filter": where.text(),
            "method": f"rows whose resource labels lack {' or '.join(keys)}, summed net of credits, "
                      "by service and by resource; share = unlabelled / all net spend in the period",
        },
    }
