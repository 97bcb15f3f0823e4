"""What Apache APISIX 3.18 checks *in code* when it loads a standalone `apisix.yaml`, beyond its JSON schemas.

APISIX checks each item of `apisix.yaml` with its schema, then with the resource's checker (upstream.lua
`check_upstream_conf`, ssl.lua `check_ssl_conf`, http/route.lua `check_route`, each plugin's `check_schema`).
An item that fails is skipped with one `failed to check item data of [...]` line in error.log, and every route
that needs it answers 502/503/404: the gateway starts, and looks healthy, but does not serve. A few more
problems only show at request time (a missing `client_cert_id`, `plugin_config_id` or `upstream_id`).

This module reproduces those checks for the resources and plugins the renderer uses, so the static validation
catches them without an APISIX. Each check names where in APISIX it comes from.
"""

import ipaddress
from collections.abc import Iterator

import regex
from cryptography import x509
from cryptography.hazmat.primitives import serialization

SECRET_PREFIXES = ("$env://", "$ENV://", "$secret://")
# Where APISIX resolves `$env://` / `$secret://` references at run time (secret.lua `fetch_secrets`): plugin
# configurations (plugin.lua, consumer.lua) and the certificates of `ssls` objects (init.lua, ssl router).
# Anywhere else the reference is taken literally.
PLUGIN_HOLDERS = ("routes", "services", "plugin_configs", "global_rules", "consumers", "consumer_groups")
SSL_SECRET_FIELDS = ("cert", "key", "certs", "keys", "client")
# lua-resty-expr (resty/expr/v1.lua): comparison operators and the logical ones that may open a rule.
EXPR_OPERATORS = {"==", "~=", ">", ">=", "<", "<=", "~~", "~*", "in", "has", "ipmatch"}
EXPR_LOGIC = {"OR", "!OR", "AND", "!AND"}


def is_secret(value: object) -> bool:
    return isinstance(value, str) and value.startswith(SECRET_PREFIXES)


# --- PEM (ssl.lua `validate`: ngx.ssl parse_pem_cert / parse_pem_priv_key) ------------------------------


def pem_problem(cert: object, key: object = None) -> str | None:
    """Why APISIX's `validate(cert, key)` would refuse this pair, or None."""
    try:
        x509.load_pem_x509_certificates(str(cert).encode())
    except ValueError:
        return f"failed to parse cert: not a PEM certificate ({_preview(cert)})"
    if key is None:
        return None
    try:
        serialization.load_pem_private_key(str(key).encode(), password=None)
    except (ValueError, TypeError):
        return f"failed to parse key: not a PEM private key ({_preview(key)})"
    return None


def _preview(value: object) -> str:
    text = str(value).strip().splitlines()[0] if str(value).strip() else ""
    return repr(text[:40] + ("..." if len(text) > 40 else ""))


# --- vars expressions (lua-resty-expr `new`) -------------------------------------------------------------


def expr_problem(rule: object) -> str | None:
    """Why `expr.new(rule)` fails, or None (route `vars`, fault-injection, response-rewrite, traffic-split)."""
    if not isinstance(rule, list):
        return "vars must be an array"
    if not rule:
        return None
    if not isinstance(rule[0], list) and str(rule[0]).upper() not in EXPR_LOGIC:
        return "rule should be wrapped inside brackets"
    return _compile(rule)


def _compile(rules: list) -> str | None:
    if not rules:
        return "rule too short"
    if isinstance(rules[0], list):
        return next((p for r in rules if (p := _compile(r) if isinstance(r, list) else "invalid expression")), None)
    if str(rules[0]).upper() in EXPR_LOGIC:
        if len(rules) <= 2:
            return "rule too short"
        return next((p for r in rules[1:] if (p := _compile(r) if isinstance(r, list) else "invalid expression")),
                    None)
    return _compile_expr(rules)


def _compile_expr(expr: list) -> str | None:
    if len(expr) == 4:
        if expr[1] != "!":
            return "bad 'not' expression"
        left, op, right = expr[0], expr[2], expr[3]
    else:
        left, op, right = (list(expr) + [None, None, None])[:3]
    if isinstance(op, str):
        op = op.lower()
    if right is None and op not in EXPR_OPERATORS:  # [var, value] means [var, "==", value]
        op, right = "==", op
        if right is None:
            return "invalid expression"
    if left is None or op is None:
        return "invalid expression"
    if op not in EXPR_OPERATORS:
        return f"invalid operator '{op}'"
    if op == "ipmatch":
        addresses = right if isinstance(right, list) else [right]
        if not addresses or any(not a for a in addresses):
            return "invalid ip address"
        for address in addresses:
            try:
                ipaddress.ip_network(str(address), strict=False)
            except ValueError:
                return f"invalid ip address: {address}"
    return None


# --- the checks, per resource ----------------------------------------------------------------------------


def check_loadable(doc: dict) -> list[str]:
    """Problems APISIX would find in code when loading this (parsed) standalone config; [] when none."""
    problems: list[str] = []
    problems += _unresolved_secrets(doc)
    problems += _shared_global_plugins(doc)
    ssls = {str(s.get("id")): s for s in doc.get("ssls") or [] if isinstance(s, dict)}
    for item in doc.get("ssls") or []:
        problems += [f"ssls[{item.get('id')}]: {p}" for p in _ssl(item)]
    for item in doc.get("upstreams") or []:
        problems += [f"upstreams[{item.get('id')}]: {p}" for p in _upstream(item, ssls)]
    for section in PLUGIN_HOLDERS:
        for index, item in enumerate(doc.get(section) or []):
            where = f"{section}[{item.get('id', item.get('username', index))}]"
            if section == "routes":
                problems += [f"{where}: {p}" for p in _route(item, doc)]
            for name, conf in (item.get("plugins") or {}).items():
                problems += [f"{where}/plugins/{name}: {p}" for p in _plugin(name, conf, section)]
    return problems


def _unresolved_secrets(doc: dict) -> list[str]:
    """A secret reference outside plugin configurations and `ssls` certificates reaches APISIX as its text."""
    problems = []
    for section, items in doc.items():
        if not isinstance(items, list):
            continue
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                continue
            where = f"{section}[{item.get('id', item.get('username', index))}]"
            for path, value in _strings(item):
                if not is_secret(value):
                    continue
                if section in PLUGIN_HOLDERS and path[0] == "plugins":
                    continue
                if section == "ssls" and path[0] in SSL_SECRET_FIELDS:
                    continue
                if section == "upstreams" and path[:2] in (("tls", "client_cert"), ("tls", "client_key")):
                    continue  # the upstream check reports it, as APISIX does (a PEM that does not parse)
                problems.append(f"{where}/{'/'.join(map(str, path))}: APISIX does not resolve the secret reference "
                                f"{value!r} here and would use the text itself; keep secrets in plugin "
                                "configurations or in an `ssls` object (e.g. tls.client_cert_id)")
    return problems


def _shared_global_plugins(doc: dict) -> list[str]:
    """plugin.lua `merge_global_rules`: a plugin configured in two global rules runs in neither (APISIX logs
    "configured across different global rules. Removing it from execution list")."""
    seen: dict[str, str] = {}
    problems = []
    for index, rule in enumerate(doc.get("global_rules") or []):
        rule_id = str(rule.get("id", index))
        for name in rule.get("plugins") or {}:
            if name in seen:
                problems.append(f"global_rules[{rule_id}]/plugins/{name}: also in global rule '{seen[name]}'; "
                                "APISIX then runs it in neither")
            else:
                seen[name] = rule_id
    return problems


def _strings(value, path: tuple = ()) -> Iterator[tuple[tuple, str]]:
    if isinstance(value, dict):
        for key, sub in value.items():
            yield from _strings(sub, (*path, key))
    elif isinstance(value, list):
        for index, sub in enumerate(value):
            yield from _strings(sub, (*path, index))
    elif isinstance(value, str):
        yield path, value


def _ssl(item: dict) -> list[str]:
    """ssl.lua `check_ssl_conf`: certificates are parsed unless a secret reference stands for them."""
    problems = []
    cert, key = item.get("cert"), item.get("key")
    if cert is not None and not is_secret(cert) and not is_secret(key):
        if problem := pem_problem(cert, key):
            problems.append(problem)
    if item.get("type", "server") == "client":
        return problems
    certs, keys = item.get("certs") or [], item.get("keys") or []
    if len(certs) != len(keys):
        problems.append("mismatched number of certs and keys")
    for index, (c, k) in enumerate(zip(certs, keys, strict=False), start=1):
        if not is_secret(c) and not is_secret(k) and (problem := pem_problem(c, k)):
            problems.append(f"failed to handle cert-key pair[{index}]: {problem}")
    ca = (item.get("client") or {}).get("ca")
    if ca is not None and not is_secret(ca) and (problem := pem_problem(ca)):
        problems.append(f"failed to validate client_cert: {problem}")
    return problems


def _upstream(item: dict, ssls: dict[str, dict]) -> list[str]:
    """upstream.lua `check_upstream_conf` (data plane), and what init.lua needs for `client_cert_id`."""
    problems = []
    if item.get("pass_host") == "rewrite" and not item.get("upstream_host"):
        problems.append("`upstream_host` can't be empty when `pass_host` is `rewrite`")
    tls = item.get("tls") or {}
    if tls.get("client_cert") is not None:
        # Parsed as it stands: a `$env://` reference here is not resolved (the upstream is rejected).
        if problem := pem_problem(tls["client_cert"], tls.get("client_key")):
            if is_secret(tls["client_cert"]) or is_secret(tls.get("client_key")):
                problem += ("; APISIX does not resolve secret references in an upstream's inline client "
                            "certificate: put them in an `ssls` object of type client and use tls.client_cert_id")
            problems.append(problem)
    if (cert_id := tls.get("client_cert_id")) is not None:
        ssl = ssls.get(str(cert_id))
        if ssl is None:
            problems.append(f"tls.client_cert_id: ssl id [{cert_id}] not exits (no such `ssls` object)")
        elif ssl.get("type", "server") != "client":
            problems.append(f"tls.client_cert_id: ssl [{cert_id}] type should be 'client'")
    if item.get("type") == "chash" and item.get("hash_on") != "consumer" and not item.get("key"):
        problems.append("missing key")
    return problems


def _route(item: dict, doc: dict) -> list[str]:
    """http/route.lua `check_route` (`vars`), and the references a request follows (init.lua)."""
    problems = []
    if "vars" in item and (problem := expr_problem(item["vars"])):
        problems.append(f"failed to validate the 'vars' expression: {problem}")
    ids = {section: {str(x.get("id")) for x in doc.get(section) or [] if isinstance(x, dict)}
           for section in ("upstreams", "plugin_configs", "services")}
    wanted = [("upstream_id", "upstreams"), ("plugin_config_id", "plugin_configs"), ("service_id", "services")]
    for field, section in wanted:
        if item.get(field) is not None and str(item[field]) not in ids[section]:
            problems.append(f"{field} '{item[field]}' is not defined in {section}")
    split = (item.get("plugins") or {}).get("traffic-split") or {}
    for rule in split.get("rules") or []:
        for weighted in rule.get("weighted_upstreams") or []:
            up = weighted.get("upstream_id")
            if up is not None and str(up) not in ids["upstreams"]:
                problems.append(f"plugins/traffic-split: upstream_id '{up}' is not defined in upstreams")
    return problems


def _plugin(name: str, conf: object, section: str) -> list[str]:
    """The `check_schema` code of the plugins the renderer uses, beyond their JSON schemas."""
    if not isinstance(conf, dict):
        return []
    problems = []
    if name == "proxy-rewrite" and conf.get("regex_uri"):
        pairs = conf["regex_uri"]
        if len(pairs) % 2:
            problems.append("The length of regex_uri should be an even number")
        for pattern in pairs[::2]:
            if is_secret(pattern):
                continue
            try:
                regex.compile(pattern)
            except regex.error as exc:
                problems.append(f"invalid regex_uri({pattern}): {exc}")
    if name == "fault-injection":
        for part in ("abort", "delay"):
            for rule in (conf.get(part) or {}).get("vars") or []:
                if problem := expr_problem(rule):
                    problems.append(f"{part}.vars: {problem}")
    if name == "response-rewrite" and "vars" in conf and (problem := expr_problem(conf["vars"])):
        problems.append(f"failed to validate the 'vars' expression: {problem}")
    if name == "traffic-split":
        for rule in conf.get("rules") or []:
            for match in rule.get("match") or []:
                if problem := expr_problem(match.get("vars", [])):
                    problems.append(f"failed to validate the 'vars' expression: {problem}")
    if name == "jwt-auth" and section == "consumers":
        algorithm = conf.get("algorithm", "HS256")
        if algorithm.startswith("HS") and not conf.get("secret"):
            problems.append('property "secret" is required when using HS based algorithms')
        if not algorithm.startswith("HS") and not conf.get("public_key"):
            problems.append("missing valid public key")
    return problems
