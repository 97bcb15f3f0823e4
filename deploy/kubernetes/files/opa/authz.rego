# FinOptiAgents gateway authorization.
#
# Entry points:
#   data.finopti.authz.decision  {"allow": bool, "reason": string, "status": 200 | 401 | 403}
#   data.finopti.authz.allow     bool
#   data.finopti.authz           for APISIX's `opa` plugin (`policy: finopti/authz`): `allow`, `reason`, `status_code`
#
# Input: the document APISIX's `opa` plugin sends (`request.{method,path,headers,...}`, `route.name`
# with `with_route`), plus an optional `finopti` object that the local gateway adds:
#   {"user": email | null, "groups": [..], "source": service | null, "route": name, "listener": "edge" | "mesh"}
# Where a `finopti` field is absent (APISIX), the value comes from the headers instead:
#   user <- x-user-email, groups <- x-user-groups (comma separated), source <- x-finopti-source,
#   route <- input.route.name, listener <- x-finopti-listener (optional).
#
# Data: data.finopti.roles and data.finopti.agents (data.json: roles of users and groups; each agent's
# actions with the roles that may run them) and data.finopti.routes (routes.json, generated from mesh.yaml).
# No route, action or role is named in this file: what may be done by whom is data.
#
# Written in Rego v1 syntax that both OPA 1.x and regorus accept: keep it to plain builtins.
package finopti.authz

import rego.v1

# ---------------------------------------------------------------- the request

fin := input.finopti if {
	is_object(input.finopti)
} else := {}

# Not named `headers`: APISIX would send a package-level `headers` back to the client.
request_headers := input.request.headers if {
	is_object(input.request.headers)
} else := {}

path := input.request.path if {
	is_string(input.request.path)
} else := ""

# A header as a string, "" when absent. A repeated header arrives from APISIX as an array:
# treated as absent, so an ambiguous identity never counts.
header(name) := v if {
	v := request_headers[name]
	is_string(v)
} else := ""

user := u if {
	u := object.get(fin, "user", header("x-user-email"))
	is_string(u)
	u != ""
} else := null

group_list := g if {
	g := object.get(fin, "groups", split(header("x-user-groups"), ","))
	is_array(g)
} else := []

groups := {trim_space(g) |
	some g in group_list
	is_string(g)
	trim_space(g) != ""
}

source := s if {
	s := object.get(fin, "source", header("x-finopti-source"))
	is_string(s)
	s != ""
} else := null

apisix_route := input.route.name if {
	is_string(input.route.name)
} else := null

route := r if {
	r := object.get(fin, "route", apisix_route)
	is_string(r)
	r != ""
} else := null

listener := l if {
	l := object.get(fin, "listener", header("x-finopti-listener"))
	is_string(l)
	l != ""
} else := null

route_info := data.finopti.routes[route]

# ---------------------------------------------------------------- roles

roles contains r if some r in data.finopti.roles.users[user]

roles contains r if {
	some g in groups
	some r in data.finopti.roles.groups[g]
}

# ---------------------------------------------------------------- what each route needs

# Routes anyone may use, even anonymous (the sign-in page): `auth: anonymous` in mesh.yaml.
public_routes := {name | some name, r in data.finopti.routes; r.auth == "anonymous"}

# `roles: ["*"]` in mesh.yaml: any role at all is enough (the agents behind check finer permissions).
any_role_routes := {name |
	some name, info in data.finopti.routes
	is_array(info.roles)
	"*" in info.roles
}

# Roles a route declares in mesh.yaml (`roles:`).
route_roles := {name: {r | some r in info.roles} |
	some name, info in data.finopti.routes
	is_array(info.roles)
	not "*" in info.roles
}

# A route to an agent (a backend listed in data.json's `agents`) is decided per action: the path must
# name one of the agent's actions right after the route's `actions_prefix`, and nothing more.
agent := data.finopti.agents[route_info.backend]

agent_route if agent

requested_action := name if {
	agent_route
	prefix := route_info.actions_prefix
	startswith(path, prefix)
	name := substring(path, count(prefix), -1)
	regex.match(`^[a-z][a-z0-9_]*$`, name)
}

action := requested_action if agent.actions[requested_action]

action_rule := agent.actions[action]

# An action's roles, narrowed by the route's own roles when it declares some.
action_roles := {r | some r in action_rule.roles} if not route_roles[route]

action_roles := {r | some r in action_rule.roles} & route_roles[route] if route_roles[route]

needed_roles := route_roles[route] if not agent_route

needed_roles := action_roles if action

granting_roles := roles if {
	route in any_role_routes
	not agent_route
}

granting_roles := roles & needed_roles if {
	not route in any_role_routes
	not agent_route
}

granting_roles := roles & needed_roles if agent_route

# ---------------------------------------------------------------- sentences

activity := sprintf("run %s on %s", [action, route_info.backend]) if action

activity := sprintf("call route '%s'", [route]) if not action

role_phrase := sprintf("role %s", [r]) if {
	count(needed_roles) == 1
	some r in needed_roles
} else := sprintf("one of the roles %s", [concat(", ", sort([r | some r in needed_roles]))])

# Mesh routes: the calling service (from its SPIFFE id) must be known, and one the route lists in
# allowed_callers; a route without allowed_callers takes any mesh service (as mesh.yaml defines it).
caller_denied if {
	route_info.listener == "mesh"
	source == null
}

caller_denied if {
	route_info.listener == "mesh"
	callers := object.get(route_info, "allowed_callers", null)
	callers != null
	not source in callers
}

caller := sprintf("service '%s'", [source]) if {
	source != null
} else := "an unidentified caller (no client certificate)"

# ---------------------------------------------------------------- the decision

grant := sprintf("route '%s' is public", [route]) if route in public_routes

grant := sprintf("user %s may %s with role %s", [user, activity, roles_text]) if {
	not route in public_routes
	user != null
	count(granting_roles) > 0
	roles_text := concat(", ", sort([r | some r in granting_roles]))
}

# The first reason that applies wins, so a caller is told the most basic problem first.
denial := {"status": 403, "reason": msg} if {
	not route_info
	route == null
	msg := sprintf("no route matches path '%s'", [path])
} else := {"status": 403, "reason": msg} if {
	not route_info
	msg := sprintf("route '%s' is not known to the policy", [route])
} else := {"status": 403, "reason": msg} if {
	listener != null
	listener != route_info.listener
	msg := sprintf("route '%s' is not served on the %s listener", [route, listener])
} else := {"status": 403, "reason": msg} if {
	caller_denied
	msg := sprintf("%s may not call route '%s'", [caller, route])
} else := {"status": 401, "reason": msg} if {
	not route in public_routes
	user == null
	msg := sprintf("sign-in required to call route '%s'", [route])
} else := {"status": 403, "reason": msg} if {
	not route in public_routes
	count(roles) == 0
	msg := sprintf("user %s has no role", [user])
} else := {"status": 403, "reason": msg} if {
	agent_route
	not action
	msg := sprintf("'%s' is not a known %s action", [path, route_info.backend])
} else := {"status": 403, "reason": msg} if {
	not grant
	needed_roles
	msg := sprintf("user %s needs %s to %s", [user, role_phrase, activity])
} else := {"status": 403, "reason": msg} if {
	not grant
	msg := sprintf("no rule allows %s", [activity])
}

default decision := {"allow": false, "status": 403, "reason": "denied by default"}

decision := {"allow": false, "status": denial.status, "reason": denial.reason} if denial

decision := {"allow": true, "status": 200, "reason": grant} if not denial

default allow := false

allow := decision.allow

# For APISIX's `opa` plugin with `policy: finopti/authz`: it reads `allow`, and on a deny answers
# with `status_code` and `reason`.
reason := decision.reason

status_code := decision.status
