"""LogQuery -> LogQL for Loki.

Stream labels are only `job` (always "finopti"), `service` and `level`; everything else, the trace id
included, is read from the JSON line (`| json`), which also covers a `trace_id` shipped as structured
metadata (a label filter matches either). A line filter on the trace id first keeps the query cheap.
"""

from finopti.dashboards.model import GraphQuery, LogQuery

JOB = "finopti"


def _string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _is_plain(value: str) -> bool:
    return value.replace("-", "").replace("_", "").isalnum()


def _matcher(label: str, values: tuple[str, ...]) -> str:
    if len(values) == 1 and _is_plain(values[0]):
        return f"{label}={_string(values[0])}"
    # Variables and alternatives are regexes: Grafana interpolates a multi-value variable as (a|b).
    return f"{label}=~{_string('|'.join(values))}"


def logql(query: LogQuery) -> str:
    matchers = [f"job={_string(JOB)}"]
    if query.services:
        matchers.append(_matcher("service", query.services))
    if query.level:
        matchers.append(_matcher("level", (query.level,)))
    expr = "{" + ", ".join(matchers) + "}"
    var = f"${query.trace_var}" if query.trace_var else None
    # Line filters first (cheap), then parse the JSON line, then filter on its fields.
    if var:
        expr += f" |= {_string(var)}"
    if query.text:
        expr += f" |~ {_string('(?i)' + query.text)}"
    if var or query.top_by or query.drop_events:
        expr += " | json"
    if var:
        expr += f" | trace_id={_string(var)}"
    for event in query.drop_events:
        expr += f" | event!={_string(event)}"
    if query.volume_by:
        return f"sum by ({', '.join(query.volume_by)}) (count_over_time({expr} [$__interval]))"
    if not query.top_by:
        return expr
    by = ", ".join(query.top_by)
    return f'topk({query.limit}, sum by ({by}) (count_over_time({expr} | __error__="" [$__range])))'


def graph_logql(query: GraphQuery) -> dict[str, str]:
    """The service graph's three LogQL metric queries (requests, errors, p95 ms) by caller and callee.

    The caller is the SPIFFE id's last segment (`spiffe://finopti.local/svc/orchestrator` -> orchestrator), and
    `clients` on the edge listener; the callee is the upstream cluster's service (`gcloud-agent.v1`), or
    `gateway` when the gateway answered itself."""
    stream = "{" + f"job={_string(JOB)}, service={_string('gateway')}" + "}"
    parsed = f'{stream} |= "access" | json | __error__="" | message="access"'
    if query.exclude_services:
        parsed += f" | upstream_service!~{_string('(' + '|'.join(query.exclude_services) + ')[.].*')}"
    names = (' | label_format source=`{{ if .source }}{{ regexReplaceAll ".*/" .source "" }}{{ else }}clients{{ end }}`'
             ', target=`{{ if .upstream_service }}{{ regexReplaceAll "[.].*" .upstream_service "" }}'
             "{{ else }}gateway{{ end }}`")
    window = "[$__range]"
    return {
        "requests": f"sum by (source, target) (count_over_time({parsed}{names} {window}))",
        "errors": f"sum by (source, target) (count_over_time({parsed} | status >= 500{names} {window}))",
        "p95_ms": f"quantile_over_time(0.95, {parsed}{names} | unwrap duration_ms {window}) by (source, target)",
    }
