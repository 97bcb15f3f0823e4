# Unit tests for finopti.authz, run by `finopti policy test` (and by `opa test policies/`).
# They use the real role and route data (data.json, routes.json), so a data change that breaks
# the access matrix fails here.
package finopti.authz_test

import data.finopti.authz
import rego.v1

agent_path := "/gcloud-agent/v1/actions/"

# Input as the local gateway builds it: APISIX's shape plus the `finopti` object.
local(user, groups, route, path, listener, source) := {
	"type": "http",
	"request": {"method": "POST", "path": path, "headers": {}},
	"finopti": {"user": user, "groups": groups, "source": source, "route": route, "listener": listener},
}

edge(user, route, path) := local(user, [], route, path, "edge", null)

mesh(user, source, route, path) := local(user, [], route, path, "mesh", source)

# Input as APISIX's `opa` plugin sends it: no `finopti`, identity in headers, route from with_route.
apisix(user, groups, source, route, path) := {
	"type": "http",
	"request": {
		"method": "POST", "path": path, "scheme": "https", "host": "finopti.local", "port": 9443,
		"query": {}, "headers": {"x-user-email": user, "x-user-groups": groups, "x-finopti-source": source},
	},
	"var": {"remote_addr": "10.0.0.7"},
	"route": {"name": route},
}

test_sign_in_page_is_public if {
	d := authz.decision with input as edge(null, "ui", "/")
	d == {"allow": true, "status": 200, "reason": "route 'ui' is public"}
}

test_anonymous_ask_needs_sign_in if {
	d := authz.decision with input as edge(null, "ask", "/api/ask")
	d.allow == false
	d.status == 401
}

test_viewer_may_ask if {
	authz.allow with input as edge("bob@finopti.dev", "ask", "/api/ask")
}

test_user_without_role_may_not_ask if {
	d := authz.decision with input as edge("dave@finopti.dev", "ask", "/api/ask")
	d.status == 403
	d.reason == "user dave@finopti.dev has no role"
}

test_viewer_may_list_instances if {
	authz.allow with input as mesh("bob@finopti.dev", "orchestrator", "gcloud-agent", concat("", [agent_path, "list_instances"]))
}

test_viewer_may_not_stop_instance if {
	d := authz.decision with input as mesh("bob@finopti.dev", "orchestrator", "gcloud-agent", concat("", [agent_path, "stop_instance"]))
	d.status == 403
	contains(d.reason, "bob@finopti.dev")
	contains(d.reason, "gcloud_admin")
	contains(d.reason, "stop_instance")
}

test_admin_may_stop_instance if {
	authz.allow with input as mesh("alice@finopti.dev", "orchestrator", "gcloud-agent", concat("", [agent_path, "stop_instance"]))
}

gcloud_actions := data.finopti.agents["gcloud-agent"].actions

read_actions := {a | some a, rule in gcloud_actions; not rule.mutates}

write_actions := {a | some a, rule in gcloud_actions; rule.mutates}

test_every_read_action_for_viewer_and_admin if {
	count(read_actions) > 3
	every a in read_actions {
		every u in ["bob@finopti.dev", "alice@finopti.dev"] {
			authz.allow with input as mesh(u, "orchestrator", "gcloud-agent", concat("", [agent_path, a]))
		}
	}
}

# The groups of data.json that grant a role.
groups_granting[r] := {g | some g, rs in data.finopti.roles.groups; r in rs} if some r in data.finopti.roles.groups[_]

test_every_mutating_action_needs_one_of_its_roles if {
	count(write_actions) > 1
	every a in write_actions {
		not authz.allow with input as mesh("bob@finopti.dev", "orchestrator", "gcloud-agent", concat("", [agent_path, a]))
		every r in gcloud_actions[a].roles {
			authz.allow with input as local("someone@finopti.dev", [g | some g in groups_granting[r]], "gcloud-agent", concat("", [agent_path, a]), "mesh", "orchestrator")
		}
	}
}

test_instance_changes_need_gcloud_admin if {
	authz.allow with input as mesh("alice@finopti.dev", "orchestrator", "gcloud-agent", concat("", [agent_path, "stop_instance"]))
	not authz.allow with input as mesh("fiona@finopti.dev", "orchestrator", "gcloud-agent", concat("", [agent_path, "stop_instance"]))
}

test_budgets_are_created_by_finops_admins_only if {
	authz.allow with input as mesh("fiona@finopti.dev", "orchestrator", "gcloud-agent", concat("", [agent_path, "create_budget"]))
	d := authz.decision with input as mesh("alice@finopti.dev", "orchestrator", "gcloud-agent", concat("", [agent_path, "create_budget"]))
	d.status == 403
	contains(d.reason, "finops_admin")
	not authz.allow with input as mesh("bob@finopti.dev", "orchestrator", "gcloud-agent", concat("", [agent_path, "delete_budget"]))
	authz.allow with input as mesh("fiona@finopti.dev", "gcloud-agent", "gcloud-tools", "/gcloud-tools/mcp")
}

test_costs_are_for_finops_roles_not_observability if {
	every u in ["bob@finopti.dev", "alice@finopti.dev", "fiona@finopti.dev"] {
		authz.allow with input as mesh(u, "orchestrator", "gcloud-agent", concat("", [agent_path, "cost_report"]))
	}
	d := authz.decision with input as mesh("carol@finopti.dev", "orchestrator", "gcloud-agent", concat("", [agent_path, "forecast_costs"]))
	d.status == 403
	contains(d.reason, "forecast_costs")
}

test_unknown_action_is_denied if {
	d := authz.decision with input as mesh("alice@finopti.dev", "orchestrator", "gcloud-agent", concat("", [agent_path, "drop_database"]))
	d.status == 403
	not authz.allow with input as mesh("alice@finopti.dev", "orchestrator", "gcloud-agent", "/gcloud-agent/v1/actions/list_instances/../delete_instance")
}

test_wrong_caller_is_named if {
	d := authz.decision with input as mesh("alice@finopti.dev", "gcloud-agent", "orchestrator", "/orchestrator/v1/ask")
	d.status == 403
	d.reason == "service 'gcloud-agent' may not call route 'orchestrator'"
}

test_mesh_call_without_source_is_denied if {
	d := authz.decision with input as mesh("alice@finopti.dev", null, "orchestrator", "/orchestrator/v1/ask")
	d.status == 403
}

test_route_without_allowed_callers_takes_any_mesh_service if {
	routes := {"audit": {"listener": "mesh", "path_prefix": "/audit/"}}
	authz.allow with input as mesh("alice@finopti.dev", "cli", "audit", "/audit/x")
		with data.finopti.routes as routes
		with data.finopti.authz.route_roles as {"audit": {"gcloud_admin"}}
	authz.allow with input as mesh("alice@finopti.dev", "cli", "audit", "/audit/x")
		with data.finopti.routes as {"audit": {"listener": "mesh", "path_prefix": "/audit/", "roles": ["gcloud_admin"]}}
	d := authz.decision with input as mesh("alice@finopti.dev", null, "audit", "/audit/x")
		with data.finopti.routes as routes
	d.status == 403
	contains(d.reason, "unidentified caller")
}

test_mesh_routes_check_callers_before_users if {
	# Anonymous, and from the wrong service: the caller problem is reported.
	d := authz.decision with input as mesh(null, "ui", "gcloud-tools", "/gcloud-tools/mcp")
	d.status == 403
	contains(d.reason, "service 'ui'")
}

test_gcloud_tools_for_admin_and_viewer_only if {
	authz.allow with input as mesh("alice@finopti.dev", "gcloud-agent", "gcloud-tools", "/gcloud-tools/mcp")
	authz.allow with input as mesh("bob@finopti.dev", "gcloud-agent", "gcloud-tools", "/gcloud-tools/mcp")
	not authz.allow with input as mesh("carol@finopti.dev", "gcloud-agent", "gcloud-tools", "/gcloud-tools/mcp")
}

test_observability_routes_need_observability_admin if {
	authz.allow with input as mesh("carol@finopti.dev", "orchestrator", "monitoring-agent", "/monitoring-agent/v1/actions/query_time_series")
	authz.allow with input as mesh("carol@finopti.dev", "monitoring-agent", "monitoring-tools", "/monitoring-tools/mcp")
	authz.allow with input as mesh("carol@finopti.dev", "cli", "logstore", "/logstore/v1/query")
	authz.allow with input as mesh("carol@finopti.dev", "ui", "logstore", "/logstore/v1/query")
	d := authz.decision with input as mesh("alice@finopti.dev", "orchestrator", "monitoring-agent", "/monitoring-agent/v1/actions/list_metrics")
	d.status == 403
	contains(d.reason, "observability_admin")
}

test_erin_holds_both_admin_roles if {
	authz.allow with input as mesh("erin@finopti.dev", "orchestrator", "gcloud-agent", concat("", [agent_path, "delete_instance"]))
	authz.allow with input as mesh("erin@finopti.dev", "cli", "logstore", "/logstore/v1/query")
}

test_user_without_role_is_denied_everywhere if {
	guarded := {name: r | some name, r in data.finopti.routes; not name in authz.public_routes}
	count(guarded) > 5
	every name, r in guarded {
		# Called from a service the route accepts, so only the user's missing role can deny.
		src := object.get(r, "allowed_callers", [null])[0]
		d := authz.decision with input as local("dave@finopti.dev", [], name, r.path_prefix, r.listener, src)
		d.reason == "user dave@finopti.dev has no role"
		d.status == 403
	}
}

test_roles_from_groups if {
	authz.allow with input as local("x@corp.example", ["sre"], "monitoring-tools", "/monitoring-tools/mcp", "mesh", "monitoring-agent")
	not authz.allow with input as local("x@corp.example", ["finops-viewers"], "monitoring-tools", "/monitoring-tools/mcp", "mesh", "monitoring-agent")
}

test_mesh_route_not_served_on_edge if {
	d := authz.decision with input as edge("erin@finopti.dev", "logstore", "/logstore/v1/query")
	d.status == 403
}

test_unknown_route_is_denied if {
	d := authz.decision with input as edge("alice@finopti.dev", "admin", "/admin")
	d.allow == false
	d.status == 403
}

test_apisix_shape_gives_same_decisions if {
	authz.allow with input as apisix("bob@finopti.dev", "", "orchestrator", "gcloud-agent", concat("", [agent_path, "list_instances"]))
	d := authz.decision with input as apisix("bob@finopti.dev", "", "orchestrator", "gcloud-agent", concat("", [agent_path, "stop_instance"]))
	d == authz.decision with input as mesh("bob@finopti.dev", "orchestrator", "gcloud-agent", concat("", [agent_path, "stop_instance"]))
	w := authz.decision with input as apisix("alice@finopti.dev", "", "gcloud-agent", "orchestrator", "/orchestrator/v1/ask")
	w.reason == "service 'gcloud-agent' may not call route 'orchestrator'"
	authz.allow with input as apisix("x@corp.example", "finops-viewers, sre", "monitoring-agent", "monitoring-tools", "/m")
}

test_apisix_anonymous_ask_needs_sign_in if {
	d := authz.decision with input as {"request": {"path": "/api/ask", "headers": {}}, "route": {"name": "ask"}}
	d.status == 401
}

test_repeated_identity_header_is_ignored if {
	inp := {"request": {"path": "/api/ask", "headers": {"x-user-email": ["alice@finopti.dev", "dave@finopti.dev"]}}, "route": {"name": "ask"}}
	d := authz.decision with input as inp
	d.status == 401
}

test_apisix_package_document_is_a_custom_response if {
	# APISIX configured with `policy: finopti/authz` reads allow, status_code and reason.
	doc := authz with input as apisix(null, "", null, "ask", "/api/ask")
	doc.allow == false
	doc.status_code == 401
	doc.reason == "sign-in required to call route 'ask'"
	not doc.headers
}

# ---------------------------------------------------------------- what may be done by whom is data

# Every agent action of data.json, for every user of data.json: allowed exactly when the user holds one
# of the action's roles. The Rego names no action, so this holds for actions added later too.
test_every_action_follows_its_roles_in_data if {
	every agent_name, agent in data.finopti.agents {
		route_name := agent_route_name(agent_name)
		r := data.finopti.routes[route_name]
		every action_name, rule in agent.actions {
			every user, user_roles in data.finopti.roles.users {
				d := authz.decision with input as mesh(user, r.allowed_callers[0], route_name, concat("", [r.actions_prefix, action_name]))
				d.allow == (count({x | some x in user_roles; x in rule.roles}) > 0)
			}
		}
	}
}

agent_route_name(agent_name) := name if {
	some name, r in data.finopti.routes
	r.backend == agent_name
	r.actions_prefix
}

test_an_action_added_to_data_needs_no_rego_change if {
	agents := object.union(data.finopti.agents, {"gcloud-agent": {"actions": object.union(gcloud_actions, {
		"forecast_cost": {"roles": ["finops_viewer"], "mutates": false},
	})}})
	authz.allow with input as mesh("bob@finopti.dev", "orchestrator", "gcloud-agent", concat("", [agent_path, "forecast_cost"]))
		with data.finopti.agents as agents
	d := authz.decision with input as mesh("alice@finopti.dev", "orchestrator", "gcloud-agent", concat("", [agent_path, "forecast_cost"]))
		with data.finopti.agents as agents
	d.status == 403
	d.reason == "user alice@finopti.dev needs role finops_viewer to run forecast_cost on gcloud-agent"
}

test_an_agent_route_takes_only_action_paths if {
	every p in [
		"/gcloud-agent/v1/actions",
		"/gcloud-agent/v1/actions/",
		"/gcloud-agent/v1/actions/list_instances/extra",
		"/gcloud-agent/v1/actions/List_instances",
		"/gcloud-agent/healthz",
	] {
		d := authz.decision with input as mesh("erin@finopti.dev", "orchestrator", "gcloud-agent", p)
		d.status == 403
		d.reason == sprintf("'%s' is not a known gcloud-agent action", [p])
	}
	d := authz.decision with input as mesh("erin@finopti.dev", "orchestrator", "monitoring-agent", "/monitoring-agent/v1/ask")
	d.reason == "'/monitoring-agent/v1/ask' is not a known monitoring-agent action"
}

test_route_roles_narrow_an_agent_route if {
	routes := object.union(data.finopti.routes, {"gcloud-agent": object.union(data.finopti.routes["gcloud-agent"], {"roles": ["gcloud_admin"]})})
	authz.allow with input as mesh("alice@finopti.dev", "orchestrator", "gcloud-agent", concat("", [agent_path, "list_instances"]))
		with data.finopti.routes as routes
	d := authz.decision with input as mesh("bob@finopti.dev", "orchestrator", "gcloud-agent", concat("", [agent_path, "list_instances"]))
		with data.finopti.routes as routes
	d.status == 403
	d.reason == "user bob@finopti.dev needs role gcloud_admin to run list_instances on gcloud-agent"
}

test_actions_prefix_comes_from_the_route_table if {
	# A route that keeps the path (no rewrite): the actions sit at /v1/actions/ on the gateway too.
	routes := {"direct": {"listener": "mesh", "path_prefix": "/v1/", "backend": "gcloud-agent", "actions_prefix": "/v1/actions/"}}
	authz.allow with input as mesh("bob@finopti.dev", "orchestrator", "direct", "/v1/actions/list_disks")
		with data.finopti.routes as routes
	not authz.allow with input as mesh("bob@finopti.dev", "orchestrator", "direct", concat("", [agent_path, "list_disks"]))
		with data.finopti.routes as routes
}

test_any_role_routes_come_from_the_route_table if {
	routes := {"open": {"listener": "edge", "path_prefix": "/open/", "backend": "ui", "roles": ["*"]}}
	authz.allow with input as edge("bob@finopti.dev", "open", "/open/x") with data.finopti.routes as routes
	authz.allow with input as edge("carol@finopti.dev", "open", "/open/x") with data.finopti.routes as routes
	d := authz.decision with input as edge("dave@finopti.dev", "open", "/open/x") with data.finopti.routes as routes
	d.reason == "user dave@finopti.dev has no role"
}

test_a_route_without_roles_is_closed_to_users if {
	routes := {"closed": {"listener": "edge", "path_prefix": "/closed/", "backend": "ui"}}
	d := authz.decision with input as edge("erin@finopti.dev", "closed", "/closed/x") with data.finopti.routes as routes
	d.status == 403
	d.reason == "no rule allows call route 'closed'"
}
