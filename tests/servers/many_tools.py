#!/usr/bin/env python3
"""many_tools: a stdio MCP server listing N generated, realistic tools (standard library only).

`many_tools.py [COUNT]` (default 1000) speaks the 2025-11-25 handshake: initialize, ping,
tools/list (every tool in one page), tools/call. A call answers, as JSON text, the name the server
was called with and the arguments it received, so a test can assert on what the backend saw.

`generate(count)` is what it lists: the same tools on every run (seeded), named and described the
way SaaS and infrastructure servers are (`stripe_refund_charge`, `jira_transition_issue`, ...),
across some forty products; the tool search benchmark (`tests/bench/search.py`) ranks over them.
Past the products' own tools, regional copies (`..._eu`, `..._apac`) make up the count.
"""

# ruff: noqa: E501 - the products' table reads best one entity to a line

from __future__ import annotations

import json
import random
import sys
from typing import Any

# product, what it is, its entities: (singular, plural, [(argument, type, description)])
Field = tuple[str, str, str]
Entity = tuple[str, str, list[Field]]
_PRODUCTS: list[tuple[str, str, list[Entity]]] = [
    ("stripe", "payments", [
        ("customer", "customers", [("email", "string", "Billing email address"), ("name", "string", "Full name")]),
        ("charge", "charges", [("amount", "integer", "Amount in cents"), ("currency", "string", "ISO currency code")]),
        ("subscription", "subscriptions", [("price_id", "string", "Price to subscribe to"),
                                           ("customer_id", "string", "Paying customer")]),
    ]),
    ("paypal", "online payments", [
        ("payout", "payouts", [("receiver", "string", "Recipient email"), ("amount", "number", "Amount to send")]),
        ("dispute", "disputes", [("reason", "string", "Why the buyer disputes the payment")]),
    ]),
    ("quickbooks", "accounting", [
        ("invoice", "invoices", [("customer_id", "string", "Customer billed"), ("due_date", "string", "Due date")]),
        ("expense", "expenses", [("amount", "number", "Amount spent"), ("category", "string", "Expense category")]),
        ("vendor", "vendors", [("display_name", "string", "Vendor name")]),
    ]),
    ("salesforce", "CRM", [
        ("lead", "leads", [("company", "string", "Lead's company"), ("status", "string", "Lead status")]),
        ("opportunity", "opportunities", [("stage", "string", "Sales stage"), ("amount", "number", "Deal size")]),
        ("account", "accounts", [("industry", "string", "Industry of the account")]),
    ]),
    ("hubspot", "marketing automation", [
        ("contact", "contacts", [("email", "string", "Contact email"), ("lifecycle_stage", "string", "Stage")]),
        ("deal", "deals", [("pipeline", "string", "Sales pipeline"), ("amount", "number", "Deal amount")]),
        ("campaign", "campaigns", [("subject", "string", "Email subject line")]),
    ]),
    ("zendesk", "customer support", [
        ("ticket", "tickets", [("subject", "string", "Ticket subject"), ("priority", "string", "low|normal|high")]),
        ("macro", "macros", [("title", "string", "Macro title")]),
    ]),
    ("intercom", "customer messaging", [
        ("conversation", "conversations", [("body", "string", "Message body")]),
        ("article", "articles", [("title", "string", "Help center article title")]),
    ]),
    ("jira", "issue tracking", [
        ("issue", "issues", [("project_key", "string", "Project key"), ("summary", "string", "One-line summary")]),
        ("sprint", "sprints", [("board_id", "integer", "Agile board"), ("goal", "string", "Sprint goal")]),
        ("project", "projects", [("key", "string", "Project key"), ("lead", "string", "Project lead")]),
    ]),
    ("linear", "product issue tracking", [
        ("issue", "issues", [("team_id", "string", "Team"), ("title", "string", "Issue title")]),
        ("cycle", "cycles", [("team_id", "string", "Team"), ("starts_at", "string", "Start date")]),
    ]),
    ("github", "code hosting", [
        ("repository", "repositories", [("owner", "string", "Owner login"), ("repo", "string", "Repository name")]),
        ("pull_request", "pull requests", [("head", "string", "Source branch"), ("base", "string", "Target branch")]),
        ("release", "releases", [("tag_name", "string", "Git tag"), ("body", "string", "Release notes")]),
        ("workflow_run", "workflow runs", [("workflow_id", "string", "Actions workflow")]),
    ]),
    ("gitlab", "DevOps platform", [
        ("merge_request", "merge requests", [("source_branch", "string", "Branch to merge")]),
        ("pipeline", "pipelines", [("ref", "string", "Branch or tag to build")]),
    ]),
    ("slack", "team chat", [
        ("channel", "channels", [("name", "string", "Channel name"), ("is_private", "boolean", "Private channel")]),
        ("message", "messages", [("channel", "string", "Channel id"), ("text", "string", "Message text")]),
        ("user_group", "user groups", [("handle", "string", "Mention handle")]),
    ]),
    ("teams", "Microsoft Teams chat and meetings", [
        ("chat", "chats", [("topic", "string", "Chat topic")]),
        ("meeting", "meetings", [("subject", "string", "Meeting subject"), ("start", "string", "Start time")]),
    ]),
    ("gmail", "email", [
        ("email", "emails", [("to", "string", "Recipient address"), ("subject", "string", "Subject line")]),
        ("label", "labels", [("name", "string", "Label name")]),
        ("draft", "drafts", [("to", "string", "Recipient"), ("body", "string", "Draft body")]),
    ]),
    ("google_calendar", "calendar", [
        ("event", "events", [("summary", "string", "Event title"), ("start", "string", "Start time (RFC 3339)")]),
        ("calendar", "calendars", [("time_zone", "string", "Calendar time zone")]),
    ]),
    ("google_drive", "cloud file storage", [
        ("document", "documents", [("title", "string", "Document title"), ("folder_id", "string", "Parent folder")]),
        ("folder", "folders", [("name", "string", "Folder name")]),
        ("permission", "permissions", [("role", "string", "reader|writer|owner"), ("email", "string", "Grantee")]),
    ]),
    ("notion", "notes and wiki", [
        ("page", "pages", [("parent_id", "string", "Parent page"), ("title", "string", "Page title")]),
        ("database", "databases", [("title", "string", "Database title")]),
    ]),
    ("confluence", "team wiki", [
        ("space", "spaces", [("key", "string", "Space key")]),
        ("wiki_page", "wiki pages", [("space_key", "string", "Space"), ("title", "string", "Page title")]),
    ]),
    ("aws_s3", "object storage", [
        ("bucket", "buckets", [("bucket", "string", "Bucket name"), ("region", "string", "AWS region")]),
        ("object", "objects", [("bucket", "string", "Bucket"), ("key", "string", "Object key")]),
    ]),
    ("aws_ec2", "virtual machines", [
        ("instance", "instances", [("instance_type", "string", "e.g. t3.micro"), ("image_id", "string", "AMI")]),
        ("security_group", "security groups", [("group_name", "string", "Group name")]),
        ("volume", "volumes", [("size_gb", "integer", "Size in GiB")]),
    ]),
    ("aws_lambda", "serverless functions", [
        ("function", "functions", [("function_name", "string", "Function name"), ("runtime", "string", "Runtime")]),
    ]),
    ("kubernetes", "container orchestration", [
        ("pod", "pods", [("namespace", "string", "Namespace"), ("name", "string", "Pod name")]),
        ("deployment", "deployments", [("namespace", "string", "Namespace"), ("replicas", "integer", "Replicas")]),
        ("service", "services", [("namespace", "string", "Namespace"), ("port", "integer", "Service port")]),
        ("config_map", "config maps", [("namespace", "string", "Namespace")]),
    ]),
    ("docker_hub", "container images", [
        ("image", "images", [("repository", "string", "Image repository"), ("tag", "string", "Image tag")]),
    ]),
    ("postgres", "relational database", [
        ("table", "tables", [("schema", "string", "Schema name"), ("table", "string", "Table name")]),
        ("index", "indexes", [("table", "string", "Table"), ("columns", "array", "Indexed columns")]),
        ("role", "roles", [("role_name", "string", "Database role")]),
    ]),
    ("mongodb", "document database", [
        ("collection", "collections", [("database", "string", "Database"), ("collection", "string", "Name")]),
        ("document_record", "documents", [("filter", "object", "Query filter")]),
    ]),
    ("redis_cloud", "key-value cache", [
        ("key", "keys", [("key", "string", "Key"), ("ttl_seconds", "integer", "Time to live")]),
    ]),
    ("snowflake", "data warehouse", [
        ("warehouse", "warehouses", [("size", "string", "XSMALL..X4LARGE")]),
        ("query", "queries", [("sql", "string", "SQL text")]),
    ]),
    ("datadog", "monitoring", [
        ("monitor", "monitors", [("query", "string", "Monitor query"), ("threshold", "number", "Alert threshold")]),
        ("dashboard", "dashboards", [("title", "string", "Dashboard title")]),
        ("metric", "metrics", [("metric", "string", "Metric name"), ("from_ts", "integer", "Start (epoch s)")]),
    ]),
    ("pagerduty", "incident response", [
        ("incident", "incidents", [("service_id", "string", "Affected service"), ("urgency", "string", "high|low")]),
        ("on_call_schedule", "on-call schedules", [("time_zone", "string", "Schedule time zone")]),
    ]),
    ("sentry", "error tracking", [
        ("issue_event", "error events", [("project", "string", "Project slug")]),
        ("alert_rule", "alert rules", [("project", "string", "Project slug")]),
    ]),
    ("cloudflare", "DNS and CDN", [
        ("dns_record", "DNS records", [("zone_id", "string", "Zone"), ("type", "string", "A, AAAA, CNAME, TXT")]),
        ("firewall_rule", "firewall rules", [("expression", "string", "Filter expression")]),
    ]),
    ("twilio", "SMS and voice", [
        ("sms", "SMS messages", [("to", "string", "Phone number (E.164)"), ("body", "string", "Text")]),
        ("call_log", "phone calls", [("to", "string", "Phone number"), ("from_number", "string", "Caller id")]),
    ]),
    ("sendgrid", "transactional email", [
        ("template", "email templates", [("name", "string", "Template name")]),
        ("suppression", "suppressions", [("email", "string", "Suppressed address")]),
    ]),
    ("shopify", "e-commerce", [
        ("product", "products", [("title", "string", "Product title"), ("price", "number", "Price")]),
        ("order", "orders", [("customer_id", "string", "Customer"), ("line_items", "array", "Items bought")]),
        ("inventory_level", "inventory levels", [("location_id", "string", "Warehouse location")]),
    ]),
    ("shippo", "shipping", [
        ("shipment", "shipments", [("address_to", "object", "Destination address")]),
        ("label_purchase", "shipping labels", [("rate_id", "string", "Carrier rate")]),
    ]),
    ("workday", "HR", [
        ("employee", "employees", [("employee_id", "string", "Employee id"), ("department", "string", "Dept")]),
        ("time_off_request", "time off requests", [("start_date", "string", "First day"),
                                                   ("end_date", "string", "Last day")]),
    ]),
    ("greenhouse", "recruiting", [
        ("candidate", "candidates", [("first_name", "string", "First name"), ("last_name", "string", "Last name")]),
        ("job_posting", "job postings", [("title", "string", "Job title")]),
    ]),
    ("google_analytics", "web analytics", [
        ("report", "reports", [("property_id", "string", "GA4 property"), ("date_range", "string", "Date range")]),
        ("audience", "audiences", [("name", "string", "Audience name")]),
    ]),
    ("figma", "design", [
        ("design_file", "design files", [("file_key", "string", "File key")]),
        ("comment", "comments", [("file_key", "string", "File key"), ("message", "string", "Comment text")]),
    ]),
    ("openweather", "weather data", [
        ("forecast", "forecasts", [("city", "string", "City name"), ("days", "integer", "Days ahead")]),
    ]),
    ("deepl", "machine translation", [
        ("glossary", "glossaries", [("source_lang", "string", "Source language"), ("target_lang", "string", "Target")]),
    ]),
    ("okta", "identity and access", [
        ("user_account", "user accounts", [("login", "string", "Login"), ("email", "string", "Email")]),
        ("group", "groups", [("name", "string", "Group name")]),
    ]),
]  # fmt: skip

# Verbs every entity has: name pattern, description phrasings (seeded choice), extra arguments.
_CRUD: list[tuple[str, list[str]]] = [
    (
        "list_{plural_id}",
        [
            "List {plural} in {product} ({area}), newest first, with paging.",
            "Return a page of {plural} from {product}, optionally filtered.",
        ],
    ),
    (
        "get_{entity_id}",
        [
            "Fetch one {entity} from {product} by its id, with all its fields.",
            "Retrieve the details of a single {product} {entity}.",
        ],
    ),
    (
        "create_{entity_id}",
        [
            "Create a new {entity} in {product} ({area}); returns it with its id.",
            "Add a {entity} to {product}.",
        ],
    ),
    (
        "update_{entity_id}",
        [
            "Change fields of an existing {product} {entity}; fields not given are kept.",
            "Edit a {entity} in {product}.",
        ],
    ),
    (
        "delete_{entity_id}",
        [
            "Delete a {entity} from {product} permanently.",
            "Remove a {product} {entity}; this cannot be undone.",
        ],
    ),
    (
        "search_{plural_id}",
        [
            "Search {product} {plural} by keywords and filters.",
            "Full-text search over {plural} in {product}.",
        ],
    ),
    (
        "archive_{entity_id}",
        [
            "Archive a {product} {entity}: hidden from lists, kept for records, restorable.",
            "Move a {entity} to the {product} archive.",
        ],
    ),
    (
        "export_{plural_id}",
        [
            "Export {product} {plural} as CSV or JSON for a date range.",
            "Download all {plural} of {product} ({area}) as a file.",
        ],
    ),
]

# Actions only some entities have: (entity id, name, description).
_SPECIAL: list[tuple[str, str, str]] = [
    ("charge", "refund_charge", "Refund a charge, fully or partly, back to the customer's card."),
    ("charge", "capture_charge", "Capture an authorized charge so the money is actually collected."),
    ("subscription", "cancel_subscription", "Cancel a customer's subscription at period end or at once."),
    ("payout", "send_payout", "Send money to a recipient's account."),
    ("dispute", "respond_to_dispute", "Submit evidence to contest a chargeback dispute."),
    ("invoice", "send_invoice", "Email an invoice to the customer it bills."),
    ("invoice", "mark_invoice_paid", "Record a payment against an invoice, marking it paid."),
    ("lead", "convert_lead", "Convert a qualified lead into an account, contact and opportunity."),
    ("campaign", "send_campaign", "Send a marketing email campaign to its list."),
    ("ticket", "assign_ticket", "Assign a support ticket to an agent or group."),
    ("ticket", "add_ticket_comment", "Reply to a customer or add an internal note on a ticket."),
    ("conversation", "close_conversation", "Close a customer conversation in the inbox."),
    ("issue", "transition_issue", "Move an issue to another workflow status (e.g. In Progress, Done)."),
    ("issue", "assign_issue", "Assign an issue to a user."),
    ("issue", "add_issue_comment", "Add a comment to an issue."),
    ("sprint", "start_sprint", "Start a planned sprint on a board."),
    ("pull_request", "merge_pull_request", "Merge a pull request into its base branch."),
    ("pull_request", "request_review", "Request reviewers on a pull request."),
    ("workflow_run", "rerun_workflow", "Re-run a failed GitHub Actions workflow run."),
    ("merge_request", "approve_merge_request", "Approve a merge request."),
    ("pipeline", "retry_pipeline", "Retry the failed jobs of a CI pipeline."),
    ("message", "post_message", "Post a message to a channel or thread."),
    ("message", "add_reaction", "Add an emoji reaction to a message."),
    ("channel", "invite_to_channel", "Invite users to a channel."),
    ("meeting", "schedule_meeting", "Schedule an online meeting and send invitations."),
    ("email", "send_email", "Send an email message to one or more recipients."),
    ("email", "reply_to_email", "Reply to an email thread."),
    ("event", "find_free_time", "Find time slots when all attendees are free."),
    ("document", "export_document_pdf", "Export a document as a PDF file."),
    ("permission", "share_file", "Share a file or folder with a person by email."),
    ("page", "append_page_content", "Append blocks of text to the end of a page."),
    ("object", "generate_presigned_url", "Create a temporary download link for an object."),
    ("object", "upload_object", "Upload a file's bytes as an object into a bucket."),
    ("instance", "start_instance", "Start a stopped virtual machine instance."),
    ("instance", "stop_instance", "Stop a running virtual machine instance."),
    ("instance", "reboot_instance", "Reboot a virtual machine instance."),
    ("volume", "snapshot_volume", "Take a point-in-time snapshot of a disk volume."),
    ("function", "invoke_function", "Invoke a serverless function with a JSON payload."),
    ("pod", "get_pod_logs", "Read the container logs of a pod."),
    ("pod", "exec_in_pod", "Run a command inside a pod's container."),
    ("deployment", "scale_deployment", "Change the number of replicas of a deployment."),
    ("deployment", "restart_deployment", "Rolling-restart every pod of a deployment."),
    ("deployment", "rollback_deployment", "Roll a deployment back to its previous revision."),
    ("image", "list_image_tags", "List the tags pushed for an image repository."),
    ("table", "run_sql_query", "Run a read-only SQL query and return the rows."),
    ("table", "describe_table", "Show a table's columns, types and constraints."),
    ("role", "grant_privileges", "Grant table privileges to a database role."),
    ("collection", "aggregate_documents", "Run an aggregation pipeline over a collection."),
    ("key", "flush_cache", "Delete every key in the cache database."),
    ("query", "cancel_query", "Cancel a running warehouse query."),
    ("monitor", "mute_monitor", "Silence a monitor's alerts for a while."),
    ("metric", "query_timeseries", "Query metric time series points over a time range."),
    ("incident", "acknowledge_incident", "Acknowledge an incident so escalation stops."),
    ("incident", "resolve_incident", "Mark an incident resolved."),
    ("on_call_schedule", "who_is_on_call", "Find out who is on call right now for a schedule."),
    ("issue_event", "resolve_error_issue", "Mark an error issue resolved in the next release."),
    ("dns_record", "purge_cache", "Purge cached files from the CDN edge."),
    ("sms", "send_sms", "Send a text message to a phone number."),
    ("call_log", "make_phone_call", "Place an outbound phone call that plays a message."),
    ("order", "fulfill_order", "Mark an order's items as shipped with a tracking number."),
    ("order", "refund_order", "Refund an order, restocking its items."),
    ("inventory_level", "adjust_inventory", "Increase or decrease the stock of an item at a location."),
    ("shipment", "get_shipping_rates", "Compare carrier rates for a parcel."),
    ("shipment", "track_shipment", "Track a parcel's delivery status by tracking number."),
    ("employee", "terminate_employee", "Start the offboarding of an employee."),
    ("time_off_request", "approve_time_off", "Approve an employee's vacation request."),
    ("candidate", "schedule_interview", "Schedule an interview with a candidate."),
    ("candidate", "advance_candidate", "Move a candidate to the next hiring stage."),
    ("report", "run_report", "Run an analytics report of sessions, users and conversions."),
    ("design_file", "export_frame_png", "Export a design frame as a PNG image."),
    ("forecast", "get_current_weather", "Current temperature, wind and conditions for a city."),
    ("glossary", "translate_text", "Translate text into another language."),
    ("user_account", "reset_password", "Send a user a password reset link."),
    ("user_account", "suspend_user", "Suspend a user's account so they cannot sign in."),
    ("group", "add_user_to_group", "Add a user to a group, granting its app assignments."),
]
_REGIONS = ("eu", "apac", "us_west", "latam", "africa", "mena")


def _pool() -> list[dict[str, Any]]:
    rng = random.Random(14)
    special: dict[str, list[tuple[str, str]]] = {}
    for entity_id, name, description in _SPECIAL:
        special.setdefault(entity_id, []).append((name, description))
    tools: list[dict[str, Any]] = []
    for product, area, entities in _PRODUCTS:
        label = product.replace("_", " ").title().replace("Aws ", "AWS ")
        for entity_id, plural, fields in entities:
            words = {
                "product": label,
                "area": area,
                "entity": entity_id.replace("_", " "),
                "plural": plural,
                "entity_id": entity_id,
                "plural_id": plural.replace(" ", "_").replace("-", "_"),
            }
            id_arg = {f"{entity_id}_id": {"type": "string", "description": f"The {words['entity']}'s id"}}
            field_args = {name: {"type": kind, "description": text} for name, kind, text in fields}
            for pattern, phrasings in _CRUD:
                verb = pattern.split("_", 1)[0]
                if verb == "archive":
                    verb = "delete"
                elif verb == "export":
                    verb = "list"
                properties: dict[str, Any]
                if verb in ("get", "delete"):
                    properties, required = id_arg, list(id_arg)
                elif verb == "update":
                    properties, required = {**id_arg, **field_args}, list(id_arg)
                elif verb == "create":
                    properties, required = field_args, list(field_args)[:1]
                elif verb == "search":
                    query = {"query": {"type": "string", "description": "Keywords to match"}}
                    properties, required = {**query, "limit": {"type": "integer"}}, ["query"]
                else:
                    properties, required = {"cursor": {"type": "string"}, "limit": {"type": "integer"}}, []
                tools.append(_tool(f"{product}_{pattern.format(**words)}",
                                   rng.choice(phrasings).format(**words), properties, required))  # fmt: skip
            for name, description in special.get(entity_id, []):
                tools.append(_tool(f"{product}_{name}", f"{label}: {description}", {**id_arg, **field_args},
                                   list(id_arg)))  # fmt: skip
    return tools


def _tool(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "name": name,
        "description": description,
        "inputSchema": {"type": "object", "properties": properties, "required": required},
    }


def generate(count: int) -> list[dict[str, Any]]:
    """`count` tools, the same on every run: the products' tools, then regional copies of them."""
    pool = _pool()
    tools = pool[:count]
    copy = 0
    while len(tools) < count:
        region = _REGIONS[copy % len(_REGIONS)] + (
            str(copy // len(_REGIONS)) if copy >= len(_REGIONS) else ""
        )
        for tool in pool[: count - len(tools)]:
            tools.append({**tool, "name": f"{tool['name']}_{region}",
                          "description": f"{tool['description']} ({region.upper()} region)"})  # fmt: skip
        copy += 1
    return tools


def reply(request_id: object, result: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": request_id, "result": result}) + "\n")
    sys.stdout.flush()


def main() -> None:
    tools = generate(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
    names = {t["name"] for t in tools}
    for line in sys.stdin:
        try:
            message = json.loads(line)
        except ValueError:
            continue
        method, request_id = message.get("method"), message.get("id")
        if request_id is None:
            continue  # a notification
        params = message.get("params") or {}
        if method == "initialize":
            info = {"name": "many_tools", "version": "1"}
            reply(
                request_id,
                {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": info},
            )
        elif method == "tools/list":
            reply(request_id, {"tools": tools})
        elif method == "tools/call" and params.get("name") in names:
            seen = {"name": params["name"], "arguments": params.get("arguments") or {}}
            reply(request_id, {"content": [{"type": "text", "text": json.dumps(seen)}]})
        elif method == "tools/call":
            error = {"code": -32602, "message": f"Unknown tool: {params.get('name')}"}
            sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": request_id, "error": error}) + "\n")
            sys.stdout.flush()
        else:
            reply(request_id, {})


if __name__ == "__main__":
    main()
